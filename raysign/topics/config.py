"""The configuration of one spectral LDA run (``raysign topics``, the benchmark and Tune).

Every field is validated on construction, so a bad value fails before the corpus is read or Ray
starts, with a message naming the field and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysign.config import check_choice, check_path_exists, check_range
from raysign.data import default_data_dir
from raysign.storage import check_location, is_uri
from raysign.topics.estimator import METHODS, TensorLDA


@dataclass(frozen=True)
class TopicsConfig:
    """One spectral LDA fit on NYT (Anandkumar et al. JMLR 2014). Every field is validated on
    construction."""

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
        if not self.data_dir:
            object.__setattr__(self, "data_dir", str(default_data_dir()))
        check_location("data_dir", self.data_dir, "s3://bucket/data or file:///shared/data")
        if not is_uri(self.data_dir):  # a URI is checked where it is read (the driver)
            check_path_exists("data_dir", self.data_dir,
                              "the folder holding topics/nyt.ldac and topics/nyt.tokens, "
                              "see shared/data/README.md")
        check_location("results_dir", self.results_dir)

    def estimator(self) -> TensorLDA:
        """The unfitted ``TensorLDA`` of this run."""
        return TensorLDA(self.k, self.alpha0, method=self.method, seed=self.seed,
                         refine_steps=self.refine_steps, refine_inner=self.refine_inner)
