"""LDA-C corpus loader (lines ``n w:c w:c ...``) into a scipy CSR document-term matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from raysign.data import require_file


def load_ldac(path: str | Path, n_words: int | None = None, min_len: int = 3,
              max_docs: int | None = None) -> tuple[sp.csr_matrix, int]:
    """Read an LDA-C file. Returns (X [D, V] CSR int counts, n_dropped short docs)."""
    rows, cols, vals, dropped, d = [], [], [], 0, 0
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            pairs = [p.split(":") for p in parts[1:]]
            w = np.array([int(a) for a, _ in pairs], dtype=np.int64)
            c = np.array([int(b) for _, b in pairs], dtype=np.int64)
            if c.sum() < min_len:
                dropped += 1
                continue
            rows.append(np.full(len(w), d))
            cols.append(w)
            vals.append(c)
            d += 1
            if max_docs is not None and d >= max_docs:
                break
    cols_a = np.concatenate(cols)
    V = n_words if n_words is not None else int(cols_a.max()) + 1
    X = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), cols_a)), shape=(d, V))
    return X, dropped


def load_vocab(path: str | Path) -> list[str]:
    """One word per line."""
    return [w.strip() for w in Path(path).read_text().splitlines()]


def load_nyt(data_dir: str | Path) -> tuple[sp.csr_matrix, list[str], int]:
    """The NYT corpus under ``data_dir/topics``: (X [D, V] CSR counts, vocabulary [V],
    number of documents of fewer than 3 words dropped)."""
    folder = Path(data_dir) / "topics"
    vocab = load_vocab(require_file(folder / "nyt.tokens", "NYT vocabulary"))
    X, dropped = load_ldac(require_file(folder / "nyt.ldac", "NYT corpus"), n_words=len(vocab))
    return X, vocab, dropped


def split_heldout(X: sp.csr_matrix, frac: float = 0.1, seed: int = 0
                  ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Deterministic document split into (train, heldout)."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac={frac} must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    n_h = max(1, int(round(frac * X.shape[0])))
    return X[np.sort(perm[n_h:])], X[np.sort(perm[:n_h])]
