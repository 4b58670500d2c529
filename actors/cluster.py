"""Joining or starting Ray, and sizing actors to the resources the cluster has."""

from __future__ import annotations

import math
import os
import socket
import sys
from dataclasses import dataclass

import ray
from ray._common.utils import get_ray_address_file
from ray._private import state as ray_state
from ray._private.utils import read_ray_address
from ray.util.client import ray as client_ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

# Ray returns objects up to this size inline in the reply of the call that made them, and
# sends arguments up to it inline with the call, instead of through the object store (Ray's
# default is 100 KiB). The direct transport (``raysign.actors.vote.DirectVoteActor``) relies
# on it so that a packed message (d / 8 bytes per vote shard: 1.4 MB for ResNet-18 at S = 1)
# goes straight from worker to vote actor. A cluster started with ``ray start`` takes it from
# the environment of every node: ``RAY_max_direct_call_object_size=8388608 ray start ...``.
DIRECT_CALL_BYTES = 8 * 2**20
DIRECT_CALL_ENV = {"RAY_max_direct_call_object_size": str(DIRECT_CALL_BYTES)}

# What the cluster's nodes need so that messages up to DIRECT_CALL_BYTES travel inline.
RAY_START_HINT = f"RAY_max_direct_call_object_size={DIRECT_CALL_BYTES} ray start"
# Ray's own max_direct_call_object_size where neither the head's system config nor the
# environment of a node sets it.
RAY_DEFAULT_DIRECT_CALL_BYTES = 100 * 1024
# How long a cluster's address may take to accept a TCP connection before it counts as down.
REACH_TIMEOUT_S = 5.0
ADDRESS_FORMS = ("'auto' (the cluster `ray start` recorded on this machine), host:port "
                 "(its GCS address, as `ray start --head` prints it), ray://host:port (Ray "
                 "Client) or 'local' (a private instance, as with no --address)")


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a private local Ray instance (``start_local``), or join an existing cluster only
    when asked: ``address`` or else ``$RAY_ADDRESS`` (which ``ray job submit`` sets for the job
    driver) is ``'auto'`` (the cluster ``ray start`` recorded in Ray's temp folder on this
    machine), ``host:port`` or ``ray://host:port``. With neither, the run never joins whatever
    Ray is up on the machine, nor a cluster file a crashed ``ray start`` left behind.

    Joining cannot set ``_system_config``, so a joined cluster keeps the inline size its nodes
    were started with (``check_inline_limit`` warns when a run needs more). A cluster that
    cannot be reached exits with one line naming the address and the fix (``SystemExit``).
    Token authentication stays on (Ray's default)."""
    if ray.is_initialized():
        return
    source = "--address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local":
        start_local(num_cpus)
        return
    target, where = _join_address(address, source)
    if not target.startswith("ray://"):
        _check_reachable(target, where)
    try:
        # "auto" goes to Ray as "auto": only then does Ray use the local token, as for
        # `ray start` on this machine.
        ray.init(address=address, log_to_driver=True)
    except ConnectionError as err:
        raise SystemExit(
            f"raysign: cannot join the Ray cluster at {target} ({where}: {err}); if it uses "
            "token authentication (Ray's default), set RAY_AUTH_MODE=token and its token "
            "($RAY_AUTH_TOKEN or ~/.ray/auth_token), or drop --address (and unset "
            "$RAY_ADDRESS) for a private local instance") from None


def _join_address(address: str, source: str) -> tuple[str, str]:
    """(the cluster's address, where it came from) for ``address`` given by ``source``.
    ``'auto'`` is ``$RAY_ADDRESS`` or the file ``ray start`` writes, not Ray's fallback of any
    raylet running on the machine (which may be another user's private instance)."""
    if address == "auto":
        if os.environ.get("RAY_ADDRESS", "auto") != "auto":
            return os.environ["RAY_ADDRESS"], "from $RAY_ADDRESS"
        recorded = read_ray_address()
        if not recorded:
            raise SystemExit(
                f"raysign: {source} auto found no Ray cluster on this machine (no "
                f"{get_ray_address_file(None)}, which `ray start --head` writes); start one "
                f"with `{RAY_START_HINT} --head`, pass a cluster's address as --address "
                "host:port, or drop --address for a private local instance")
        return recorded, f"recorded in {get_ray_address_file(None)} by an earlier `ray start`"
    if address.startswith("ray://"):
        return address, f"from {source}"
    host, sep, port = address.rpartition(":")
    if "://" in address or not (sep and host and port.isdigit()):
        raise SystemExit(f"raysign: {source} {address!r} is not a Ray address: use "
                         f"{ADDRESS_FORMS}; an http:// address is the dashboard's, for "
                         "`ray job submit`")
    return address, f"from {source}"


def _check_reachable(target: str, where: str) -> None:
    """Exit with one line unless ``target`` (host:port) accepts a TCP connection: Ray itself
    retries a dead address for minutes."""
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), REACH_TIMEOUT_S).close()
    except OSError as err:
        raise SystemExit(
            f"raysign: no Ray cluster answers at {target} ({where}: {err.strerror or err}); "
            f"start it with `{RAY_START_HINT} --head --port {port}`, pass the address of "
            "a running cluster as --address host:port, or drop --address (and unset "
            "$RAY_ADDRESS) for a private local instance") from None


def start_local(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start a private local Ray instance as every raysign run does (and the test session),
    whatever Ray is already up on the machine or recorded in Ray's temp folder:
    ``DIRECT_CALL_BYTES`` as the inline size, no dashboard. With that inline size a small task
    return lives in the memory of the process that made the call, not in the object store, so
    a ref the driver forwards carries those bytes through the driver."""
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             log_to_driver=log_to_driver,
             _system_config={"max_direct_call_object_size": DIRECT_CALL_BYTES})


def _inline_limit_of_this_process() -> int:
    """``max_direct_call_object_size`` as Ray set it in this process: the cluster's system
    config (fixed when its head started) wins over ``$RAY_max_direct_call_object_size`` (which
    a worker inherits from its node's ``ray start``), which wins over Ray's default."""
    configured = ray_state.state.get_system_config().get("max_direct_call_object_size")
    if configured is None:
        configured = os.environ.get("RAY_max_direct_call_object_size")
    return RAY_DEFAULT_DIRECT_CALL_BYTES if configured is None else int(configured)


def inline_limits() -> dict[str, int]:
    """Node IP address -> ``max_direct_call_object_size`` (bytes) of the workers on that node:
    the head's system config where it sets it (as ``start_local`` does; it holds for every
    process of the cluster), else read by one zero-CPU task per alive node (the lowest where
    several nodes share an IP)."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if not client_ray.is_connected():  # Ray Client drivers cannot read the GCS themselves
        configured = ray_state.state.get_system_config().get("max_direct_call_object_size")
        if configured is not None:
            return {node["NodeManagerAddress"]: int(configured) for node in nodes}
    probe = ray.remote(num_cpus=0)(_inline_limit_of_this_process)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote() for node in nodes]
    limits: dict[str, int] = {}
    for node, limit in zip(nodes, ray.get(refs), strict=True):
        ip = node["NodeManagerAddress"]
        limits[ip] = min(limit, limits.get(ip, limit))
    return limits


def check_inline_limit(message_bytes: int) -> bool:
    """Whether every node of the connected cluster sends ``message_bytes`` inline (what the
    direct transport is for); if not, say so in one warning line on stderr, with what the
    nodes' ``ray start`` needs. A run still works below the limit: Ray then moves each message
    through the object store of the sender's node."""
    limits = inline_limits()
    low = {ip: limit for ip, limit in limits.items() if limit < message_bytes}
    if not low:
        return True
    need = max(DIRECT_CALL_BYTES, message_bytes)
    nodes = ", ".join(f"{ip} {limit:,}" for ip, limit in sorted(low.items()))
    print(f"raysign: warning: --transport direct sends {message_bytes:,}-byte messages but "
          f"max_direct_call_object_size is below that on {len(low)} of {len(limits)} nodes "
          f"({nodes} bytes), so they go through the object store; to send them inline, start "
          f"every node with `RAY_max_direct_call_object_size={need} ray start ...`",
          file=sys.stderr)
    return False


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


def _path_exists(path: str) -> bool:
    return os.path.exists(path)


def require_path_on_nodes(path: str, field: str = "data_dir", timeout_s: float = 120.0) -> None:
    """ConfigError (one line, naming the nodes' IPs) unless ``path`` exists on every alive node
    that can run a task (one with CPUs or GPUs): a tiny task pinned to each node looks. Call it
    after ``connect`` and before the tasks that read ``path`` start."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raysign.config import ConfigError

    nodes = [n for n in ray.nodes() if n["Alive"]
             and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    look = ray.remote(num_cpus=0)(_path_exists)
    refs = [look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(path) for n in nodes]
    found = ray.get(refs, timeout=timeout_s)
    missing = [n["NodeManagerAddress"] for n, ok in zip(nodes, found, strict=True) if not ok]
    if missing:
        where = "node " + missing[0] if len(missing) == 1 else "nodes " + ", ".join(missing)
        raise ConfigError(f"{field}={path!r} does not exist on {where} (of {len(nodes)} "
                          "that run tasks); put it at that path on every node (a shared "
                          "filesystem), or pass a URI such as s3://bucket/data or "
                          "file:///shared/data, which each node copies into its cache")
