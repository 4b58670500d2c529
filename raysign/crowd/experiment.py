"""One fixed-budget crowdsourcing experiment (Khetan, Lipton & Anandkumar, ICLR 2018, sec. 5):
simulate workers, label ``n = B // r`` training images ``r`` times each, aggregate, train a
classifier, report its test accuracy.

Methods (all train the same classifier with the posterior-weighted loss of ``raysign.crowd.mbem``):

- ``mv``: one-hot majority-vote labels (ties at random);
- ``ds``: Dawid-Skene EM posteriors (full confusion);
- ``mbem``: Model-Bootstrapped EM with ``rounds`` rounds;
- ``oracle``: the true labels of the same ``n`` images (the upper bound).

The annotations depend on (budget, redundancy, workers, quality, seed) only, so methods run
with the same seed see the same labels. The trial is described by ``CrowdConfig``
(``raysign.crowd.config``), which the CLI (``raysign crowd``) and the sweep
(``tune_configs/crowd.py``) build alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from raysign.crowd.aggregate import DawidSkene, MajorityVote
from raysign.crowd.config import CrowdConfig
from raysign.crowd.mbem import mbem, predict_proba, train_classifier
from raysign.crowd.simulate import items_for_budget, simulate_annotations, worker_confusions


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

    settings = config.classifier_training()
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
