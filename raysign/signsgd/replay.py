"""Replay of a recorded run: Algorithm 1 re-computed in numpy from who voted in each round.

A run with faults (``scripts/chaos.py``) records, per step and vote shard, the sorted ranks
whose message counted in that shard's vote (``record["participation"]``), and every re-sync
of a worker (the ranks re-synced after a step, and the replica they were copied from). From
that record, the run's config, its seed and data, this module computes Algorithm 1 of
Bernstein et al. (ICLR 2019) again in this process, written from the algorithm and the
documented conventions, not from the code that ran:

- every worker starts from the model ``model_fn()`` builds after ``torch.manual_seed(seed)``;
  its data shard is part ``rank`` of ``np.array_split`` of the permutation
  ``default_rng(seed).permutation(n)`` (sorted), its batches follow the permutations of
  ``default_rng([seed, rank])``, a fresh one whenever the next batch no longer fits;
- step t: every worker's gradient g at the common parameters x (torch autograd, the only use
  of torch here), momentum ``m <- beta m + (1 - beta) g`` in float32 (the multiply-add of the
  second term rounded once, as a fused multiply-add does; beta = 0: m = g);
- per vote shard s (contiguous slices whose starts are multiples of 64): the vote
  ``V = sign(sum over the counted ranks of sign(m))`` with sign(0) = +1 and ties -> +1; a
  shard with no counted rank is not updated;
- ``x <- (1 - lr lambda) x - lr V`` in float32 on each voted slice;
- after step t, a worker re-synced from replica ``source`` takes its momentum (the
  parameters are the same on every replica; its data stream goes on where it would be).

Only the constant learning rate and one mini-batch per step are replayed
(``ReplayError`` otherwise). The result's parameters are compared bit for bit with the run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

WORD = 64

GradientFn = Callable[[int, np.ndarray], np.ndarray]


class ReplayError(ValueError):
    """The record cannot be replayed (a missing participation, an unsupported config)."""


@dataclass
class ReplayResult:
    parameters: np.ndarray  # float32 [d], after the last step
    votes: list[list[np.ndarray | None]] = field(default_factory=list)  # per step, per shard
    ties: int = 0  # coordinates whose counted signs summed to zero


def vote_slices(d: int, shards: int) -> list[tuple[int, int]]:
    """The S contiguous slices of range(d), starts at multiples of 64 (whole 64-bit words),
    each shard ``words * k // S`` words from the start."""
    words = -(-d // WORD)
    edges = [min(d, WORD * (words * k // shards)) for k in range(shards + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def signs(values: np.ndarray) -> np.ndarray:
    """+1 where ``values >= 0`` (zeros and -0.0 too), else -1, as int32."""
    return np.where(values < 0, -1, 1).astype(np.int32)


def majority(momenta: np.ndarray) -> tuple[np.ndarray, int]:
    """The vote of the rows [k, n] and the number of ties (sum zero -> +1)."""
    total = signs(momenta).sum(axis=0)
    return np.where(total < 0, -1.0, 1.0).astype(np.float32), int((total == 0).sum())


def momentum_update(m: np.ndarray, g: np.ndarray, beta: float) -> np.ndarray:
    """float32 ``beta m + (1 - beta) g``: ``beta m`` rounded to float32, then the multiply-add
    of ``(1 - beta) g`` rounded once (the product of two float32 numbers is exact in float64)."""
    if beta == 0.0:
        return g.astype(np.float32)
    scaled = (m * np.float32(beta)).astype(np.float32)
    alpha = np.float64(np.float32(1.0 - beta))
    return (scaled.astype(np.float64) + alpha * g.astype(np.float64)).astype(np.float32)


def replay_votes(x0: np.ndarray, gradient: GradientFn, num_workers: int,
                 participation: Sequence[Sequence[Sequence[int] | None]], *, lr: float,
                 beta: float, weight_decay: float = 0.0, shards: int = 1,
                 resyncs: Sequence[Mapping[str, Any]] = ()) -> ReplayResult:
    """Algorithm 1 from ``x0`` for ``len(participation)`` steps. ``gradient(rank, x)``: worker
    ``rank``'s next stochastic gradient at ``x`` (called once per rank and step, in rank
    order). ``participation[t - 1][s]``: the ranks counted in shard s of step t.
    ``resyncs``: ``{"step", "ranks", "source"}`` in the order they happened; after step t the
    ranks take the source's momentum."""
    x = np.array(x0, dtype=np.float32, copy=True)
    d = x.size
    bounds = vote_slices(d, shards)
    momenta = np.zeros((num_workers, d), np.float32)
    result = ReplayResult(x)
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for event in resyncs:
        by_step.setdefault(int(event["step"]), []).append(event)
    decay = np.float32(1.0 - lr * weight_decay)
    step_size = np.float32(lr)
    for step, counted in enumerate(participation, start=1):
        if counted is None or len(counted) != shards or any(c is None for c in counted):
            raise ReplayError(f"step {step}: participation {counted!r} does not name the "
                              f"counted ranks of {shards} shard(s)")
        for rank in range(num_workers):
            momenta[rank] = momentum_update(momenta[rank], gradient(rank, x), beta)
        x = x.copy()
        votes: list[np.ndarray | None] = []
        for (start, stop), ranks in zip(bounds, counted, strict=True):
            if not ranks:
                votes.append(None)
                continue
            vote, ties = majority(momenta[list(ranks), start:stop])
            result.ties += ties
            part = x[start:stop]
            if weight_decay:
                part = decay * part
            x[start:stop] = part - step_size * vote
            votes.append(vote)
        result.votes.append(votes)
        for event in by_step.get(step, ()):
            for rank in event["ranks"]:
                momenta[int(rank)] = momenta[int(event["source"])]
    result.parameters = x
    return result


class ModelGradients:
    """Every worker's gradients for a model and array data set, seeded and sharded as the
    module docstring says. ``gradient(rank, x)`` is worker ``rank``'s next mini-batch
    gradient at the flat parameters ``x``."""

    def __init__(self, model_fn: Callable[[], torch.nn.Module],
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 inputs: np.ndarray, targets: np.ndarray, *, num_workers: int, seed: int,
                 batch_size: int):
        torch.manual_seed(seed)
        self.model = model_fn()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_fn = loss_fn
        order = np.random.default_rng(seed).permutation(len(targets))
        parts = [np.sort(part) for part in np.array_split(order, num_workers)]
        self.data = [(inputs[part], targets[part]) for part in parts]
        self.rngs = [np.random.default_rng([seed, rank]) for rank in range(num_workers)]
        self.orders = [rng.permutation(len(part)) for rng, part in zip(self.rngs, parts,
                                                                        strict=True)]
        self.cursors = [0] * num_workers
        self.batch_size = batch_size

    def initial_parameters(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in self.params]).numpy().copy()

    def __call__(self, rank: int, x: np.ndarray) -> np.ndarray:
        inputs, targets = self.data[rank]
        if self.cursors[rank] + self.batch_size > len(targets):
            self.orders[rank] = self.rngs[rank].permutation(len(targets))
            self.cursors[rank] = 0
        batch = self.orders[rank][self.cursors[rank]: self.cursors[rank] + self.batch_size]
        self.cursors[rank] += self.batch_size
        offset = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(torch.from_numpy(x[offset: offset + p.numel()]).view_as(p))
                offset += p.numel()
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(torch.from_numpy(inputs[batch])),
                            torch.from_numpy(targets[batch]))
        loss.backward()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.params]).numpy()


SUPPORTED = {"accumulation_steps": 1, "lr_schedule": "constant", "precision": "fp32",
             "clip_grad_norm": 0.0, "aggregator": "vote", "num_byzantine": 0}


def replay_run(config: Mapping[str, Any], model_fn, loss_fn, inputs: np.ndarray,
               targets: np.ndarray, records: Sequence[Mapping[str, Any]],
               resyncs: Sequence[Mapping[str, Any]] = ()) -> ReplayResult:
    """Replay a run from its config (``config.json`` as a dict), the workload's model, loss and
    training arrays, its step records (``metrics.jsonl``: ``participation`` per step, in step
    order from 1) and its re-syncs. Uses one torch thread (a multi-threaded reduction may
    round differently from the workers')."""
    unsupported = {k: config.get(k) for k, v in SUPPORTED.items() if config.get(k, v) != v}
    if unsupported:
        raise ReplayError(f"the replay covers {SUPPORTED}; this run has {unsupported}")
    steps = [int(r["step"]) for r in records]
    if steps != list(range(1, len(steps) + 1)):
        raise ReplayError(f"records must hold steps 1..{len(steps)} in order, got {steps[:8]}...")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gradients = ModelGradients(model_fn, loss_fn, inputs, targets,
                                   num_workers=int(config["num_workers"]),
                                   seed=int(config["seed"]),
                                   batch_size=int(config["batch_size"]))
        return replay_votes(gradients.initial_parameters(), gradients,
                            int(config["num_workers"]),
                            [r.get("participation") for r in records], lr=float(config["lr"]),
                            beta=float(config["momentum"]),
                            weight_decay=float(config.get("weight_decay", 0.0)),
                            shards=int(config.get("vote_shards", 1)), resyncs=resyncs)
    finally:
        torch.set_num_threads(threads)
