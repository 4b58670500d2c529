"""Joining or starting Ray, and sizing actors to the resources the cluster has."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` or ``$RAY_ADDRESS`` (as set by ``ray job submit``), or
    start a local Ray instance. Token authentication stays on (Ray's default)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


@dataclass(frozen=True)
class ActorResources:
    """Resources for one actor: ``num_cpus`` / ``num_gpus`` as passed to ``.options``."""

    num_cpus: float
    num_gpus: float

    def options(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def worker_resources(num_workers: int, cpus: float | None = None, gpus: float | None = None,
                     reserve_cpus: float = 0.0) -> ActorResources:
    """One GPU per worker when the cluster has enough GPUs for all of them; otherwise an equal
    fraction of the CPUs (after ``reserve_cpus`` for vote actors), so M workers fit any machine.
    """
    cluster = ray.cluster_resources() if ray.is_initialized() else {}
    cpus = cluster.get("CPU", 1.0) if cpus is None else cpus
    gpus = cluster.get("GPU", 0.0) if gpus is None else gpus
    if gpus >= num_workers:
        return ActorResources(num_cpus=1.0 if cpus >= 2 * num_workers else 0.01, num_gpus=1.0)
    # Round down so that M shares plus the reserve never exceed the cluster's CPUs.
    share = math.floor(1000 * (cpus - reserve_cpus) / num_workers) / 1000
    return ActorResources(num_cpus=max(min(share, 1.0), 0.001), num_gpus=0.0)
