"""Joining or starting Ray, and sizing actors to the resources the cluster has."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray

# Ray returns objects up to this size inline in the reply of the call that made them, and
# sends arguments up to it inline with the call, instead of through the object store (Ray's
# default is 100 KiB). The direct transport (``raysign.actors.vote.DirectVoteActor``) relies
# on it so that a packed message (d / 8 bytes per vote shard: 1.4 MB for ResNet-18 at S = 1)
# goes straight from worker to vote actor. A cluster started with ``ray start`` takes it from
# the environment of every node: ``RAY_max_direct_call_object_size=8388608 ray start ...``.
DIRECT_CALL_BYTES = 8 * 2**20
DIRECT_CALL_ENV = {"RAY_max_direct_call_object_size": str(DIRECT_CALL_BYTES)}


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` or ``$RAY_ADDRESS`` (as set by ``ray job submit``), or
    start a local Ray instance. Token authentication stays on (Ray's default)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        start_local(num_cpus)


def start_local(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start a local Ray instance as every raysign run does (and the test session):
    ``DIRECT_CALL_BYTES`` as the inline size, no dashboard. With that inline size a small task
    return lives in the memory of the process that made the call, not in the object store, so
    a ref the driver forwards carries those bytes through the driver."""
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
             _system_config={"max_direct_call_object_size": DIRECT_CALL_BYTES})


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
