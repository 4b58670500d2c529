"""Offline loaders for the image data sets and disjoint sharding across workers.

The data sets are public files copied unmodified into ``shared/data`` (see its README); no
network is used. Loaders take a path and fail with a message naming the missing file. The
crowdsourcing, forecasting and topic-model loaders live beside their algorithms
(``raysign.crowd``, ``raysign.forecast``, ``raysign.topics``) and find files the same way.

The data folder may also be a URI (``s3://bucket/data``, ``file:///shared/data``): the part a
loader needs is copied once into this node's cache and read from there (``local_data_dir``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysign import storage

DATA_ENV = "RAYSIGN_DATA"


def default_data_dir() -> Path:
    """The data folder: ``$RAYSIGN_DATA``, else ``../shared/data`` from the working directory,
    else ``shared/data`` beside this checkout (the layout of this repository and of CI)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    candidates = [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def data_location(data_dir: str | Path | None) -> str:
    """The data folder a run names: ``data_dir`` (a path or a URI), or ``default_data_dir()``
    when it is empty."""
    return str(data_dir) if data_dir else str(default_data_dir())


def local_data_dir(data_dir: str | Path | None, parts: Sequence[str] = ()) -> Path:
    """The data folder as a path on this machine: a local folder as it is, a URI's sub-paths
    ``parts`` (e.g. ``["mnist"]``) copied once into this node's cache
    (``raysign.storage.cached_copy``)."""
    return storage.cached_copy(data_location(data_dir), parts)


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or FileNotFoundError saying which data set is missing and where."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}: expected file {str(path)!r} is missing. Point --data-dir (or ${DATA_ENV}) "
            "at the folder holding the data sets (see shared/data/README.md)."
        )
    return path


@dataclass(frozen=True)
class ImageSplit:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and int64 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_mnist(data_dir: str | Path | None = None) -> tuple[ImageSplit, ImageSplit]:
    """MNIST train (the 50k train plus 10k validation of the pickle = the standard 60k) and
    test (10k)."""
    root = local_data_dir(data_dir, ["mnist"])
    path = require_file(root / "mnist" / "mnist.pkl.gz", "MNIST")
    with gzip.open(path, "rb") as fh:
        train, valid, test = pickle.load(fh, encoding="latin1")
    x_train = np.concatenate([train[0], valid[0]]).astype(np.float32)
    y_train = np.concatenate([train[1], valid[1]]).astype(np.int64)
    return (
        ImageSplit(x_train.reshape(-1, 1, 28, 28), y_train),
        ImageSplit(test[0].astype(np.float32).reshape(-1, 1, 28, 28), test[1].astype(np.int64)),
    )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    if (magic >> 8) != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(data_dir: str | Path | None = None) -> tuple[ImageSplit, ImageSplit]:
    """Fashion-MNIST train (60k) and test (10k) from the standard IDX files."""
    root = local_data_dir(data_dir, ["fashion-mnist"]) / "fashion-mnist"
    splits = []
    for prefix in ("train", "t10k"):
        images = _read_idx(require_file(root / f"{prefix}-images-idx3-ubyte.gz", "Fashion-MNIST"))
        labels = _read_idx(require_file(root / f"{prefix}-labels-idx1-ubyte.gz", "Fashion-MNIST"))
        x = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        splits.append(ImageSplit(x, labels.astype(np.int64)))
    return splits[0], splits[1]


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def load_images(name: str, data_dir: str | Path | None = None) -> tuple[ImageSplit, ImageSplit]:
    """Train and test split of ``name`` (one of ``LOADERS``)."""
    if name not in LOADERS:
        raise ValueError(f"dataset={name!r} is not one of {sorted(LOADERS)}")
    return LOADERS[name](data_dir)


def shard_indices(n: int, num_shards: int, seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into ``num_shards`` disjoint, shuffled shards of near-equal size."""
    if num_shards < 1 or num_shards > n:
        raise ValueError(f"num_shards={num_shards} must be in [1, {n}]")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_shards)]
