"""The communication round alone, across Ray nodes: majority vote, fp32 parameter server, gloo.

A round of distributed signSGD (Bernstein et al., ICLR 2019, Algorithm 1) without the model:
every worker holds a synthetic gradient of the model's size d, and one round is

1. compress: take the momentum step and pack ``sign(m_i)`` at one bit per parameter into S
   messages (``raysign.wire``), one per vote shard (or copy the fp32 values, for the
   parameter server);
2. gather: Ray moves message (i, s) to vote actor s (``raysign.actors.vote.VoteActor``),
   on its node;
3. vote: majority vote of the M packed slices (or the fp32 mean);
4. broadcast: every worker fetches the S results;
5. decompress: apply the voted signs to the worker's fp32 parameters.

``CommWorker`` is the worker side of 1 and 5, with the same timestamps as
``raysign.actors.worker.SignWorker`` so that ``raysign.signsgd.records.round_stage_times``
splits a round into the five stages. It runs the trainer's own worker-side code
(``raysign.signsgd.exchange``: the finite check of the gradient, the momentum step fused with
the pack into the message body, MAC under the worker's key, and validate + apply the voted
message to the parameters with weight decay), and the vote actors check every MAC as the
trainer's do, so its round times describe the trainer's round less the gradient.
``GlooWorker`` is the baseline a user would pick instead: PyTorch's ``torch.distributed``
all-reduce over gloo between the same actors (each on its node's own
address), on DDP's 25 MB buckets, and a real DDP training step.

Placement: ``spread_group(M)`` reserves one bundle per node (STRICT_SPREAD); worker i, vote
shard i and gloo rank i go into bundle i, so every actor's node is known and no two workers
share a node. The actors ask for small CPU fractions so that several methods' actors can live
side by side and their rounds can alternate (the same machine load for each).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import socket
import struct
import time
from datetime import timedelta
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raysign.actors.vote import DirectVoteActor, VoteActor, receive_votes, submit_shards
from raysign.signs import shard_bounds
from raysign.signsgd.exchange import all_finite, apply_vote, encode_shard
from raysign.signsgd.records import round_stage_times

DDP_BUCKET_BYTES = 25 * 2**20
_SIOCGIFADDR = 0x8915


def synthetic_gradient(rank: int, d: int, seed: int = 0) -> torch.Tensor:
    """Worker ``rank``'s synthetic gradient: [d] fp32 standard normal, reproducible."""
    generator = torch.Generator().manual_seed(seed * 100_003 + rank)
    return torch.randn(d, generator=generator)


def interface_of(ip: str) -> str:
    """The name of this network namespace's interface that holds address ``ip``."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR,
                                  struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            if socket.inet_ntoa(raw[20:24]) == ip:
                return name
    finally:
        probe.close()
    raise RuntimeError(f"no interface holds {ip} in this network namespace")


def node_of(actor: Any) -> str:
    """The Ray node id the actor runs on."""
    return ray.get(actor.__ray_call__.remote(
        lambda _self: ray.get_runtime_context().get_node_id()))


class CommWorker:
    """Worker ``rank``: a synthetic gradient [d], a momentum [d] and parameters [d] (zeros at
    the start); each round it compresses the gradient as a trainer's worker does and applies
    the S results with ``lr`` and ``weight_decay``. ``key``: its MAC key, as a trainer's
    worker gets from the driver (None: unsigned)."""

    def __init__(self, rank: int, d: int, num_shards: int, kind: int, seed: int = 0,
                 key: bytes | None = None, momentum: float = 0.9, lr: float = 1.0,
                 weight_decay: float = 0.0):
        torch.set_num_threads(1)
        self.rank, self.d, self.kind, self._key = rank, d, kind, key
        self.beta, self.lr, self.weight_decay = momentum, lr, weight_decay
        self.bounds = shard_bounds(d, num_shards)
        self.grad = synthetic_gradient(rank, d, seed)
        self.momentum = torch.zeros(d)
        self.params = torch.zeros(d)
        self._scratch = torch.empty(d)  # the fp32 mean before it is applied

    def where(self) -> dict[str, str]:
        return {"node_id": ray.get_runtime_context().get_node_id(),
                "ip": ray.util.get_node_ip_address()}

    def compress(self, step: int) -> tuple[Any, ...]:
        """Step 1: S messages (packed signs or fp32 slices) and the timestamps."""
        t_start = time.time()
        self._check_gradient()
        out = [self._encode(step, shard) for shard in range(len(self.bounds))]
        stats = {"rank": self.rank, "t_start": t_start, "t_grad": t_start,
                 "t_compress_end": time.time(), "bytes_sent": sum(m.nbytes for m in out)}
        return (*out, stats)

    def _check_gradient(self) -> None:
        # The trainer's worker checks its gradient before the momentum step.
        if not all_finite(self.grad):
            raise RuntimeError(f"worker {self.rank}: the synthetic gradient is not finite")

    def _encode(self, step: int, shard: int) -> np.ndarray:
        part = slice(*self.bounds[shard])
        # As the trainer's worker: no momentum step at beta = 0 (the gradient is sent).
        momentum = self.momentum[part] if self.beta else None
        return encode_shard(self.kind, self.grad[part], sender=self.rank, step=step,
                            shard=shard, key=self._key, momentum=momentum, beta=self.beta)

    def exchange(self, step: int, votes: list[Any], senders: tuple[int, ...],
                 timeout: float) -> tuple[dict, list[dict], dict]:
        """Steps 1-5 with the direct transport, pipelined over the shards as in
        ``raysign.actors.worker.SignWorker.exchange``: message s goes to vote actor s as soon as it
        is packed; each voted message is unpacked as soon as it arrives."""
        t_start = time.time()
        self._check_gradient()
        out, calls = submit_shards(step, self.rank, votes,
                                   lambda shard: self._encode(step, shard), senders, timeout)
        stats = {"rank": self.rank, "t_start": t_start, "t_grad": t_start,
                 "t_compress_end": time.time(), "bytes_sent": sum(m.nbytes for m in out)}
        return stats, *receive_votes(step, self.rank, calls, self._apply_shard)

    def apply(self, step: int, *voted: np.ndarray) -> dict[str, Any]:
        """Step 5: validate the S results and apply them to the parameters [d]."""
        t_start = time.time()
        for shard in range(len(self.bounds)):
            self._apply_shard(step, shard, voted[shard])
        return {"rank": self.rank, "t_apply_start": t_start, "t_apply_end": time.time(),
                "bytes_received": sum(v.nbytes for v in voted)}

    def _apply_shard(self, step: int, shard: int, voted: np.ndarray) -> bool:
        part = slice(*self.bounds[shard])
        return apply_vote(voted, self.params[part], kind=self.kind, step=step, shard=shard,
                          lr=self.lr, weight_decay=self.weight_decay,
                          scratch=self._scratch[part])

    def parameter_values(self) -> np.ndarray:
        return self.params.numpy().copy()

    def parameter_digest(self) -> str:
        return hashlib.blake2b(self.params.numpy().tobytes(), digest_size=16).hexdigest()


def spread_group(num_nodes: int, cpus_per_bundle: float = 1.0,
                 strategy: str = "STRICT_SPREAD") -> PlacementGroup:
    """One bundle on each of ``num_nodes`` different nodes (``strategy`` PACK puts them on one
    node, for tests on a single-node Ray)."""
    group = ray.util.placement_group([{"CPU": cpus_per_bundle}] * num_nodes,
                                     strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=60)
    if not ready:
        ray.util.remove_placement_group(group)
        raise RuntimeError(f"no {num_nodes} nodes with {cpus_per_bundle} free CPU each: "
                           f"{ray.available_resources()}")
    return group


def _in_bundle(group: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(placement_group=group,
                                            placement_group_bundle_index=index)


class VoteRound:
    """M ``CommWorker`` actors and S ``VoteActor`` shards; worker i and shard i in bundle i.
    As in the trainer, every worker gets its own random MAC key and every vote actor all M
    keys, so each message is signed and its MAC checked. ``momentum``, ``lr``,
    ``weight_decay``: the workers' Signum settings (a trainer's config, to time its round)."""

    def __init__(self, group: PlacementGroup, num_workers: int, d: int, num_shards: int,
                 kind: int, seed: int = 0, transport: str = "objects", momentum: float = 0.9,
                 lr: float = 1.0, weight_decay: float = 0.0):
        if num_shards > num_workers:
            raise ValueError(f"num_shards={num_shards} must be <= num_workers={num_workers} "
                             "(one shard per worker's node)")
        if transport not in ("objects", "direct"):
            raise ValueError(f"transport={transport!r} must be 'objects' or 'direct'")
        self.num_workers, self.num_shards, self.kind, self.d = num_workers, num_shards, kind, d
        self.transport = transport
        keys = [secrets.token_bytes(32) for _ in range(num_workers)]
        self.workers = [ray.remote(CommWorker).options(
            num_cpus=0.2, scheduling_strategy=_in_bundle(group, i)).remote(
                i, d, num_shards, kind, seed, key=keys[i], momentum=momentum, lr=lr,
                weight_decay=weight_decay) for i in range(num_workers)]
        vote_cls = DirectVoteActor if transport == "direct" else VoteActor
        self.votes = [ray.remote(vote_cls).options(
            num_cpus=0.05, scheduling_strategy=_in_bundle(group, j)).remote(
                j, start, stop, kind, keys=keys)
            for j, (start, stop) in enumerate(shard_bounds(d, num_shards))]

    def placement(self) -> dict[str, list[str]]:
        """Node id of every worker and every vote shard."""
        return {"workers": [node_of(w) for w in self.workers],
                "votes": [node_of(v) for v in self.votes]}

    def round(self, step: int) -> dict[str, float]:
        """One communication round; wall seconds at the driver and the five-stage split."""
        m, s = self.num_workers, self.num_shards
        t0 = time.perf_counter()
        if self.transport == "direct":
            senders = tuple(range(m))
            results = ray.get([w.exchange.remote(step, self.votes, senders, 120.0)
                               for w in self.workers])
            wall = time.perf_counter() - t0
            worker_stats = [r[0] for r in results]
            vote_stats, apply_stats = results[0][1], [r[2] for r in results]
        else:
            # Per worker, the refs of its S messages, then of its stats.
            compress_refs = [w.compress.options(num_returns=s + 1).remote(step)
                             for w in self.workers]
            voted = [self.votes[j].vote.options(num_returns=2).remote(
                step, *[compress_refs[i][j] for i in range(m)]) for j in range(s)]
            applied = [w.apply.remote(step, *[v[0] for v in voted]) for w in self.workers]
            apply_stats = ray.get(applied)
            wall = time.perf_counter() - t0
            worker_stats = ray.get([refs[s] for refs in compress_refs])
            vote_stats = ray.get([v[1] for v in voted])
        if any(v["num_valid"] != m for v in vote_stats):
            raise RuntimeError(f"a vote shard rejected payloads: {vote_stats}")
        stages = round_stage_times(worker_stats, vote_stats, apply_stats)
        stages.pop("compute")
        return {"round_s": wall, **stages,
                "bytes_sent_per_worker": float(np.mean([w["bytes_sent"] for w in worker_stats]))}

    def replicas_identical(self) -> bool:
        """Whether every worker's parameters are the same bytes."""
        return len(set(ray.get([w.parameter_digest.remote() for w in self.workers]))) == 1

    def shutdown(self) -> None:
        for actor in self.workers + self.votes:
            ray.kill(actor)


class GlooWorker:
    """Rank ``rank`` of a torch.distributed gloo group on its node's private address."""

    def __init__(self, rank: int, world: int, d: int, seed: int = 0):
        torch.set_num_threads(1)
        self.rank, self.world, self.d = rank, world, d
        self.grad = synthetic_gradient(rank, d, seed)
        self.buffer = torch.empty(d)
        self.ip = ray.util.get_node_ip_address()

    def where(self) -> dict[str, str]:
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": self.ip}

    def free_port(self) -> tuple[str, int]:
        with socket.socket() as probe:
            probe.bind((self.ip, 0))
            return self.ip, probe.getsockname()[1]

    def init_group(self, master_ip: str, port: int) -> str:
        # Gloo must use the interface of this node's private address, not the host name's.
        os.environ["GLOO_SOCKET_IFNAME"] = interface_of(self.ip)
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://{master_ip}:{port}", rank=self.rank,
            world_size=self.world, timeout=timedelta(seconds=120))
        return os.environ["GLOO_SOCKET_IFNAME"]

    def allreduce_rounds(self, rounds: int) -> list[float]:
        """``rounds`` all-reduce means of the fp32 gradient on DDP's 25 MB buckets, each after
        a barrier; seconds per round."""
        per_bucket = DDP_BUCKET_BYTES // 4
        times = []
        for _ in range(rounds):
            torch.distributed.barrier()
            t0 = time.perf_counter()
            self.buffer.copy_(self.grad)
            works = [torch.distributed.all_reduce(self.buffer[i : i + per_bucket],
                                                  async_op=True)
                     for i in range(0, self.d, per_bucket)]
            for work in works:
                work.wait()
            self.buffer.div_(self.world)
            times.append(time.perf_counter() - t0)
        return times

    def mean_values(self) -> np.ndarray:
        return self.buffer.numpy().copy()

    def ddp_steps(self, model_name: str, images: np.ndarray, labels: np.ndarray,
                  batch_size: int, steps: int, lr: float = 0.01) -> list[float]:
        """``steps`` DDP training steps (forward, backward with bucketed all-reduce, SGD with
        momentum) on this rank's batches; seconds per step, each after a barrier."""
        from raysign.signsgd.models import build_model

        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(build_model(model_name))
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        x_all, y_all = torch.from_numpy(np.array(images)), torch.from_numpy(np.array(labels))
        times = []
        for step in range(steps):
            lo = ((step * self.world + self.rank) * batch_size) % max(1, len(y_all) - batch_size)
            x, y = x_all[lo : lo + batch_size], y_all[lo : lo + batch_size]
            torch.distributed.barrier()
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


class GlooGroup:
    """M ``GlooWorker`` actors, rank i in bundle i, joined in one gloo process group."""

    def __init__(self, group: PlacementGroup, world: int, d: int, seed: int = 0):
        self.workers = [ray.remote(GlooWorker).options(
            num_cpus=0.2, scheduling_strategy=_in_bundle(group, i)).remote(i, world, d, seed)
            for i in range(world)]
        master_ip, port = ray.get(self.workers[0].free_port.remote())
        self.interfaces = ray.get([w.init_group.remote(master_ip, port) for w in self.workers])

    def placement(self) -> list[str]:
        return [node_of(w) for w in self.workers]

    def allreduce_rounds(self, rounds: int) -> list[float]:
        """Seconds per round: the slowest rank's time in each round."""
        per_rank = ray.get([w.allreduce_rounds.remote(rounds) for w in self.workers])
        return [max(times) for times in zip(*per_rank, strict=True)]

    def ddp_steps(self, model_name: str, images: Any, labels: Any, batch_size: int,
                  steps: int) -> list[float]:
        per_rank = ray.get([w.ddp_steps.remote(model_name, images, labels, batch_size, steps)
                            for w in self.workers])
        return [max(times) for times in zip(*per_rank, strict=True)]

    def shutdown(self) -> None:
        ray.get([w.close.remote() for w in self.workers])
        for actor in self.workers:
            ray.kill(actor)
