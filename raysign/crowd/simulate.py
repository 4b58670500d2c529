"""Simulated annotators and the fixed-budget allocation of Khetan, Lipton & Anandkumar,
"Learning from noisy singly-labeled data", ICLR 2018 (sec. 5, "simulated workers").

- Hammer-spammer: each of ``m`` workers is a *hammer* (always right, confusion = identity) with
  probability ``quality`` and a *spammer* (uniformly random label, every column = 1/K) otherwise.
- Class-wise hammer-spammer: every worker is a hammer on each true class independently with
  probability ``quality`` and a spammer on the other classes (column ``c`` of the confusion is
  ``e_c`` or uniform).

Budget: ``B = n r`` labels buy ``n = B // r`` items labelled by ``r`` distinct workers each,
drawn uniformly at random from the ``m`` workers (the paper's assignment). Confusion matrices
are indexed ``[worker, observed label, true label]`` (columns sum to one), as in
``raysign.crowd.aggregate``.
"""

from __future__ import annotations

import numpy as np

from raysign.config import check_choice, check_range
from raysign.crowd.annotations import Annotations

WORKER_MODELS = ("hammer_spammer", "classwise_hammer_spammer")


def hammer_spammer_confusions(n_workers: int, n_classes: int, quality: float,
                              rng: np.random.Generator) -> np.ndarray:
    """Confusions [m, K, K]: identity for hammers (probability ``quality``), uniform else."""
    check_range("quality", quality, 0.0, 1.0)
    hammer = rng.random(n_workers) < quality
    eye, uniform = np.eye(n_classes), np.full((n_classes, n_classes), 1.0 / n_classes)
    return np.where(hammer[:, None, None], eye[None], uniform[None])


def classwise_hammer_spammer_confusions(n_workers: int, n_classes: int, quality: float,
                                        rng: np.random.Generator) -> np.ndarray:
    """Confusions [m, K, K]: column c of worker w is e_c with probability ``quality``, else
    uniform, independently per (worker, class)."""
    check_range("quality", quality, 0.0, 1.0)
    hammer = rng.random((n_workers, n_classes)) < quality  # [w, true class]
    eye, uniform = np.eye(n_classes), np.full((n_classes, n_classes), 1.0 / n_classes)
    return np.where(hammer[:, None, :], eye[None], uniform[None])


def worker_confusions(model: str, n_workers: int, n_classes: int, quality: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Confusions [m, K, K] of ``model`` (one of ``WORKER_MODELS``)."""
    check_choice("worker_model", model, WORKER_MODELS)
    make = (hammer_spammer_confusions if model == "hammer_spammer"
            else classwise_hammer_spammer_confusions)
    return make(n_workers, n_classes, quality, rng)


def items_for_budget(budget: int, redundancy: int) -> int:
    """Items ``n = B // r`` that a budget of ``B`` labels buys at ``r`` labels per item."""
    check_range("budget", budget, 1)
    check_range("redundancy", redundancy, 1, budget)
    return budget // redundancy


def assign_workers(n_items: int, redundancy: int, n_workers: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``r`` distinct workers per item, uniformly at random: (items, workers) int64 [n r].

    Vectorised in blocks: the ``r`` smallest of ``m`` uniform keys per item are a uniform
    r-subset; blocks keep the [block, m] key matrix near 4M entries.
    """
    check_range("redundancy", redundancy, 1, n_workers)
    block = max(1, 4_000_000 // n_workers)
    chosen = []
    for start in range(0, n_items, block):
        size = min(block, n_items - start)
        keys = rng.random((size, n_workers), dtype=np.float32)
        if redundancy < n_workers:
            keys = np.argpartition(keys, redundancy - 1, axis=1)[:, :redundancy]
        else:
            keys = np.argsort(keys, axis=1)
        chosen.append(keys)
    workers = np.concatenate(chosen).reshape(-1).astype(np.int64) if chosen else \
        np.zeros(0, np.int64)
    items = np.repeat(np.arange(n_items, dtype=np.int64), redundancy)
    return items, workers


def draw_labels(true_labels: np.ndarray, items: np.ndarray, workers: np.ndarray,
                confusions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label of each annotation drawn from ``confusions[w, :, y_i]`` (inverse CDF), int64 [A]."""
    columns = confusions[workers, :, true_labels[items]]  # [A, K]
    cdf = np.cumsum(columns, axis=1)
    u = rng.random(len(items))[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), confusions.shape[1] - 1).astype(np.int64)


def simulate_annotations(true_labels: np.ndarray, redundancy: int, confusions: np.ndarray,
                         rng: np.random.Generator) -> Annotations:
    """Annotations of every item of ``true_labels`` [n] by ``r`` random workers whose
    behaviour is ``confusions`` [m, K, K]."""
    n_workers, n_classes, _ = confusions.shape
    items, workers = assign_workers(len(true_labels), redundancy, n_workers, rng)
    labels = draw_labels(np.asarray(true_labels), items, workers, confusions, rng)
    return Annotations(items, workers, labels, len(true_labels), n_workers, n_classes)
