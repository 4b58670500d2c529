"""Crowdsourced annotations as sparse (item, worker, label) arrays, and loaders of the real sets.

A crowd data set is a list of A annotations; annotation ``a`` says that worker ``workers[a]``
gave label ``labels[a]`` to item ``items[a]``. Items, workers and labels are dense integer codes
(``0 .. n-1``), so that every aggregator works with ``np.bincount`` / sparse products instead of
per-row Python or pandas work (crowd-kit's tables of (task, worker, label) are the same data).

Real sets (``shared/data/crowd``, see its README), with their ground truth:

- bluebirds (Welinder et al., NIPS 2010): 108 images, 39 workers, 4,212 binary labels;
- RTE (recognising textual entailment, Snow et al., EMNLP 2008): 800 items, 164 workers, 8,000;
- TEMP (temporal ordering, Snow et al. 2008): 462 items, 76 workers, 4,620.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raysign.data import default_data_dir, require_file


@dataclass(frozen=True)
class Annotations:
    """A sparse set of labels: ``items``, ``workers``, ``labels`` are int64 [A].

    ``n_items``, ``n_workers`` and ``n_classes`` bound the codes (items or workers without any
    annotation are allowed). ``item_ids`` / ``worker_ids`` / ``classes`` optionally keep the
    original names of the codes.
    """

    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    n_items: int
    n_workers: int
    n_classes: int
    item_ids: np.ndarray | None = field(default=None, repr=False)
    worker_ids: np.ndarray | None = field(default=None, repr=False)
    classes: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        arrays = {"items": self.items, "workers": self.workers, "labels": self.labels}
        for name, values in arrays.items():
            object.__setattr__(self, name, np.ascontiguousarray(values, dtype=np.int64))
        sizes = {len(v) for v in (self.items, self.workers, self.labels)}
        if len(sizes) != 1:
            raise ValueError(f"items/workers/labels lengths differ: "
                             f"{[len(v) for v in (self.items, self.workers, self.labels)]}")
        bounds = {"items": self.n_items, "workers": self.n_workers, "labels": self.n_classes}
        for name, bound in bounds.items():
            values = getattr(self, name)
            if len(values) and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"{name} codes span [{values.min()}, {values.max()}], "
                                 f"outside [0, {bound - 1}]")
        if self.n_classes < 2:
            raise ValueError(f"n_classes={self.n_classes} must be at least 2")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_arrays(cls, items: np.ndarray, workers: np.ndarray, labels: np.ndarray,
                    n_classes: int | None = None) -> Annotations:
        """Annotations from raw ids of any hashable kind (re-coded to 0..n-1, sorted)."""
        item_ids, item_codes = np.unique(np.asarray(items), return_inverse=True)
        worker_ids, worker_codes = np.unique(np.asarray(workers), return_inverse=True)
        classes, label_codes = np.unique(np.asarray(labels), return_inverse=True)
        if n_classes is not None:  # labels already are codes 0..n_classes-1
            classes, label_codes = np.arange(n_classes), np.asarray(labels)
        return cls(item_codes, worker_codes, label_codes, len(item_ids), len(worker_ids),
                   max(len(classes), 2), item_ids, worker_ids, classes)

    @classmethod
    def from_dataframe(cls, frame: pd.DataFrame) -> Annotations:
        """Annotations from a crowd-kit table with columns ``task``, ``worker``, ``label``."""
        return cls.from_arrays(frame["task"].to_numpy(), frame["worker"].to_numpy(),
                               frame["label"].to_numpy())

    def to_dataframe(self) -> pd.DataFrame:
        """The crowd-kit table (``task``, ``worker``, ``label`` as integer codes)."""
        return pd.DataFrame({"task": self.items, "worker": self.workers, "label": self.labels})

    def vote_counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Votes per item and class, float64 [n_items, n_classes]; ``weights`` [n_workers]
        weighs each worker's votes."""
        w = None if weights is None else np.asarray(weights, dtype=np.float64)[self.workers]
        flat = np.bincount(self.items * self.n_classes + self.labels, weights=w,
                           minlength=self.n_items * self.n_classes)
        return flat.reshape(self.n_items, self.n_classes).astype(np.float64)

    def labels_per_item(self) -> np.ndarray:
        """Number of annotations of each item, int64 [n_items]."""
        return np.bincount(self.items, minlength=self.n_items)

    def labels_per_worker(self) -> np.ndarray:
        """Number of annotations of each worker, int64 [n_workers]."""
        return np.bincount(self.workers, minlength=self.n_workers)

    def select_items(self, keep: np.ndarray) -> Annotations:
        """The annotations of the items where the boolean mask ``keep`` [n_items] is true,
        with items re-coded to 0..keep.sum()-1 (workers and classes keep their codes)."""
        keep = np.asarray(keep, dtype=bool)
        new_code = np.cumsum(keep) - 1
        rows = keep[self.items]
        ids = None if self.item_ids is None else self.item_ids[keep]
        return Annotations(new_code[self.items[rows]], self.workers[rows], self.labels[rows],
                           int(keep.sum()), self.n_workers, self.n_classes, ids,
                           self.worker_ids, self.classes)


@dataclass(frozen=True)
class CrowdDataset:
    """Annotations with the true label of every item (int64 [n_items], -1 where unknown)."""

    name: str
    annotations: Annotations
    truth: np.ndarray

    def accuracy(self, predicted: np.ndarray) -> float:
        """Fraction of items with known truth whose predicted label (codes) is right."""
        known = self.truth >= 0
        return float(np.mean(np.asarray(predicted)[known] == self.truth[known]))


def _with_truth(name: str, items: np.ndarray, workers: np.ndarray, labels: np.ndarray,
                truth_items: np.ndarray, truth_labels: np.ndarray) -> CrowdDataset:
    """Code items/workers/labels and align the ground truth with the item codes."""
    classes = np.unique(np.concatenate([np.asarray(labels), np.asarray(truth_labels)]))
    annotations = Annotations.from_arrays(items, workers, np.searchsorted(classes, labels),
                                          n_classes=max(len(classes), 2))
    annotations = Annotations(annotations.items, annotations.workers, annotations.labels,
                              annotations.n_items, annotations.n_workers, annotations.n_classes,
                              annotations.item_ids, annotations.worker_ids, classes)
    truth = np.full(annotations.n_items, -1, dtype=np.int64)
    pos = np.searchsorted(annotations.item_ids, truth_items)
    found = (pos < annotations.n_items) & (
        annotations.item_ids[np.minimum(pos, annotations.n_items - 1)] == truth_items)
    truth[pos[found]] = np.searchsorted(classes, np.asarray(truth_labels)[found])
    return CrowdDataset(name, annotations, truth)


def load_bluebirds(data_dir: str | Path | None = None) -> CrowdDataset:
    """Bluebirds (CUBAM demo files ``bluebirds_labels.yaml`` {worker: {image: bool}} and
    ``bluebirds_gt.yaml`` {image: bool})."""
    import yaml  # PyYAML ships with ray[tune], a core dependency

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    labels_path = require_file(root / "crowd" / "bluebirds_labels.yaml", "bluebirds labels")
    truth_path = require_file(root / "crowd" / "bluebirds_gt.yaml", "bluebirds ground truth")
    raw = yaml.safe_load(labels_path.read_text())
    gt = yaml.safe_load(truth_path.read_text())
    rows = [(item, worker, int(value)) for worker, answers in raw.items()
            for item, value in answers.items()]
    items, workers, labels = (np.array(col) for col in zip(*rows, strict=True))
    truth_items = np.array(list(gt.keys()))
    truth_labels = np.array([int(v) for v in gt.values()])
    return _with_truth("bluebirds", items, workers, labels, truth_items, truth_labels)


def _load_snow_tsv(name: str, filename: str, data_dir: str | Path | None) -> CrowdDataset:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = require_file(root / "crowd" / filename, name)
    frame = pd.read_csv(path, sep="\t", dtype={"orig_id": str, "!amt_worker_ids": str})
    items = frame["orig_id"].to_numpy()
    gold = frame.groupby("orig_id")["gold"].first()
    return _with_truth(name, items, frame["!amt_worker_ids"].to_numpy(),
                       frame["response"].to_numpy(), gold.index.to_numpy(), gold.to_numpy())


def load_rte(data_dir: str | Path | None = None) -> CrowdDataset:
    """RTE (Snow et al. 2008), ``rte.standardized.tsv``."""
    return _load_snow_tsv("rte", "rte.standardized.tsv", data_dir)


def load_temp(data_dir: str | Path | None = None) -> CrowdDataset:
    """TEMP (Snow et al. 2008), ``temp.standardized.tsv``."""
    return _load_snow_tsv("temp", "temp.standardized.tsv", data_dir)


CROWD_LOADERS = {"bluebirds": load_bluebirds, "rte": load_rte, "temp": load_temp}


def load_crowd(name: str, data_dir: str | Path | None = None) -> CrowdDataset:
    """One of the real crowd sets by name (``bluebirds``, ``rte``, ``temp``)."""
    if name not in CROWD_LOADERS:
        raise ValueError(f"crowd dataset={name!r} is not one of {sorted(CROWD_LOADERS)}")
    return CROWD_LOADERS[name](data_dir)
