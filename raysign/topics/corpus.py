"""Corpora as scipy CSR document-term count matrices: the NYT corpus (LDA-C) and a user's own
documents in the formats people already have.

A user's corpus (``read_corpus`` / ``load_corpus``) is one of:

- a folder of text files (UTF-8; every file not starting with ``.``, in sorted path order, one
  document each),
- a ``.csv`` / ``.tsv`` table with one document per row in a text column (``text_col``),
- an LDA-C file (``.ldac`` / ``.dat``; lines ``n w:c w:c ...``, word ids from 0) with a
  vocabulary file,
- a ``.npz`` sparse document-term matrix (``scipy.sparse.save_npz``) with a vocabulary file.

Text is tokenised by scikit-learn's ``CountVectorizer`` (lower case, tokens of 2+ letters or
digits), with its stop-word list and document-frequency limits. A vocabulary file holds one word
per line, the word of column (word id) ``i`` on line ``i``; it is ``vocab_file`` when given,
else ``vocab.txt`` beside the corpus. Every problem with the data raises ``CorpusError`` with one
line naming the file, column or value and what would be valid, before any fitting.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from raysign.data import require_file

TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t"}
COUNT_SUFFIXES = (".ldac", ".dat", ".npz")
STOP_WORDS = ("english", "none")
FORMATS = ("a folder of text files, a .csv/.tsv file with a text column, an LDA-C file "
           "(.ldac/.dat) or a scipy sparse matrix (.npz) with a vocabulary file")
MIN_WORDS = 3  # the third moment needs documents of 3 or more words


class CorpusError(ValueError):
    """The user's corpus cannot be read or leaves nothing to fit."""


@dataclass(frozen=True)
class Corpus:
    """``counts`` [D, V] CSR int64 word counts, ``vocab`` [V] the word of every column,
    ``names`` [D] a name per document (file path in the folder, else the row number)."""

    counts: sp.csr_matrix
    vocab: list[str]
    names: list[str]


def corpus_format(path: str | Path) -> str:
    """``"folder"``, ``"table"``, ``"ldac"`` or ``"npz"`` from the path (nothing is read)."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "table"
    if suffix in (".ldac", ".dat"):
        return "ldac"
    if suffix == ".npz":
        return "npz"
    raise CorpusError(f"{path}: unknown corpus format {suffix or '(no suffix)'!r}; "
                      f"valid: {FORMATS}")


def document_frequency(name: str, value: float) -> int | float:
    """A ``min_df`` / ``max_df`` value as CountVectorizer takes it: a fraction of documents
    below 1 (and ``max_df`` = 1.0: all of them), else a whole number of documents."""
    if name == "max_df" and value == 1.0:
        return 1.0
    if 0 < value < 1:
        return float(value)
    if value >= 1 and float(value).is_integer():
        return int(value)
    raise CorpusError(f"{name}={value!r} must be a fraction of documents in (0, 1) or a whole "
                      "number of documents >= 1")


def vocabulary_path(path: str | Path, vocab_file: str | Path | None) -> Path:
    """The vocabulary file of a count corpus: ``vocab_file``, else ``vocab.txt`` beside it."""
    if vocab_file:
        candidate = Path(vocab_file)
    else:
        candidate = Path(path).parent / "vocab.txt"
    if not candidate.is_file():
        raise CorpusError(f"{path}: vocabulary file {str(candidate)!r} not found; give --vocab "
                          "PATH (one word per line, word id i on line i) or put vocab.txt "
                          "beside the corpus")
    return candidate


def load_corpus(path: str | Path, *, vocab_file: str | Path | None = None,
                text_col: str = "text", stop_words: str = "english", min_df: float = 1,
                max_df: float = 1.0, max_features: int | None = None,
                vocabulary: list[str] | None = None) -> Corpus:
    """A user's corpus (module docstring for the formats). Text is tokenised with
    CountVectorizer(stop_words, min_df, max_df, max_features); given ``vocabulary`` (a fitted
    model's words), the documents are counted on exactly those columns instead (new documents
    to ``transform``), words outside it ignored."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: does not exist; expected {FORMATS}")
    kind = corpus_format(path)
    if stop_words not in STOP_WORDS:
        raise CorpusError(f"stop_words={stop_words!r} is not one of {list(STOP_WORDS)}")
    if kind in ("folder", "table"):
        names, texts = (read_folder(path) if kind == "folder" else read_table(path, text_col))
        counts, vocab = count_words(texts, path, stop_words, min_df, max_df, max_features,
                                    vocabulary)
        return Corpus(counts, vocab, names)
    words = read_vocabulary(vocabulary_path(path, vocab_file))
    counts = (read_ldac(path, len(words)) if kind == "ldac"
              else read_npz(path, len(words), vocabulary_path(path, vocab_file)))
    if vocabulary is not None:
        counts, words = align_columns(counts, words, vocabulary), list(vocabulary)
    return Corpus(counts, words, [str(i) for i in range(counts.shape[0])])


def read_corpus(path: str | Path, **options) -> tuple[sp.csr_matrix, list[str]]:
    """(counts [D, V] CSR int64, vocabulary [V]) of a user's corpus; options as
    ``load_corpus``."""
    corpus = load_corpus(path, **options)
    return corpus.counts, corpus.vocab


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{file}: not UTF-8 text (byte {err.start}); text files must be "
                          "UTF-8") from None
    except OSError as err:
        raise CorpusError(f"{file}: cannot be read ({err.strerror})") from None


def read_folder(folder: Path) -> tuple[list[str], list[str]]:
    """(names, texts) of every file under ``folder`` whose name does not start with ``.``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise CorpusError(f"{folder}: the folder holds no files; expected one text file per "
                          "document")
    return [f.relative_to(folder).as_posix() for f in files], [_read_text(f) for f in files]


def read_table(file: Path, text_col: str) -> tuple[list[str], list[str]]:
    """(row numbers, texts) of the ``text_col`` column of a CSV (``.csv``) or TSV (``.tsv``);
    an empty cell is an empty document."""
    import pandas as pd

    sep = TEXT_SUFFIXES[file.suffix.lower()]
    try:
        columns = list(pd.read_csv(file, sep=sep, nrows=0).columns)
        if text_col not in columns:
            close = difflib.get_close_matches(text_col, [str(c) for c in columns], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CorpusError(f"{file}: no column {text_col!r} (--text-col); columns are "
                              f"{columns}{hint}")
        table = pd.read_csv(file, sep=sep, usecols=[text_col], dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CorpusError(f"{file}: not a readable {sep!r}-separated table with a header "
                          f"({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise CorpusError(f"{file}: cannot be read ({err.strerror})") from None
    if len(table) == 0:
        raise CorpusError(f"{file}: the table has a header but no rows; expected one document "
                          "per row")
    return [str(i) for i in range(len(table))], table[text_col].tolist()


def count_words(texts: list[str], source: Path, stop_words: str, min_df: float, max_df: float,
                max_features: int | None, vocabulary: list[str] | None = None
                ) -> tuple[sp.csr_matrix, list[str]]:
    """CountVectorizer's (counts, vocabulary) of ``texts``; on an empty result, the
    CorpusError says which option removed every word."""
    from sklearn.feature_extraction.text import CountVectorizer

    if vocabulary is not None:
        vectorizer = CountVectorizer(vocabulary=list(vocabulary))
        return sp.csr_matrix(vectorizer.transform(texts), dtype=np.int64), list(vocabulary)
    low, high = document_frequency("min_df", min_df), document_frequency("max_df", max_df)
    vectorizer = CountVectorizer(stop_words=None if stop_words == "none" else stop_words,
                                 min_df=low, max_df=high, max_features=max_features or None)
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:
        raise CorpusError(_why_empty(texts, source, stop_words, min_df, max_df)) from None
    return sp.csr_matrix(counts, dtype=np.int64), list(vectorizer.get_feature_names_out())


def _why_empty(texts: list[str], source: Path, stop_words: str, min_df: float,
               max_df: float) -> str:
    from sklearn.feature_extraction.text import CountVectorizer

    D = len(texts)
    try:
        everything = CountVectorizer().fit_transform(texts)
    except ValueError:
        return (f"{source}: no words in its {D} documents (CountVectorizer keeps tokens of 2 or "
                "more letters or digits); check the files or --text-col")
    if stop_words != "none":
        try:
            everything = CountVectorizer(stop_words=stop_words).fit_transform(texts)
        except ValueError:
            return (f"{source}: --stop-words {stop_words} removed every word of its {D} "
                    "documents; use --stop-words none")
    df = np.asarray((everything > 0).sum(0)).ravel()
    return (f"{source}: --min-df {min_df:g} and --max-df {max_df:g} removed every word of its "
            f"{D} documents (the {len(df)} words left after stop words are each in {df.min()} "
            f"to {df.max()} documents); lower --min-df or raise --max-df")


def read_vocabulary(path: str | Path) -> list[str]:
    """One word per line; no word may be empty or repeated."""
    words = load_vocab(path)
    while words and not words[-1]:
        words.pop()
    if not words:
        raise CorpusError(f"{path}: the vocabulary file is empty; expected one word per line")
    seen: dict[str, int] = {}
    for i, word in enumerate(words):
        if not word:
            raise CorpusError(f"{path}: line {i + 1} is empty; expected one word per line")
        if word in seen:
            raise CorpusError(f"{path}: word {word!r} on lines {seen[word] + 1} and {i + 1}; "
                              "every word must appear once")
        seen[word] = i
    return words


def read_ldac(path: Path, n_words: int) -> sp.csr_matrix:
    """An LDA-C file with every document kept (also the empty ones) and every line checked:
    counts [D, n_words]."""
    rows, cols, vals = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as err:
        raise CorpusError(f"{path}: cannot be read as LDA-C text ({err})") from None
    d = 0
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            pairs = [tuple(int(x) for x in p.split(":")) for p in parts[1:]]
            if any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in pairs):
                raise ValueError
        except ValueError:
            raise CorpusError(f"{path}: line {number} is not LDA-C 'n id:count id:count ...' "
                              f"with non-negative integers: {line[:60]!r}") from None
        for w, c in pairs:
            if w >= n_words:
                raise CorpusError(f"{path}: line {number} has word id {w}, beyond the "
                                  f"vocabulary's {n_words} words (ids 0 to {n_words - 1})")
            rows.append(d)
            cols.append(w)
            vals.append(c)
        d += 1
    if d == 0:
        raise CorpusError(f"{path}: no documents (no non-empty lines)")
    return sp.csr_matrix((np.array(vals, dtype=np.int64), (rows, cols)), shape=(d, n_words))


def read_npz(path: Path, n_words: int, vocab_path: Path) -> sp.csr_matrix:
    """A ``scipy.sparse.save_npz`` matrix [D, n_words] of non-negative whole counts."""
    try:
        counts = sp.load_npz(path)
    except (OSError, ValueError, KeyError) as err:
        raise CorpusError(f"{path}: not a scipy sparse matrix file (scipy.sparse.save_npz; "
                          f"{type(err).__name__} on loading)") from None
    if counts.shape[1] != n_words:
        raise CorpusError(f"{path}: {counts.shape[1]} columns but the vocabulary {vocab_path} "
                          f"has {n_words} words; column i must be the word on line i")
    counts = sp.csr_matrix(counts)
    data = counts.data
    if data.size and (data.min() < 0 or not np.all(np.mod(data, 1) == 0)):
        raise CorpusError(f"{path}: holds values that are not non-negative whole word counts "
                          f"(e.g. {data[(data < 0) | (np.mod(data, 1) != 0)][0]!r})")
    if counts.shape[0] == 0:
        raise CorpusError(f"{path}: the matrix has no rows (documents)")
    return sp.csr_matrix(counts, dtype=np.int64)


def align_columns(counts: sp.csr_matrix, words: list[str], vocabulary: list[str]
                  ) -> sp.csr_matrix:
    """``counts`` over ``words`` re-indexed onto ``vocabulary``'s columns (words outside it
    dropped)."""
    index = {w: i for i, w in enumerate(vocabulary)}
    keep = np.array([w in index for w in words])
    target = np.array([index.get(w, -1) for w in words])
    coo = sp.coo_matrix(counts)
    mask = keep[coo.col]
    return sp.csr_matrix((coo.data[mask], (coo.row[mask], target[coo.col[mask]])),
                         shape=(counts.shape[0], len(vocabulary)), dtype=np.int64)


def fit_documents(counts: sp.csr_matrix) -> np.ndarray:
    """Indices of the documents a spectral fit uses: those of ``MIN_WORDS`` or more words."""
    return np.flatnonzero(np.asarray(counts.sum(1)).ravel() >= MIN_WORDS)


def check_fit_size(n_docs: int, n_words: int, k: int, source: str) -> None:
    """Fail unless ``n_docs`` training documents and ``n_words`` words can give ``k``
    topics (k documents, more than k words)."""
    if n_docs < k:
        raise CorpusError(f"{source}: {n_docs} training documents of {MIN_WORDS} or more words,"
                          f" fewer than k={k} topics; lower --k or add documents")
    if n_words <= k:
        raise CorpusError(f"{source}: a vocabulary of {n_words} words, k={k} topics need more "
                          "than k words; lower --k or relax --min-df/--max-df/--max-features")


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
