"""Distributed signSGD with majority vote: one worker's computation.

Algorithm 1 of Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with majority vote is
communication efficient and fault tolerant" (ICLR 2019), for worker i of M:

1. compute a stochastic gradient g_i on the worker's own mini-batch;
2. update momentum ``m_i <- beta m_i + (1 - beta) g_i`` (beta = 0: signSGD);
3. send ``sign(m_i)`` (packed, 1 bit per parameter) to the vote;
4. receive ``V = sign(sum_i sign(m_i))`` and apply ``x <- x - lr (V + lambda x)``.

The ``mean`` aggregator replaces 3-4 by sending fp32 ``m_i`` and applying
``x <- x - lr (mean_i m_i + lambda x)``: parameter-server SGD with momentum, the baseline of
the paper. ``Replica`` is steps 1, 2 and 4 for one worker, with no Ray in sight; the actors in
``actors/`` pack what it computes into messages and move them around.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from raysign.optim import momentum
from raysign.signs import unpack_signs
from raysign.signsgd.attacks import ATTACKS, make_attack
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model


class Replica:
    """One worker's model replica, data shard, momentum and (optionally) attack.

    All replicas of a run are built from the same seed, so they start bit-identical and stay
    so as long as they apply the same updates in the same order.
    """

    def __init__(self, config: SignSGDConfig, rank: int, images: np.ndarray, labels: np.ndarray,
                 device: str | torch.device = "cpu", byzantine: bool = False):
        self.config = config
        self.rank = rank
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.model: nn.Module = build_model(config.model).to(self.device)
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
        self.images = torch.as_tensor(np.ascontiguousarray(images))
        self.labels = torch.as_tensor(np.ascontiguousarray(labels))
        self.batch_rng = np.random.default_rng([config.seed, rank])
        # Omniscient attacks need the honest messages and are crafted by the worker actor.
        plain = byzantine and config.attack in ATTACKS
        self.attack = make_attack(config.attack, config.attack_scale) if plain else None
        self.attack_generator = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.epoch = 0
        self._order = self.batch_rng.permutation(len(self.labels))
        self._cursor = 0
        self.loss_fn = nn.CrossEntropyLoss()

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cursor + self.config.batch_size > len(self._order):
            self.epoch += 1
            self._order = self.batch_rng.permutation(len(self.labels))
            self._cursor = 0
        idx = torch.from_numpy(self._order[self._cursor : self._cursor + self.config.batch_size])
        self._cursor += self.config.batch_size
        return self.images[idx].to(self.device), self.labels[idx].to(self.device)

    def seek(self, batches: int) -> None:
        """Put the data stream where it is after ``batches`` mini-batches from the start,
        without computing them: a restarted worker rejoining after step ``batches`` draws the
        same next batch as if it had never died. (The attack generator is not advanced.)"""
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        per_epoch = len(self.labels) // self.config.batch_size
        self.batch_rng = np.random.default_rng([self.config.seed, self.rank])
        self.epoch, self._cursor = 0, 0
        self._order = self.batch_rng.permutation(len(self.labels))
        if batches == 0:
            return
        # _next_batch draws an epoch's permutation lazily, when the next batch no longer fits.
        epochs, rest = divmod(batches - 1, per_epoch)
        for _ in range(epochs):
            self._order = self.batch_rng.permutation(len(self.labels))
        self.epoch, self._cursor = epochs, (rest + 1) * self.config.batch_size

    def gradient(self) -> tuple[torch.Tensor, float]:
        """Steps 1: the flat stochastic gradient [d] on the next mini-batch, and its loss."""
        self.model.train()
        x, y = self._next_batch()
        for p in self.params:
            p.grad = None
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in self.params])
        return grad, float(loss.detach())

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
        """Step 4 on the slice [start, stop): ``x <- x - lr (V + lambda x)``, V from packed."""
        stop = self.d if stop is None else stop
        part = self.flat[start:stop]
        if self.config.weight_decay:
            part.mul_(1.0 - self.config.lr * self.config.weight_decay)
        step = unpack_signs(packed.to(self.device), stop - start, scale=self.config.lr,
                            dtype=self.flat.dtype)
        part.sub_(step)

    @torch.no_grad()
    def apply_mean(self, mean: torch.Tensor, start: int = 0, stop: int | None = None) -> None:
        """The mean aggregator's step 4 on [start, stop): ``x <- x - lr (mean + lambda x)``."""
        stop = self.d if stop is None else stop
        part = self.flat[start:stop]
        if self.config.weight_decay:
            part.mul_(1.0 - self.config.lr * self.config.weight_decay)
        part.sub_(mean.to(self.device), alpha=self.config.lr)

    @torch.no_grad()
    def accuracy(self, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
        """Top-1 accuracy on (images, labels)."""
        self.model.eval()
        correct = 0
        for start in range(0, len(labels), batch):
            x = torch.from_numpy(np.array(images[start : start + batch]))
            y = torch.from_numpy(np.array(labels[start : start + batch]))
            correct += int((self.model(x.to(self.device)).argmax(1).cpu() == y).sum())
        return correct / len(labels)

    def checksum(self) -> str:
        """A digest of the parameters' exact bytes."""
        return hashlib.blake2b(self.flat.detach().cpu().numpy().tobytes(),
                               digest_size=16).hexdigest()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: parameters, buffers (batch-norm
        statistics), momentum, data position and random-generator states. Only tensors,
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
        }

    def load_state(self, state: dict[str, Any], *, position: bool = True) -> None:
        """Restore ``state()``; with ``position=False`` only the model and momentum (a
        restarted worker re-synced from another replica keeps its own data stream)."""
        with torch.no_grad():
            self.flat.copy_(state["flat"].to(self.device))
            buffers = dict(self.model.named_buffers())
            for name, value in state["buffers"].items():
                buffers[name].copy_(value.to(self.device))
            if state["momentum"] is not None:
                self.momentum_state = state["momentum"].to(self.device).clone()
        if position:
            self.epoch, self._cursor = int(state["epoch"]), int(state["cursor"])
            self._order = state["order"].numpy().copy()
            rng = dict(state["batch_rng"])
            rng["state"] = {k: int(v) for k, v in rng["state"].items()}
            self.batch_rng.bit_generator.state = rng
            self.attack_generator.set_state(state["attack_rng"])
