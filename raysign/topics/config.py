"""The configuration of one spectral LDA run (``raysign topics``, the benchmark and Tune).

Every field is validated on construction, so a bad value fails before the corpus is read or Ray
starts, with a message naming the field and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysign.config import ConfigError, check_choice, check_path_exists, check_range
from raysign.data import default_data_dir
from raysign.storage import check_location, is_uri
from raysign.topics.corpus import (
    FORMATS,
    STOP_WORDS,
    Corpus,
    CorpusError,
    corpus_format,
    document_frequency,
    load_corpus,
)
from raysign.topics.estimator import METHODS, TensorLDA


@dataclass(frozen=True)
class TopicsConfig:
    """One spectral LDA fit (Anandkumar et al. JMLR 2014) on NYT, or on the user's corpus at
    ``input`` (``raysign.topics.corpus`` formats, tokenised by CountVectorizer with
    ``stop_words``, ``min_df``, ``max_df``, ``max_features``; ``vocab`` the vocabulary file of
    an LDA-C / .npz corpus, '' = vocab.txt beside it); ``transform`` new documents to give
    topic proportions. Every field is validated on construction."""

    k: int = 20
    alpha0: float = 1.0
    method: str = "power"
    refine_steps: int = 0
    refine_inner: int = 10
    chunks: int = 4
    heldout: float = 0.1
    seed: int = 0
    top: int = 10
    data_dir: str = ""
    results_dir: str = "runs"
    input: str = ""
    vocab: str = ""
    text_col: str = "text"
    stop_words: str = "english"
    min_df: float = 1.0
    max_df: float = 1.0
    max_features: int = 0
    transform: str = ""

    def __post_init__(self) -> None:
        check_range("k", self.k, 1, None)
        check_range("alpha0", self.alpha0, 0.0, None, low_open=True)
        check_choice("method", self.method, METHODS)
        check_range("refine_steps", self.refine_steps, 0, None)
        check_range("refine_inner", self.refine_inner, 1, None)
        check_range("chunks", self.chunks, 1, None)
        check_range("heldout", self.heldout, 0.0, 1.0, low_open=True, high_open=True)
        # numpy's default_rng takes non-negative seeds only.
        check_range("seed", self.seed, 0, None)
        check_range("top", self.top, 1, None)
        for name in ("input", "transform"):
            path = getattr(self, name)
            if path:
                check_path_exists(name, path, FORMATS)
                try:
                    corpus_format(path)
                except CorpusError:
                    raise ConfigError(f"{name}={path!r} has an unknown corpus format "
                                      f"{Path(path).suffix!r}; valid: {FORMATS}") from None
        if self.vocab:
            check_path_exists("vocab", self.vocab, "a text file with one word per line")
        if not self.text_col:
            raise ConfigError("text_col='' must name the text column of a CSV/TSV corpus")
        check_choice("stop_words", self.stop_words, STOP_WORDS)
        for name in ("min_df", "max_df"):
            check_range(name, getattr(self, name), 0.0, None, low_open=True)
            try:
                document_frequency(name, getattr(self, name))
            except CorpusError as err:
                raise ConfigError(str(err)) from None
        check_range("max_features", self.max_features, 0, None)
        if not self.data_dir:
            object.__setattr__(self, "data_dir", str(default_data_dir()))
        check_location("data_dir", self.data_dir, "s3://bucket/data or file:///shared/data")
        if not self.input and not is_uri(self.data_dir):  # a URI is checked where it is read
            check_path_exists("data_dir", self.data_dir,
                              "the folder holding topics/nyt.ldac and topics/nyt.tokens, "
                              "see shared/data/README.md")
        check_location("results_dir", self.results_dir)

    def estimator(self) -> TensorLDA:
        """The unfitted ``TensorLDA`` of this run."""
        return TensorLDA(self.k, self.alpha0, method=self.method, seed=self.seed,
                         refine_steps=self.refine_steps, refine_inner=self.refine_inner)

    def read_corpus(self, path: str = "", vocabulary: list[str] | None = None) -> Corpus:
        """The corpus at ``path`` (default ``input``) tokenised with this run's options; with
        ``vocabulary`` (the fitted words), counted on those columns (``transform``'s new
        documents; an LDA-C / .npz file there takes vocab.txt beside it, else ``vocab``)."""
        path = path or self.input
        vocab_file = self.vocab or None
        if vocabulary is not None and (Path(path).parent / "vocab.txt").is_file():
            vocab_file = None
        return load_corpus(path, vocab_file=vocab_file, text_col=self.text_col,
                           stop_words=self.stop_words, min_df=self.min_df, max_df=self.max_df,
                           max_features=self.max_features or None, vocabulary=vocabulary)
