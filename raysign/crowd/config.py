"""``CrowdConfig``: the one configuration type of the crowd capability (Khetan, Lipton &
Anandkumar, ICLR 2018, sec. 5). The CLI (``raysign crowd train``), the crowd sweep
(``tune_configs/crowd.py``) and the tests all build it; a bad value fails on construction,
before Ray starts, with a message naming the field and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysign.config import check_choice, check_range
from raysign.crowd.mbem import ClassifierTraining
from raysign.crowd.simulate import WORKER_MODELS
from raysign.storage import check_location

METHODS = ("mv", "ds", "mbem", "oracle")
DATASETS = ("fashion-mnist", "mnist")


@dataclass(frozen=True)
class CrowdConfig:
    """One trial: budget, redundancy, simulated workers, method and classifier training."""

    dataset: str = "fashion-mnist"
    budget: int = 12000
    redundancy: int = 1
    n_workers: int = 100
    worker_model: str = "hammer_spammer"
    quality: float = 0.2
    method: str = "mbem"
    rounds: int = 2
    model: str = "mlp"
    hidden: int = 256
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    val_fraction: float = 0.1
    test_size: int = 0
    seed: int = 0
    data_dir: str = ""

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("budget", self.budget, 20, 60000)
        check_range("redundancy", self.redundancy, 1, self.n_workers)
        check_range("n_workers", self.n_workers, 1)
        check_choice("worker_model", self.worker_model, WORKER_MODELS)
        check_range("quality", self.quality, 0.0, 1.0)
        check_choice("method", self.method, METHODS)
        check_range("rounds", self.rounds, 0, 20)
        check_range("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_size", self.test_size, 0)
        check_range("seed", self.seed, 0)
        check_range("n_items", self.budget // self.redundancy, 10)
        if self.data_dir:  # "" is the default folder, resolved where the images are read
            check_location("data_dir", self.data_dir, "s3://bucket/data or file:///shared/data")
        self.classifier_training()  # validates model, hidden, epochs, batch_size, lr

    def classifier_training(self) -> ClassifierTraining:
        """How every method of this trial trains its classifier."""
        return ClassifierTraining(model=self.model, hidden=self.hidden, epochs=self.epochs,
                                  batch_size=self.batch_size, lr=self.lr)
