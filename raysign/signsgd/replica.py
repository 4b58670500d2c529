"""Distributed signSGD with majority vote: one worker's computation.

Algorithm 1 of Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with majority vote is
communication efficient and fault tolerant" (ICLR 2019), for worker i of M:

1. compute a stochastic gradient g_i on the worker's own mini-batch;
2. update momentum ``m_i <- beta m_i + (1 - beta) g_i`` (beta = 0: signSGD);
3. send ``sign(m_i)`` (packed, 1 bit per parameter) to the vote;
4. receive ``V = sign(sum_i sign(m_i))`` and apply ``x <- x - lr (V + lambda x)``.

The ``mean`` aggregator replaces 3-4 by sending fp32 ``m_i`` and applying
``x <- x - lr (mean_i m_i + lambda x)``: parameter-server SGD with momentum, the baseline of
the paper. ``Replica`` is steps 1 and 2 for one worker (and 4 for a single process,
``apply_signs``), with no Ray in sight; the actors in ``actors/`` pack what it computes into
messages, move them around and apply the vote (``raysign.signsgd.exchange``).

Around those steps, the training features a user expects (all off by default, and then the
computation is exactly the one above):

- step 1 may average the gradients of ``accumulation_steps`` consecutive mini-batches, run
  the forward pass and loss under bf16 / fp16 autocast (``precision``), and clip the result
  to global norm ``clip_grad_norm`` (``g <- g min(1, c / ||g||)``) before momentum;
- step 4 uses the learning rate lr_t of a schedule (``lr_schedule`` or the workload's
  ``lr_scheduler_fn``), advanced once per step on every replica (``finish_step``).

The model, loss and evaluation come from a ``raysign.signsgd.workload.WorkloadFunctions``
(None: the built-in model the config names, cross-entropy and accuracy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from raysign.optim import momentum
from raysign.signs import subtract_signs
from raysign.signsgd.attacks import ATTACKS, make_attack
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.workload import (
    FP16_LOSS_SCALE,
    WorkloadFunctions,
    autocast,
    builtin_functions,
    config_lr_scheduler_fn,
    eval_batches,
    shard_batches,
)


class Replica:
    """One worker's model replica, data shard, momentum, learning-rate schedule and
    (optionally) attack.

    ``inputs, targets``: the shard as arrays [n, ...], or ``inputs`` a torch Dataset of
    (input, target) items and ``targets`` None. All replicas of a run are built from the same
    seed, so they start bit-identical and stay so as long as they apply the same updates in
    the same order.
    """

    def __init__(self, config: SignSGDConfig, rank: int, inputs: Any, targets: Any = None,
                 device: str | torch.device = "cpu", byzantine: bool = False,
                 functions: WorkloadFunctions | None = None):
        self.config = config
        self.rank = rank
        self.device = torch.device(device)
        functions = functions or builtin_functions(config.model)
        torch.manual_seed(config.seed)
        self.model: nn.Module = functions.model_fn().to(self.device)
        self.loss_fn = functions.loss_fn
        self.eval_fn = functions.eval_fn
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # One flat buffer holds every parameter; the parameters are views into it.
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params]).contiguous()
        offset = 0
        for p in self.params:
            p.data = self.flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        self.d = self.flat.numel()
        self._momentum = momentum(config.momentum)
        self.momentum_state = self._momentum.init(self.flat)
        # A plain SGD over the flat parameters only carries the learning rate that the
        # schedule sets (param_groups[0]["lr"]); the replica applies the updates itself.
        self.lr_holder = torch.optim.SGD([self.flat], lr=config.lr)
        scheduler_fn = functions.lr_scheduler_fn or config_lr_scheduler_fn(config)
        self.scheduler = scheduler_fn(self.lr_holder) if scheduler_fn is not None else None
        self.steps_done = 0
        self.data = shard_batches(inputs, targets)
        self.batch_rng = np.random.default_rng([config.seed, rank])
        # Omniscient attacks need the honest messages and are crafted by the worker actor.
        plain = byzantine and config.attack in ATTACKS
        self.attack = make_attack(config.attack, config.attack_scale) if plain else None
        self.attack_generator = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.epoch = 0
        self._order = self.batch_rng.permutation(len(self.data))
        self._cursor = 0

    @property
    def lr(self) -> float:
        """The learning rate of the current step."""
        return self.lr_holder.param_groups[0]["lr"]

    def _next_batch(self) -> tuple[Any, Any]:
        if self._cursor + self.config.batch_size > len(self._order):
            self.epoch += 1
            self._order = self.batch_rng.permutation(len(self.data))
            self._cursor = 0
        x, y = self.data.batch(self._order[self._cursor : self._cursor + self.config.batch_size])
        self._cursor += self.config.batch_size
        return _to(x, self.device), _to(y, self.device)

    def seek(self, batches: int) -> None:
        """Put the data stream where it is after ``batches`` mini-batches from the start
        (``accumulation_steps`` per step), without computing them: a restarted worker
        rejoining after step t (``batches = t * accumulation_steps``) draws the same next
        batch as if it had never died. (The attack generator is not advanced.)"""
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        per_epoch = len(self.data) // self.config.batch_size
        self.batch_rng = np.random.default_rng([self.config.seed, self.rank])
        self.epoch, self._cursor = 0, 0
        self._order = self.batch_rng.permutation(len(self.data))
        if batches == 0:
            return
        # _next_batch draws an epoch's permutation lazily, when the next batch no longer fits.
        epochs, rest = divmod(batches - 1, per_epoch)
        for _ in range(epochs):
            self._order = self.batch_rng.permutation(len(self.data))
        self.epoch, self._cursor = epochs, (rest + 1) * self.config.batch_size

    def gradient(self, out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Step 1: the flat stochastic gradient [d] fp32 and the loss: the mean over
        ``accumulation_steps`` consecutive mini-batches, clipped to global norm
        ``clip_grad_norm`` when that is set. ``out``: a [d] fp32 buffer to write it into
        (kept from step to step, it saves mapping a fresh [d] every step); None: a new
        tensor."""
        self.model.train()
        steps = self.config.accumulation_steps
        scale = FP16_LOSS_SCALE if self.config.precision == "fp16" else None
        total, loss_sum = None, 0.0
        for _ in range(steps):
            x, y = self._next_batch()
            for p in self.params:
                p.grad = None
            with autocast(self.config.precision, self.device):
                loss = self.loss_fn(self.model(x), y)
            (loss if scale is None else loss * scale).backward()
            grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                     for p in self.params]
            grad = torch.cat(grads, out=out) if total is None and out is not None \
                else torch.cat(grads)
            # Summed in micro-batch order, then divided once: the mean momentum sees.
            total = grad if total is None else total.add_(grad)
            loss_sum += float(loss.detach())
        if steps > 1:
            total.div_(steps)
        if scale is not None:
            total.div_(scale)
        if self.config.clip_grad_norm:
            norm = float(torch.linalg.vector_norm(total, dtype=torch.float64))
            if norm > self.config.clip_grad_norm:
                total.mul_(self.config.clip_grad_norm / norm)
        return total, loss_sum / steps

    def gradient_in_slices(self, bounds: list[tuple[int, int]],
                           on_ready: Callable[[int, torch.Tensor], None],
                           out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Step 1 for one mini-batch, handing out slices of the gradient while the backward
        pass still runs (issue #21: overlap the vote with the backward pass).
        ``bounds``: contiguous slices [start, stop) of the flat vector, in order. Each
        parameter's gradient is copied into one flat buffer [d] fp32 the moment it is final
        (``register_post_accumulate_grad_hook``), and ``on_ready(s, grad[start:stop])`` is
        called as soon as every parameter overlapping slice s has its gradient: the last
        layers, at the end of the flat vector, come first. The values are those of
        ``gradient()`` bit for bit (the same backward, copied instead of concatenated);
        parameters the loss does not reach get zeros, and their slices are handed out after
        the backward pass, last slice first. ``out``: the flat buffer [d] fp32 (None: a new
        one). Returns the whole gradient [d] and the loss.

        Only the plain step: one micro-batch, no clipping, no fp16 loss scale (each needs
        the whole gradient before any slice of it is final); ``ValueError`` otherwise."""
        cfg = self.config
        if cfg.accumulation_steps != 1 or cfg.clip_grad_norm or cfg.precision == "fp16":
            raise ValueError("gradient_in_slices needs accumulation_steps=1, clip_grad_norm=0 "
                             f"and no fp16 loss scale; got {cfg.accumulation_steps}, "
                             f"{cfg.clip_grad_norm}, {cfg.precision!r}")
        grad = torch.empty_like(self.flat) if out is None else out
        ranges = self._param_ranges()
        # Per slice, how many of the parameters overlapping it are still waiting for their
        # gradient; a slice is handed out when its count reaches zero.
        waiting = [sum(1 for a, b in ranges if a < stop and b > start) for start, stop in bounds]
        covers = [[s for s, (start, stop) in reversed(list(enumerate(bounds)))
                   if a < stop and b > start] for a, b in ranges]  # last slice first
        done = [False] * len(self.params)

        def ready(i: int) -> None:
            done[i] = True
            for s in covers[i]:
                waiting[s] -= 1
                if waiting[s] == 0:
                    on_ready(s, grad[slice(*bounds[s])])

        def hook(i: int) -> Callable[[torch.Tensor], None]:
            def copy(p: torch.Tensor) -> None:
                a, b = ranges[i]
                grad[a:b].copy_(p.grad.reshape(-1))
                ready(i)
            return copy

        self.model.train()
        x, y = self._next_batch()
        for p in self.params:
            p.grad = None
        handles = [p.register_post_accumulate_grad_hook(hook(i))
                   for i, p in enumerate(self.params)]
        try:
            with autocast(cfg.precision, self.device):
                loss = self.loss_fn(self.model(x), y)
            loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        # Parameters without a gradient (not reached by the loss): zeros, as gradient() gives.
        for i in reversed(range(len(self.params))):
            if not done[i]:
                grad[slice(*ranges[i])].zero_()
                ready(i)
        return grad, float(loss.detach())

    def _param_ranges(self) -> list[tuple[int, int]]:
        """Each parameter's [start, stop) in the flat vector."""
        ranges, offset = [], 0
        for p in self.params:
            ranges.append((offset, offset + p.numel()))
            offset += p.numel()
        return ranges

    def momentum_and_attack(self, grad: torch.Tensor) -> torch.Tensor:
        """Step 2, then the attack for a Byzantine replica: updates the momentum with ``grad``
        [d] and returns the fp32 vector [d] to compress and send (the momentum itself, or the
        attack's output; not yet a wire message)."""
        m, self.momentum_state = self._momentum.update(grad, self.momentum_state)
        if self.attack is not None:
            return self.attack(m, self.attack_generator)
        return m

    @torch.no_grad()
    def apply_signs(self, packed: torch.Tensor, start: int = 0, stop: int | None = None) -> None:
        """Step 4 on the slice [start, stop): ``x <- x (1 - lr_t lambda) - lr_t V``, V from
        ``packed`` (``raysign.signs.subtract_signs``, as the workers apply a vote)."""
        stop = self.d if stop is None else stop
        decay = 1.0 - self.lr * self.config.weight_decay if self.config.weight_decay else 1.0
        subtract_signs(packed.to(self.device), self.flat[start:stop], scale=self.lr,
                       decay=decay)

    def finish_step(self, step: int) -> None:
        """After every slice of step ``step`` was applied (or abstained): advance the
        learning-rate schedule once. Idempotent per step, so a round retried on another
        transport does not advance it twice."""
        if step <= self.steps_done:
            return
        self.steps_done = step
        if self.scheduler is not None:
            # The holder has no gradients, so its step changes nothing; torch's schedulers
            # expect an optimizer step before each of theirs.
            self.lr_holder.step()
            self.scheduler.step()

    @torch.no_grad()
    def evaluate(self, inputs: Any, targets: Any = None) -> dict[str, float]:
        """The workload's metrics on a test set given as arrays (``inputs, targets``) or a
        Dataset (``targets`` None), in eval mode, under the run's autocast."""
        self.model.eval()
        with autocast(self.config.precision, self.device):
            metrics = self.eval_fn(self.model, eval_batches(inputs, targets, self.device))
        return {str(k): float(v) for k, v in metrics.items()}

    def checksum(self) -> str:
        """A digest of the parameters' exact bytes."""
        return hashlib.blake2b(self.flat.detach().cpu().numpy().tobytes(),
                               digest_size=16).hexdigest()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: parameters, buffers (batch-norm
        statistics), momentum, learning-rate schedule, data position and random-generator
        states. Only tensors,
        numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it."""
        rng = self.batch_rng.bit_generator.state
        return {
            "flat": self.flat.detach().cpu().clone(),
            "buffers": {k: v.detach().cpu().clone() for k, v in self.model.named_buffers()},
            "momentum": (self.momentum_state.detach().cpu().clone()
                         if isinstance(self.momentum_state, torch.Tensor) else None),
            "epoch": self.epoch,
            "cursor": self._cursor,
            "order": torch.from_numpy(self._order.copy()),
            "batch_rng": {"bit_generator": rng["bit_generator"],
                          "state": {k: str(v) for k, v in rng["state"].items()},
                          "has_uint32": int(rng["has_uint32"]), "uinteger": int(rng["uinteger"])},
            "attack_rng": self.attack_generator.get_state(),
            "schedule": {"steps_done": self.steps_done, "lr": self.lr,
                         "scheduler": (self.scheduler.state_dict()
                                       if self.scheduler is not None else {})},
        }

    def load_state(self, state: dict[str, Any], *, position: bool = True) -> None:
        """Restore ``state()``; with ``position=False`` only the model, momentum and
        learning-rate schedule (a restarted worker re-synced from another replica keeps its own
        data stream)."""
        with torch.no_grad():
            self.flat.copy_(state["flat"].to(self.device))
            buffers = dict(self.model.named_buffers())
            for name, value in state["buffers"].items():
                buffers[name].copy_(value.to(self.device))
            if state["momentum"] is not None:
                self.momentum_state = state["momentum"].to(self.device).clone()
        if "schedule" in state:  # checkpoints before schedules: a constant rate, step unknown
            schedule = state["schedule"]
            self.steps_done = int(schedule["steps_done"])
            self.lr_holder.param_groups[0]["lr"] = float(schedule["lr"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(schedule["scheduler"])
        if position:
            self.epoch, self._cursor = int(state["epoch"]), int(state["cursor"])
            self._order = state["order"].numpy().copy()
            rng = dict(state["batch_rng"])
            rng["state"] = {k: int(v) for k, v in rng["state"].items()}
            self.batch_rng.bit_generator.state = rng
            self.attack_generator.set_state(state["attack_rng"])


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value
