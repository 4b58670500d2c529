"""Data given as a ``ray.data.Dataset``: each worker reads its own shard in the cluster.

``Workload(train_data=dataset, columns=("x", "y"))`` hands the trainer a Dataset (a plan; its
blocks are produced by Ray Data tasks, not by the driver). The driver reads nothing itself:

1. ``probe`` (one task, one pass): the row count N and one batch of the two columns, for
   the driver's workload check (``raysign.signsgd.workload.check_workload``);
2. every worker actor reads the whole Dataset in order (``preserve_order``) inside its own
   process and keeps the rows of its shard, ``shard_indices(N, M, seed)[rank]`` in that order
   (``read_shard``): the same rows, in the same order, as arrays of the same data would give
   that worker, so the run equals the run on those arrays. A checkpoint holds the data
   position as for arrays; a resume reads the Dataset again and needs it to yield the same N
   rows in the same order (a deterministic pipeline), and then ends bit-identical to an
   uninterrupted run (``tests/test_ray_data_input.py``).

A ``ray.data.Dataset`` test set (``Workload(test_data=dataset)``, the same ``columns``) is
probed the same way, and the worker that evaluates reads it in order, in batches, every
evaluation (``raysign.signsgd.workload.eval_batches``); the driver never reads it.

The cost of that determinism: each of the M workers streams all N rows once at start (and
after a restart) and keeps N / M. The reading tasks need CPUs beside the workers', so the
trainer keeps ``READ_CPUS`` free of worker actors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from raysign.config import ConfigError
from raysign.signsgd.workload import RayDataSource

__all__ = ["READ_CPUS", "RayDataSource", "probe", "read_shard"]

# CPUs the trainer leaves to Ray Data's reading tasks when a data set is a Dataset.
READ_CPUS = 1.0


def _probe(dataset: Any, columns: tuple[str, str], batch_size: int) -> tuple[Any, ...]:
    """One pass over the Dataset: its row count and the first ``batch_size`` rows."""
    count, first = 0, None
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if first is None:
            missing = [c for c in columns if c not in batch]
            if missing:
                return None, None, sorted(batch)
            first = (batch[columns[0]], batch[columns[1]])
        count += len(batch[columns[0]])
    return count, first, None


def probe(dataset: Any, columns: tuple[str, str], batch_size: int,
          ) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
    """N and the first ``batch_size`` rows as (inputs, targets) arrays, read by one task (so the
    pipeline runs, and its blocks are owned, outside the driver). ``ConfigError`` if a column
    is missing, naming the Dataset's columns."""
    task = ray.remote(num_cpus=0)(_probe)
    count, batch, found = ray.get(task.remote(dataset, columns, batch_size))
    if count is None:
        raise ConfigError(f"workload.columns={columns!r}: the ray.data.Dataset has no column "
                          f"{[c for c in columns if c not in found]}; its columns are {found}")
    return count, (np.array(batch[0]), np.array(batch[1]))  # writable copies for torch


def read_shard(source: RayDataSource, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``indices`` (of N) of the Dataset as (inputs [n, ...], targets [n, ...]) arrays, in
    the order of ``indices``, reading the Dataset once in its own order."""
    position = np.full(source.num_rows, -1, dtype=np.int64)
    position[indices] = np.arange(len(indices))
    inputs = targets = None
    start = 0
    for x, y in source.batches(None):
        stop = start + len(x)
        mine = position[start:stop]
        keep = mine >= 0
        if inputs is None:
            inputs = np.empty((len(indices), *x.shape[1:]), dtype=x.dtype)
            targets = np.empty((len(indices), *y.shape[1:]), dtype=y.dtype)
        inputs[mine[keep]] = x[keep]
        targets[mine[keep]] = y[keep]
        start = stop
    return inputs, targets
