"""One fixed-budget crowdsourcing experiment (Khetan, Lipton & Anandkumar, ICLR 2018, sec. 5):
simulate workers, label ``n = B // r`` training images ``r`` times each, aggregate, train a
classifier, report its test accuracy.

Methods (all train the same classifier with the posterior-weighted loss of ``raysign.crowd.mbem``):

- ``mv``: one-hot majority-vote labels (ties at random);
- ``ds``: Dawid-Skene EM posteriors (full confusion);
- ``mbem``: Model-Bootstrapped EM with ``rounds`` rounds;
- ``oracle``: the true labels of the same ``n`` images (the upper bound).

The annotations depend on (budget, redundancy, workers, quality, seed) only, so methods run
with the same seed see the same labels. The shared ``CrowdConfig`` is built by the CLI
(``raysign crowd``) and the sweep (``tune_configs/crowd.py``) alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysign.config import check_choice, check_range
from raysign.crowd.aggregate import DawidSkene, MajorityVote
from raysign.crowd.mbem import TrainSettings, mbem, predict_proba, train_classifier
from raysign.crowd.simulate import (
    WORKER_MODELS,
    items_for_budget,
    simulate_annotations,
    worker_confusions,
)

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
        self.train_settings()  # validates model, hidden, epochs, batch_size, lr

    def train_settings(self) -> TrainSettings:
        return TrainSettings(model=self.model, hidden=self.hidden, epochs=self.epochs,
                             batch_size=self.batch_size, lr=self.lr)


def _load(config: CrowdConfig):
    from raysign.data import load_images

    return load_images(config.dataset, config.data_dir or None)


def run_crowd_trial(config: CrowdConfig, data: Any = None) -> dict[str, Any]:
    """Run one trial; returns test accuracy, label accuracy of the training targets, epochs
    and timings. ``data`` is an optional preloaded (train, test) ImageSplit pair."""
    start = time.perf_counter()
    train_split, test_split = data if data is not None else _load(config)
    rng = np.random.default_rng(config.seed)
    n = items_for_budget(config.budget, config.redundancy)
    chosen = rng.choice(len(train_split), size=n, replace=False)
    images, truth = train_split.images[chosen], train_split.labels[chosen]
    n_classes = int(train_split.labels.max()) + 1
    confusions = worker_confusions(config.worker_model, config.n_workers, n_classes,
                                   config.quality, rng)
    annotations = simulate_annotations(truth, config.redundancy, confusions, rng)
    order = rng.permutation(n)
    n_val = max(1, int(round(config.val_fraction * n)))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    test_images, test_labels = test_split.images, test_split.labels
    if config.test_size:
        test_images, test_labels = test_images[:config.test_size], test_labels[:config.test_size]

    def test_accuracy(model) -> dict[str, float]:
        return {"test_accuracy": float(np.mean(predict_proba(model, test_images).argmax(1)
                                               == test_labels))}

    settings = config.train_settings()
    extra: dict[str, Any] = {}
    if config.method == "mbem":
        result = mbem(annotations, images, train, val, settings, rounds=config.rounds,
                      seed=config.seed, truth=truth)
        trained, targets = result.model, result.probas
        extra["rounds"] = result.rounds
    else:
        if config.method == "mv":
            targets = np.eye(n_classes)[MajorityVote(seed=config.seed).fit_predict(annotations)]
        elif config.method == "ds":
            targets = DawidSkene(seed=config.seed).fit_predict_proba(annotations)
        else:
            targets = np.eye(n_classes)[truth]
        trained = train_classifier(images[train], targets[train], images[val],
                                   targets[val], settings, config.seed)
    return {
        "method": config.method,
        "budget": config.budget,
        "redundancy": config.redundancy,
        "quality": config.quality,
        "worker_model": config.worker_model,
        "seed": config.seed,
        "n_items": n,
        "test_accuracy": test_accuracy(trained.model)["test_accuracy"],
        "label_accuracy": float(np.mean(targets.argmax(1) == truth)),
        "val_agreement": trained.val_agreement,
        "best_epoch": trained.best_epoch,
        "seconds": time.perf_counter() - start,
        **extra,
    }
