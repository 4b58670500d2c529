"""A cost model of one data-parallel training step: time per step for every exchange raysign has.

What a user buys is time per step at the number of workers M they will run; what raysign
measures stops at a few nodes on one machine. This module states, as closed forms, what one
step costs for

- ``vote_s1``: the Ray majority vote (Bernstein et al., ICLR 2019, Algorithm 1) with one vote
  actor (S = 1), on worker 0's node;
- ``vote_sm``: the same with S = M vote actors, shard j on worker j's node;
- ``ps_fp32``: an fp32 parameter server (one Ray actor averaging fp32 gradients);
- ``hook_allgather`` / ``hook_sharded``: the majority-vote DDP hook
  (``raysign.comm_hooks``) in its two topologies, all-gather and all-to-all;
- ``ring_allreduce``: fp32 ring all-reduce, what DDP does (Patarasuk & Yuan 2009; the
  bandwidth-optimal 2 (M - 1) / M of the data per link);
- ``powersgd``: rank-r PowerSGD (Vogels, Karimireddy, Jaggi, NeurIPS 2019, Algorithm 1): two
  fp32 ring all-reduces, of P = G Q (n x r per matrix, with the uncompressed vectors) and of
  Q = G^T P (m x r per matrix).

as functions of M, the number of parameters d, the link (``Machine.bandwidth`` bytes/s,
``Machine.latency`` s), the per-message Ray overhead, the kernel throughputs and the compute
time, with and without overlap of communication and compute.

Assumptions, shared by every formula (each method's docstring names its own):

1. One worker per node; each node has one full-duplex link of ``bandwidth`` bytes/s each way
   into a non-blocking switch (or a bridge), so only the nodes' own links limit a transfer,
   and a node can send and receive at full rate at the same time.
2. A phase that moves bytes takes the time of its busiest link direction, at the smaller of the
   link rate and ``host_bytes_per_s`` (how fast one process pushes message bytes through Ray);
   phases that wait for each other (gather, then vote, then broadcast) add up.
3. Kernels run at their measured throughputs (bytes/s of the stated side), independent of size.
4. ``cores``: the CPU cores that all M nodes share (the validation machine: 2). The round then
   takes at least all the CPU work of all nodes divided by ``cores``; and the steps every
   worker runs at the same moment (compress and apply: ``Round.parallel``) take M / cores
   times their length when M > cores; with ``cores=inf`` (one machine per node) only the
   critical path counts. The CPU work of a Ray path is its workers'
   compress and apply steps, the vote actors' checks and votes, and what Ray itself spends:
   ``call_cpu`` per actor call and one CPU second per ``cpu_bytes_per_s`` message bytes.
5. Overlap (``step_time``): without overlap the step is compute + communication; with overlap
   communication hides behind the backward pass up to the backward's length, the ideal of
   DDP's bucketed all-reduce: ``max(compute, communication)``.

Pure Python (no numpy, no Ray); ``scripts/costmodel_params.py`` measures a ``Machine``, and
``scripts/bench_scaling.py`` validates the model against the network-namespace cluster and
extrapolates it (docs/scaling.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

FP32_BYTES = 4


@dataclass(frozen=True)
class Machine:
    """The model's parameters. Rates in bytes per second, times in seconds.

    Attributes:
        bandwidth: each node's link rate, per direction.
        latency: one-way latency of one network message (alpha).
        message_overhead: the time one process spends on one Ray actor call it makes or serves
            (a request and its reply; an actor ping-pong).
        host_bytes_per_s: the rate at which Ray moves a message's bytes between two processes
            without a network limit (serialisation, copies); ``inf`` for collectives outside Ray.
        pack_bytes_per_s: ``pack_signs`` throughput, fp32 input bytes per second.
        unpack_bytes_per_s: ``unpack_signs`` throughput, fp32 output bytes per second.
        vote_bytes_per_s: ``majority_vote`` throughput, packed input bytes (all M) per second.
        sum_bytes_per_s: fp32 sum / mean throughput, input bytes per second.
        flops_per_s: fp32 matrix-multiply rate (PowerSGD's projections).
        cores: CPU cores shared by all M nodes (``inf``: every node has its own machine).
        encode_bytes_per_s, apply_bytes_per_s: a Ray path's worker steps around the exchange,
            fp32 bytes of its [d] per second: compress (the finite check, Signum's momentum
            fused with the pack, the MAC) and apply (check the voted message, apply it with
            weight decay). ``None``: the bare ``pack`` and ``unpack`` kernels.
        encode_fp32_bytes_per_s, apply_fp32_bytes_per_s: the same for the fp32 parameter
            server's workers (momentum, copy and MAC; check and apply the mean).
        check_bytes_per_s: a vote actor's check of one arriving message (header and MAC),
            message bytes per second.
        call_cpu: CPU seconds one Ray actor call costs the machine (both ends and Ray's own
            processes), beyond its bytes.
        cpu_bytes_per_s: message bytes Ray moves per CPU second (serialise, copy, send and
            receive, over every process it takes).
    """

    bandwidth: float
    latency: float = 0.0
    message_overhead: float = 0.0
    host_bytes_per_s: float = math.inf
    pack_bytes_per_s: float = math.inf
    unpack_bytes_per_s: float = math.inf
    vote_bytes_per_s: float = math.inf
    sum_bytes_per_s: float = math.inf
    flops_per_s: float = math.inf
    cores: float = math.inf
    encode_bytes_per_s: float | None = None
    apply_bytes_per_s: float | None = None
    encode_fp32_bytes_per_s: float = math.inf
    apply_fp32_bytes_per_s: float = math.inf
    check_bytes_per_s: float = math.inf
    call_cpu: float = 0.0
    cpu_bytes_per_s: float = math.inf
    source: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "source" or (value is None and name.endswith("bytes_per_s")):
                continue
            may_be_zero = name in ("latency", "message_overhead", "call_cpu")
            if not (value > 0 or (may_be_zero and value == 0)):
                bound = ">= 0" if may_be_zero else "> 0"
                raise ValueError(f"Machine.{name}={value!r} must be {bound}")

    def with_(self, **changes: float) -> Machine:
        """A copy with ``changes`` (e.g. another bandwidth for the extrapolation)."""
        return Machine(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else "inf")
                for k, v in asdict(self).items()}

    def worker_steps(self, d: int, fp32: bool = False) -> tuple[float, float]:
        """Seconds of a Ray path's worker compress and apply steps over [d]."""
        if fp32:
            return (FP32_BYTES * d / self.encode_fp32_bytes_per_s,
                    FP32_BYTES * d / self.apply_fp32_bytes_per_s)
        return (FP32_BYTES * d / (self.encode_bytes_per_s or self.pack_bytes_per_s),
                FP32_BYTES * d / (self.apply_bytes_per_s or self.unpack_bytes_per_s))

    def ray_cpu(self, calls: float, message_bytes: float) -> float:
        """CPU seconds Ray spends on ``calls`` actor calls carrying ``message_bytes`` in all."""
        return calls * self.call_cpu + message_bytes / self.cpu_bytes_per_s

    @classmethod
    def from_dict(cls, data: dict) -> Machine:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (math.inf if v == "inf" else v) for k, v in data.items() if k in known})


class Round(NamedTuple):
    """One exchange: ``critical`` seconds on the slowest chain of waits, ``cpu`` seconds of CPU
    work summed over all nodes, and what bounds it; ``parallel`` seconds of the critical path
    that all ``width`` workers run at the same moment (their compress and apply steps)."""

    critical: float
    cpu: float
    bottleneck: str
    parallel: float = 0.0
    width: int = 1

    def seconds(self, cores: float) -> float:
        """Assumption 4: on ``cores`` shared cores the workers' simultaneous steps take
        ``width / cores`` times as long, and the round at least all CPU work over the cores."""
        return max(self.crowded_critical(cores), self.cpu / cores)

    def crowded_critical(self, cores: float) -> float:
        """The critical path with the simultaneous steps crowded onto ``cores``."""
        return self.critical + self.parallel * (max(1.0, self.width / cores) - 1.0)

    def bound(self, cores: float) -> str:
        """What sets ``seconds(cores)``: "cpu" (all CPU work over the cores) or "critical path"."""
        return "cpu" if self.cpu / cores > self.crowded_critical(cores) else "critical path"


def _link(nbytes: float, machine: Machine, through_ray: bool = True) -> float:
    rate = min(machine.bandwidth, machine.host_bytes_per_s) if through_ray else machine.bandwidth
    return nbytes / rate


def _pack_unpack(d: int, machine: Machine) -> tuple[float, float]:
    return (FP32_BYTES * d / machine.pack_bytes_per_s,
            FP32_BYTES * d / machine.unpack_bytes_per_s)


def _check(m: int, d: int) -> None:
    if m < 1 or d < 1:
        raise ValueError(f"m={m} and d={d} must both be >= 1")


def packed_bytes(d: int) -> float:
    """Bytes of d signs at one bit each (the wire header is ignored: 32 bytes)."""
    return d / 8


def vote_s1(m: int, d: int, machine: Machine) -> Round:
    """Ray majority vote, one vote actor on worker 0's node (S = 1).

    Every worker compresses its d signs (``c``: ``4d / encode``, or ``4d / pack``); the M - 1
    remote messages of d/8 bytes arrive through node 0's inbound link, the actor checks all M
    (``d/8 / check`` each) and votes M packed inputs (``M d/8 / vote``), and sends the result back
    out through node 0's outbound link; every worker applies it (``a``: ``4d / apply``, or
    ``4d / unpack``). Gather and broadcast wait for each other (the vote needs every input),
    so with full-duplex links both directions still add::

        critical = c + 2 (alpha + (M-1) d/8 / B) + M d/8 / check + M d/8 / vote + a + M o

    where B = min(bandwidth, host rate) and o the per-call overhead: the vote actor serves M
    calls one after the other. Bottleneck: node 0's link. CPU over all nodes:
    M (c + a) + M d/8 / check + vote + M calls and 2 M d/8 message bytes through Ray.
    """
    _check(m, d)
    b = packed_bytes(d)
    compress, apply = machine.worker_steps(d)
    actor = m * b / machine.check_bytes_per_s + m * b / machine.vote_bytes_per_s
    calls = m * machine.message_overhead
    wire = 2 * (machine.latency + _link((m - 1) * b, machine)) if m > 1 else 0.0
    critical = compress + wire + actor + apply + calls
    cpu = m * (compress + apply) + actor + machine.ray_cpu(m, 2 * m * b)
    return Round(critical, cpu, "node 0's link (vote actor)", compress + apply, m)


def vote_sm(m: int, d: int, machine: Machine) -> Round:
    """Ray majority vote with S = M vote actors, shard j (d/M signs) on worker j's node.

    Every node sends M - 1 shards of d/(8M) bytes and receives M - 1, then each actor checks
    and votes its M shard inputs, then every node sends and receives M - 1 voted shards::

        critical = c + 2 (alpha + (M-1) d/(8M) / B) + d/8 / check + d/8 / vote + a + M o

    (c, a: the worker steps as in ``vote_s1``; each worker makes M calls, each actor serves M;
    the M actors' checks and votes run side by side, as the workers' steps do: all three are
    ``Round.parallel``). Every link carries (M-1)/M of a message each way per phase: at most
    d/8, whatever M. CPU over all nodes: M (c + a) + M (check + vote of d/8) + M^2 calls and
    2 M d/8 message bytes through Ray.
    """
    _check(m, d)
    b = packed_bytes(d)
    compress, apply = machine.worker_steps(d)
    actor = b / machine.check_bytes_per_s + b / machine.vote_bytes_per_s
    calls = m * machine.message_overhead
    wire = 2 * (machine.latency + _link((m - 1) * b / m, machine)) if m > 1 else 0.0
    critical = compress + wire + actor + apply + calls
    cpu = m * (compress + apply) + m * actor + machine.ray_cpu(m * m, 2 * m * b)
    return Round(critical, cpu, "every node's link, evenly", compress + actor + apply, m)


def ps_fp32(m: int, d: int, machine: Machine) -> Round:
    """fp32 parameter server: one Ray actor on worker 0's node averages the M gradients.

    As ``vote_s1`` with 4d-byte messages, the fp32 worker steps (c32, a32:
    ``4d / encode_fp32``, ``4d / apply_fp32``), and the fp32 sum (``M 4d / sum``) for the
    vote::

        critical = c32 + 2 (alpha + (M-1) 4d / B) + M 4d / check + M 4d / sum + a32 + M o

    Bottleneck: node 0's link, 32x the bytes of the vote's. CPU over all nodes:
    M (c32 + a32) + M 4d / check + sum + M calls and 2 M 4d message bytes through Ray.
    """
    _check(m, d)
    f = FP32_BYTES * d
    compress, apply = machine.worker_steps(d, fp32=True)
    actor = m * f / machine.check_bytes_per_s + m * f / machine.sum_bytes_per_s
    calls = m * machine.message_overhead
    wire = 2 * (machine.latency + _link((m - 1) * f, machine)) if m > 1 else 0.0
    cpu = m * (compress + apply) + actor + machine.ray_cpu(m, 2 * m * f)
    return Round(compress + wire + actor + apply + calls, cpu,
                 "node 0's link (parameter server)", compress + apply, m)


def ring_allreduce(m: int, d: int, machine: Machine, element_bytes: int = FP32_BYTES) -> Round:
    """Ring all-reduce of d values (reduce-scatter, then all-gather; what DDP's NCCL / gloo
    all-reduce does for large buckets)::

        critical = 2 (M-1) (alpha + d b_e / (M B)) + (M-1)/M d b_e / sum

    with b_e bytes per element and B the link rate (no Ray: ``host_bytes_per_s`` is not
    used). Every link carries 2 (M-1)/M of the data each way; no node is a bottleneck.
    """
    _check(m, d)
    if m == 1:
        return Round(0.0, 0.0, "none (one worker)")
    data = d * element_bytes
    wire = 2 * (m - 1) * (machine.latency + _link(data / m, machine, through_ray=False))
    reduce = (m - 1) / m * data / machine.sum_bytes_per_s
    return Round(wire + reduce, m * reduce, "every link, evenly (ring)", reduce, m)


def hook_allgather(m: int, d: int, machine: Machine) -> Round:
    """DDP vote hook, ``topology="allgather"``: a ring all-gather of the packed messages, then
    every rank votes all M locally::

        critical = 4d/pack + (M-1) (alpha + d/8 / B) + M d/8 / vote + 4d/unpack

    Every rank receives (M-1) d/8 bytes: the received bytes and the local vote grow with M.
    """
    _check(m, d)
    b = packed_bytes(d)
    pack, unpack = _pack_unpack(d, machine)
    vote = m * b / machine.vote_bytes_per_s
    wire = (m - 1) * (machine.latency + _link(b, machine, through_ray=False))
    return Round(pack + wire + vote + unpack, m * (pack + vote + unpack),
                 "every rank's inbound link, (M-1) d/8", pack + vote + unpack, m)


def hook_sharded(m: int, d: int, machine: Machine) -> Round:
    """DDP vote hook, ``topology="sharded"``: an all-to-all sends shard k of every message to
    rank k, rank k votes its d/M signs, a second all-to-all returns the voted shards::

        critical = 4d/pack + 2 (M-1) (alpha + d/(8M) / B) + d/8 / vote + 4d/unpack

    (an all-to-all as M - 1 pairwise exchange steps). At most 2 d/8 bytes per link, whatever M;
    the latency term grows as 2 (M-1) alpha.
    """
    _check(m, d)
    b = packed_bytes(d)
    pack, unpack = _pack_unpack(d, machine)
    vote = b / machine.vote_bytes_per_s
    wire = 2 * (m - 1) * (machine.latency + _link(b / m, machine, through_ray=False))
    return Round(pack + wire + vote + unpack, m * (pack + vote + unpack),
                 "every link, evenly (all-to-all)", pack + vote + unpack, m)


@dataclass(frozen=True)
class LowRankLayout:
    """PowerSGD's view of a model: the matrices it compresses (each parameter of 2+ dimensions
    as [shape[0], prod(shape[1:])]) and the number of values sent uncompressed (vectors)."""

    matrices: tuple[tuple[int, int], ...]
    vector_values: int

    @classmethod
    def from_shapes(cls, shapes: Sequence[Sequence[int]]) -> LowRankLayout:
        matrices, vectors = [], 0
        for shape in shapes:
            if len(shape) >= 2:
                matrices.append((int(shape[0]), int(math.prod(shape[1:]))))
            else:
                vectors += int(math.prod(shape))
        return cls(tuple(matrices), vectors)

    @property
    def d(self) -> int:
        return sum(n * k for n, k in self.matrices) + self.vector_values

    def sent_values(self, rank: int) -> tuple[int, int]:
        """Values in the P all-reduce (r sum n + vectors) and in the Q all-reduce (r sum m).
        A matrix too small to gain (r (n + m) >= n m) is sent whole with the vectors, as
        PyTorch's powerSGD_hook does."""
        p, q = self.vector_values, 0
        for n, k in self.matrices:
            if rank * (n + k) < n * k:
                p, q = p + rank * n, q + rank * k
            else:
                p += n * k
        return p, q


def powersgd(m: int, layout: LowRankLayout, rank: int, machine: Machine) -> Round:
    """Rank-r PowerSGD (Vogels et al. 2019, Algorithm 1, one power iteration, error feedback,
    warm-started Q): per matrix G (n x k), P = G Q, all-reduce P, orthogonalise P, Q = G^T P,
    all-reduce Q, G' = P Q^T::

        critical = ring(r sum n + vectors) + ring(r sum k)
                   + (6 r sum n k + 2 r^2 sum n) / flops

    (three n x k x r products, 2 flops each; Gram-Schmidt 2 n r^2). The two all-reduces wait
    for each other (Q needs the reduced P): two rings' latencies.
    """
    if rank < 1:
        raise ValueError(f"rank={rank} must be >= 1")
    p_values, q_values = layout.sent_values(rank)
    flops = sum(6 * rank * n * k + 2 * rank * rank * n for n, k in layout.matrices
                if rank * (n + k) < n * k)
    matmul = flops / machine.flops_per_s
    first = ring_allreduce(m, max(p_values, 1), machine)
    second = ring_allreduce(m, max(q_values, 1), machine) if q_values else Round(0.0, 0.0, "")
    return Round(first.critical + second.critical + matmul,
                 first.cpu + second.cpu + m * matmul, "every link, evenly (two rings)",
                 first.parallel + second.parallel + matmul, m)


METHODS: dict[str, Callable[[int, int, Machine], Round]] = {
    "vote S=1": vote_s1,
    "vote S=M": vote_sm,
    "fp32 PS": ps_fp32,
    "ring all-reduce": ring_allreduce,
    "hook allgather": hook_allgather,
    "hook sharded": hook_sharded,
}


class StepTime(NamedTuple):
    """Seconds of one training step: compute, communication, and the step."""

    compute: float
    comm: float
    step: float

    @property
    def efficiency(self) -> float:
        """Weak-scaling efficiency: the single worker's step (compute alone) over this step."""
        return self.compute / self.step if self.step > 0 else 1.0


def step_time(exchange: Round, compute: float, machine: Machine, overlap: bool) -> StepTime:
    """Assumption 5: ``compute + comm`` in sequence, ``max(compute, comm)`` with overlap."""
    comm = exchange.seconds(machine.cores)
    return StepTime(compute, comm, max(compute, comm) if overlap else compute + comm)


def first_crossing(ms: Sequence[int], a: Callable[[int], float], b: Callable[[int], float],
                   ) -> int | None:
    """The first M in ``ms`` where ``a(M) > b(M)`` (e.g. where the all-gather vote stops paying
    against the sharded one), or None."""
    for m in ms:
        if a(m) > b(m):
            return m
    return None
