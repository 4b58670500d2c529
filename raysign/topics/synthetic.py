"""Synthetic LDA corpora with known topics (Blei, Ng, Jordan 2003 generative model)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def make_lda_corpus(n_docs: int, n_words: int, n_topics: int, alpha: np.ndarray | float,
                    doc_len: int = 50, beta: float = 0.1, seed: int = 0, chunk: int = 2048
                    ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Returns X [D, V] counts, topics [k, V] (rows on simplex), alpha [k].

    Word distributions are formed `chunk` documents at a time, so memory is O(chunk V + nnz).
    """
    rng = np.random.default_rng(seed)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), (n_topics,)).copy()
    topics = rng.dirichlet(np.full(n_words, beta), size=n_topics)
    theta = rng.dirichlet(alpha, size=n_docs)
    blocks = []
    for lo in range(0, n_docs, chunk):
        p = theta[lo:lo + chunk] @ topics
        p /= p.sum(1, keepdims=True)
        blocks.append(sp.csr_matrix(np.stack([rng.multinomial(doc_len, pi) for pi in p])))
    return sp.vstack(blocks, format="csr"), topics, alpha
