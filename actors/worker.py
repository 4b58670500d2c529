"""``SignWorker``: one data-parallel worker of distributed signSGD, as a Ray actor.

Each round it computes its gradient and momentum (``raysign.signsgd.replica.Replica``), packs
``sign(m)`` at one bit per parameter into one message per vote shard, and returns those
messages as separate Ray objects, so each vote actor fetches only its own slice. Then it
receives the S voted messages, validates them, unpacks and applies the update, and advances
the learning-rate schedule once the step is complete. Packing and unpacking are
``raysign.signsgd.exchange``'s, the code the communication benchmark
(``raysign.actors.comm_bench``) runs too. Timestamps of each phase come back with
the stats for the driver's compress / gather / vote / broadcast / decompress split.

The model, loss and evaluation are the run's workload (``raysign.signsgd.workload``): the
built-in one the config names, or a user's callables, which Ray ships here with cloudpickle.
The training data arrive as arrays (zero-copy from the object store), as a torch Dataset
object read by index, or as a ``ray.data.Dataset`` that the worker reads itself, in the
cluster (``raysign.actors.ray_data``); either way the worker keeps only its own disjoint shard.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import numpy as np
import ray
import torch

from raysign import wire
from raysign.actors.drills import WorkerDrills
from raysign.actors.ray_data import RayDataSource, read_shard
from raysign.actors.vote import receive_votes, submit_shard, submit_shards
from raysign.data import shard_indices
from raysign.signs import gradient_density
from raysign.signsgd.attacks import OMNISCIENT_ATTACKS, make_crafted_attack
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.exchange import all_finite, apply_vote, decode_vote, encode_shard
from raysign.signsgd.replica import Replica
from raysign.signsgd.workload import WorkloadFunctions, data_length, take_shard

log = logging.getLogger(__name__)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"


class SignWorker(WorkerDrills):
    """Model replica plus its own disjoint data shard (rank ``rank`` of ``num_workers``).

    ``inputs, targets``: the whole training set as arrays, or ``inputs`` a torch Dataset or a
    ``RayDataSource`` and ``targets`` None. ``functions``: the workload's code (None: the
    built-in workload).
    ``key``: this worker's MAC key from the driver (``raysign.wire.sign_message``; None:
    messages go unsigned). The fault-injection drills (``crash``, ``poison_next_gradient``,
    ``forge_at``) come from ``raysign.actors.drills.WorkerDrills``."""

    byzantine = False

    def __init__(self, config: SignSGDConfig, rank: int, inputs: Any, targets: Any,
                 bounds: list[tuple[int, int]], functions: WorkloadFunctions | None = None,
                 key: bytes | None = None):
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self.rank = rank
        self._key = key
        # New in every process Ray starts for this actor: the driver tells a restarted worker
        # (a fresh replica) from the one it last synced.
        self.incarnation = secrets.token_hex(8)
        self.bounds = bounds
        # Zero-copy views of the object store (or the Dataset object), kept for reset.
        self._data = (inputs, targets)
        self._functions = functions
        self._read: tuple[tuple[int, int], tuple[Any, Any]] | None = None  # ray.data shard
        self.reset(config, self.byzantine)

    def reset(self, config: SignSGDConfig, byzantine: bool) -> None:
        """Start a fresh replica for another configuration of the same shape (same model,
        data set, worker count and vote shards) in this process: a benchmark grid reuses its
        actors instead of starting new processes for every cell."""
        inputs, targets = self._data
        shard = shard_indices(data_length(inputs, targets), config.num_workers,
                              config.seed)[self.rank]
        self.config = config
        self.num_workers = config.num_workers
        self.byzantine = byzantine
        self.kind = wire.KIND_SIGNS if config.aggregator == "vote" else wire.KIND_FP32
        self.replica = Replica(config, self.rank, *self._shard(config, shard), _device(),
                               byzantine=byzantine, functions=self._functions)
        # The voted fp32 mean (or signs on a GPU) of each shard is unpacked here before it is
        # applied; signs on CPU are applied in one pass without it.
        self._update = torch.empty_like(self.replica.flat)
        # The gradient [d] is written here every step (Replica.gradient's ``out``): a fresh
        # [d] per step cost about 11,000 minor page faults at ResNet-18 size.
        self._gradient = torch.empty_like(self.replica.flat)
        # Honest Signum sending signs takes each slice's momentum step in the pass that packs
        # it (``encode_shard``); the Byzantine (their attack reads the whole momentum) and the
        # fp32 senders take it over the whole vector first.
        self._fused_momentum = (not byzantine and config.momentum != 0.0
                                and self.kind == wire.KIND_SIGNS)
        self._momentum: torch.Tensor | None = None  # this round's, when fused
        # Overlap of the vote with the backward pass (``config.overlap``), where it keeps the
        # sequential round's exact semantics; otherwise the sequential round, said once here.
        fallback = overlap_fallback(config, byzantine, self.replica.device.type)
        self.overlap = config.overlap and fallback is None
        if config.overlap and fallback is not None:
            log.warning("worker %d: overlap=True falls back to the sequential round: %s",
                        self.rank, fallback)
        self.cancel_drills()
        self._outbox: tuple[int, tuple[Any, ...]] | None = None
        self._applied: tuple[int | None, set[int]] = (None, set())  # (step, shards applied)
        self.omniscient_attack = None
        if byzantine and config.attack in OMNISCIENT_ATTACKS:
            self.omniscient_attack = make_crafted_attack(config.attack, config.num_byzantine,
                                                         scale=config.attack_scale)
            self.omniscient_rng = np.random.default_rng([config.seed, self.rank, 7])

    def _shard(self, config: SignSGDConfig, shard: np.ndarray) -> tuple[Any, Any]:
        """This worker's rows ``shard`` of the training set; a ray.data.Dataset is read once per
        (worker count, seed), here, and its shard kept as arrays."""
        inputs, targets = self._data
        if not isinstance(inputs, RayDataSource):
            return take_shard(inputs, targets, shard)
        key = (config.num_workers, config.seed)
        if self._read is None or self._read[0] != key:
            self._read = (key, read_shard(inputs, shard))
        return self._read[1]

    def num_parameters(self) -> int:
        return self.replica.d

    def incarnation_id(self) -> str:
        return self.incarnation

    def compute(self, step: int, with_density: bool = False,
                incarnation: str | None = None) -> tuple[Any, ...]:
        """Gradient, momentum, sign and pack; returns S messages and a stats dict.
        ``incarnation``: the process the driver last synced (``_vector_to_send``)."""
        vector, flags, stats = self._vector_to_send(with_density, incarnation)
        stats["overlap"] = False
        out = [self.drill_message(step, self._encode(step, shard, vector[start:stop], flags,
                                                     self._momentum), direct=False)[0]
               for shard, (start, stop) in enumerate(self.bounds)]
        stats.update(t_compress_end=time.time(), bytes_sent=sum(m.nbytes for m in out))
        if self.omniscient_attack is not None:
            self._own_vector, self._own_stats = vector, stats
        return (*out, stats)

    def _vector_to_send(self, with_density: bool, incarnation: str | None = None,
                        ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Gradient and momentum: the fp32 vector [d] to compress, its wire flags and the
        stats so far. If this process is not the ``incarnation`` the driver last synced (Ray
        restarted it between rounds: its replica is a fresh one), it abstains and says so
        (``stats["restarted"]``), so the driver re-syncs it before it votes."""
        self._momentum = None  # set below only for this round's fused momentum step
        if incarnation is not None and incarnation != self.incarnation:
            t_now = time.time()
            return torch.zeros(self.replica.d), wire.FLAG_ABSTAIN, {
                "rank": self.rank, "loss": float("nan"), "t_start": t_now, "t_grad": t_now,
                "abstained": True, "restarted": True, "epoch": self.replica.epoch,
                "lr": self.replica.lr}
        t_start = time.time()
        grad, loss = self.replica.gradient(out=self._gradient)
        self.drill_gradient(grad)
        t_grad = time.time()
        # A non-finite gradient is skipped (momentum untouched) and the worker abstains.
        finite = all_finite(grad)
        if not finite:
            vector = torch.zeros_like(grad)
        elif self._fused_momentum:
            # The momentum step is taken per slice as it is packed. A finite gradient and
            # momentum give a finite new momentum (a convex combination), so the per-shard
            # abstention of ``encode_shard`` only guards a momentum loaded non-finite.
            vector, self._momentum = grad, self.replica.momentum_state
        else:
            vector = self.replica.momentum_and_attack(grad)
            finite = vector is grad or all_finite(vector)
        flags = 0 if finite else wire.FLAG_ABSTAIN
        stats = {"rank": self.rank, "loss": loss, "t_start": t_start, "t_grad": t_grad,
                 "abstained": bool(flags), "epoch": self.replica.epoch, "lr": self.replica.lr}
        if with_density:
            stats["density"] = gradient_density(grad)
        return vector, flags, stats

    def exchange(self, step: int, votes: list[Any], senders: tuple[int, ...], timeout: float,
                 with_density: bool = False,
                 incarnation: str | None = None) -> tuple[dict, list[dict], dict]:
        """One round with the direct transport (``raysign.actors.vote.DirectVoteActor``), pipelined
        over the S shards: message s goes to vote actor s as soon as it is packed, and each
        voted message (the call's return value) is applied as soon as it arrives, while the
        others are still on the wire. Returns this worker's compute, vote and apply stats.
        The messages are kept until the next round (``resend``), in case a vote actor dies
        and the driver falls back to the object path. ``incarnation``: as in ``compute``.

        With ``config.overlap`` (and ``self.overlap``: no reason to fall back), message s is
        sent during the backward pass, as soon as its slice of the gradient is final
        (``_send_during_backward``); ``stats["overlap"]`` says which path ran."""
        if self.overlap and incarnation in (None, self.incarnation):
            out, calls, stats = self._send_during_backward(step, votes, senders, timeout,
                                                           with_density)
        else:
            out, calls, stats = self._send_after_backward(step, votes, senders, timeout,
                                                          with_density, incarnation)
        stats.update(t_compress_end=time.time(), bytes_sent=sum(m.nbytes for m in out))
        self._outbox = (step, (*out, stats))
        vote_stats, applied = receive_votes(step, self.rank, calls, self._apply_shard)
        self.replica.finish_step(step)
        self.drill_replica(step, self.replica.flat)
        return stats, vote_stats, applied

    def _send_after_backward(self, step: int, votes: list[Any], senders: tuple[int, ...],
                             timeout: float, with_density: bool, incarnation: str | None,
                             ) -> tuple[list[np.ndarray], dict, dict[str, Any]]:
        """The sequential round's sending half: the whole gradient and its finite check
        first, then message s packed and sent to vote actor s, s = 0, 1, ..."""
        vector, flags, stats = self._vector_to_send(with_density, incarnation)
        extras: dict[int, list] = {}

        def encode(shard: int) -> np.ndarray:
            message = self._encode(step, shard, vector[slice(*self.bounds[shard])], flags,
                                   self._momentum)
            message, extras[shard] = self.drill_message(step, message, direct=True)
            return message

        out, calls = submit_shards(step, self.rank, votes, encode, senders, timeout,
                                   forged=lambda shard, _: extras[shard])
        stats["overlap"] = False
        return out, calls, stats

    def _send_during_backward(self, step: int, votes: list[Any], senders: tuple[int, ...],
                              timeout: float, with_density: bool,
                              ) -> tuple[list[np.ndarray], dict, dict[str, Any]]:
        """The overlapped round's sending half (issue #21): ``Replica.gradient_in_slices``
        hands out slice s of the gradient the moment every parameter in it has its
        gradient (the last layers' slices first), and message s is packed (the momentum
        step fused, as in the sequential round) and sent to vote actor s from inside the
        backward pass. The same gradient values, momentum and messages as
        ``_send_after_backward``, but for one rule: a non-finite gradient abstains per
        shard, not for the whole vector (the other slices are on the wire before it is
        known) - the slice with a non-finite entry sends an abstaining message and leaves
        its momentum untouched; the other slices vote as usual."""
        t_start = time.time()
        out: list[np.ndarray | None] = [None] * len(self.bounds)
        calls: dict[Any, int] = {}
        abstained: list[int] = []
        momentum = self.replica.momentum_state if self._fused_momentum else None

        def send(shard: int, grad: torch.Tensor) -> None:
            if shard == 0:  # the NaN drill poisons the first entries of the vector
                self.drill_gradient(grad)
            if all_finite(grad):
                message = self._encode(step, shard, grad, 0, momentum)
            else:
                abstained.append(shard)
                message = self._encode(step, shard, torch.zeros_like(grad), wire.FLAG_ABSTAIN)
            out[shard], extras = self.drill_message(step, message, direct=True)
            calls[submit_shard(step, self.rank, votes[shard], out[shard], senders, timeout,
                               extras)] = shard

        grad, loss = self.replica.gradient_in_slices(self.bounds, send, out=self._gradient)
        stats = {"rank": self.rank, "loss": loss, "t_start": t_start, "t_grad": time.time(),
                 "abstained": bool(abstained), "abstained_shards": sorted(abstained),
                 "epoch": self.replica.epoch, "lr": self.replica.lr, "overlap": True}
        if with_density:
            stats["density"] = gradient_density(grad)
        return out, calls, stats

    def resend(self, step: int) -> tuple[Any, ...]:
        """The S messages and stats this worker computed for ``step`` in ``exchange``."""
        if self._outbox is None or self._outbox[0] != step:
            raise RuntimeError(f"worker {self.rank} holds no messages for step {step}")
        return self._outbox[1]

    def _encode(self, step: int, shard: int, values: torch.Tensor, flags: int,
                momentum: torch.Tensor | None = None) -> np.ndarray:
        """Message ``shard`` of ``values``; with ``momentum`` (this round's, when fused) its
        slice takes the momentum step as it is packed."""
        beta = 0.0
        if momentum is not None:
            momentum, beta = momentum[slice(*self.bounds[shard])], self.config.momentum
        return encode_shard(self.kind, values, sender=self.rank, step=step, shard=shard,
                            flags=flags, key=self._key, momentum=momentum, beta=beta)

    def craft_omniscient_messages(self, step: int, *honest: np.ndarray) -> tuple[Any, ...]:
        """An omniscient adversary's S messages for ``step``, replacing those of its
        ``compute`` of the same step: it reads the honest workers' S messages each
        (``honest`` = [worker0 shard0, worker0 shard1, ...]) and crafts its own per shard
        (``raysign.signsgd.attacks.make_crafted_attack``). Returns the messages and the
        stats of that ``compute``."""
        s = len(self.bounds)
        out = []
        for shard, (start, stop) in enumerate(self.bounds):
            rows = []
            for msg in honest[shard::s]:
                row = torch.empty(stop - start)  # the signs as +-1, or the fp32 values
                try:
                    if decode_vote(msg, row, kind=self.kind, step=step, shard=shard):
                        rows.append(row.numpy())
                except wire.MessageError:
                    # Unreadable (e.g. a worker Ray restarted after a reconfigure abstains in
                    # the first configuration's kind): left out, as the vote actors do.
                    continue
            own = self._own_vector[start:stop].detach().cpu().numpy()
            values = (self.omniscient_attack(np.stack(rows), own, self.omniscient_rng)
                      if rows else own)
            out.append(self._encode(step, shard, torch.from_numpy(
                np.ascontiguousarray(values, dtype=np.float32)), 0))
        stats = dict(self._own_stats, t_compress_end=time.time(),
                     bytes_sent=sum(m.nbytes for m in out))
        return (*out, stats)

    def apply(self, step: int, *voted: np.ndarray) -> dict[str, Any]:
        """Validate the S voted messages and apply the update to the replica (once per
        shard and step: after a fallback from the direct transport, the shards a worker had
        applied are not applied again), then advance the learning-rate schedule."""
        t_start = time.time()
        skipped = [shard for shard in range(len(self.bounds))
                   if not self._apply_shard(step, shard, voted[shard])]
        self.replica.finish_step(step)
        self.drill_replica(step, self.replica.flat)
        return {"rank": self.rank, "t_apply_start": t_start, "t_apply_end": time.time(),
                "bytes_received": sum(v.nbytes for v in voted), "skipped_shards": skipped}

    def _apply_shard(self, step: int, shard: int, voted: np.ndarray) -> bool:
        """Validate one voted message and apply it to its slice; False if it abstains."""
        applied_step, shards = self._applied
        if applied_step == step and shard in shards:
            return True
        start, stop = self.bounds[shard]
        if not apply_vote(voted, self.replica.flat[start:stop], kind=self.kind, step=step,
                          shard=shard, lr=self.replica.lr,
                          weight_decay=self.config.weight_decay,
                          scratch=self._update[start:stop]):
            return False
        if applied_step != step:
            self._applied = (step, set())
        self._applied[1].add(shard)
        return True

    def evaluate(self, inputs: Any, targets: Any = None) -> dict[str, float]:
        """The workload's test metrics (built-in: ``{"test_accuracy": ...}``)."""
        self.drill_call("evaluate")
        return self.replica.evaluate(inputs, targets)

    def checksum(self) -> str:
        self.drill_call("checksum")
        return self.replica.checksum()

    def parameters(self) -> np.ndarray:
        return self.replica.flat.detach().cpu().numpy().copy()

    def state(self) -> dict[str, Any]:
        self.drill_call("state")
        return self.replica.state()

    def load_state(self, state: dict[str, Any], position: bool = True) -> str:
        """Restore a replica state (``position=False``: model and momentum only, as when a
        restarted worker is re-synced from a live one). Returns the new checksum."""
        self.replica.load_state(state, position=position)
        return self.replica.checksum()

    def seek(self, steps: int) -> None:
        """Move the data stream to where it is after ``steps`` steps (``accumulation_steps``
        mini-batches each)."""
        self.replica.seek(steps * self.config.accumulation_steps)


def overlap_fallback(config: SignSGDConfig, byzantine: bool, device: str) -> str | None:
    """Why a worker cannot overlap its vote with the backward pass and keep the sequential
    round's semantics (None: it can): each case below needs the whole gradient (or the
    whole momentum) before any slice of its message is final, or is untested."""
    if config.transport != "direct":
        return "the objects transport returns the S messages together (use transport=direct)"
    if config.aggregator != "vote":
        return "fp32 messages take the momentum step over the whole vector first"
    if byzantine:
        return "a Byzantine worker's attack reads its whole momentum"
    if config.accumulation_steps != 1:
        return "gradient accumulation sums every micro-batch before any slice is final"
    if config.clip_grad_norm:
        return "clip_grad_norm needs the norm of the whole gradient"
    if config.precision == "fp16":
        return "fp16 loss scaling divides the whole gradient after the backward pass"
    if device != "cpu":
        return f"overlap is untested on {device}"
    return None
