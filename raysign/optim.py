"""Signum and signSGD as small composable pieces and as a ``torch.optim.Optimizer``.

Signum (Bernstein et al., ICML 2018, Algorithm 1 / Algorithm 3 of the ICLR 2019 paper with
M = 1)::

    m <- beta * m + (1 - beta) * g          # momentum; beta = 0 is signSGD
    x <- x - lr * (sign(m) + weight_decay * x)

with ``sign(0) = +1`` as everywhere in raysign (see ``raysign.signs``). Two options from the
follow-up literature:

- ``scaled=True``: the sign is scaled by ``mean(|m|)`` of each tensor, so the step has the
  magnitude of the gradient (the "scaled sign" compressor of Karimireddy et al., 2019).
- ``error_feedback=True``: EF-signSGD (Karimireddy, Rebjock, Stich, Jaggi, ICML 2019,
  Algorithm 1): ``p = lr * m + e; delta = mean(|p|) * sign(p); x <- x - delta - lr*wd*x;
  e <- p - delta``. The compression error is remembered and added back next step.

The pieces follow optax: each is a pair of pure functions ``init(x) -> state`` and
``update(u, state) -> (u', state')`` in a ``Transform``, so the distributed workers and this
optimizer run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch


class Transform(NamedTuple):
    """A gradient transformation: ``init(like) -> state``, ``update(u, state) -> (u, state)``."""

    init: Callable[[torch.Tensor], Any]
    update: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def sign(u: torch.Tensor) -> torch.Tensor:
    """+1 where ``u >= 0``, -1 elsewhere (exact zeros give +1), in ``u``'s dtype."""
    return torch.where(u < 0, -1.0, 1.0).to(u.dtype)


def momentum(beta: float) -> Transform:
    """Exponential moving average ``m <- beta m + (1 - beta) u`` (no debiasing, as Signum)."""

    def init(like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like)

    def update(u: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if beta == 0.0:
            return u, m
        m.mul_(beta).add_(u, alpha=1.0 - beta)
        return m, m

    return Transform(init, update)


def scale_by_sign(scaled: bool = False) -> Transform:
    """``sign(u)``, or ``mean(|u|) * sign(u)`` when ``scaled``."""

    def init(like: torch.Tensor) -> None:
        return None

    def update(u: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        s = sign(u)
        if scaled:
            s = s * u.abs().mean()
        return s, state

    return Transform(init, update)


def error_feedback(compress: Transform) -> Transform:
    """Wrap a compressor with error feedback: send ``C(u + e)``, keep ``e <- u + e - C(u + e)``.
    ``u`` is the step to take (already multiplied by the learning rate)."""

    def init(like: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return torch.zeros_like(like), compress.init(like)

    def update(u: torch.Tensor, state: tuple[torch.Tensor, Any]):
        error, inner = state
        corrected = u + error
        delta, inner = compress.update(corrected, inner)
        error.copy_(corrected - delta)
        return delta, (error, inner)

    return Transform(init, update)


class Signum(torch.optim.Optimizer):
    """Signum / signSGD for one process. ``momentum=0`` gives signSGD.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (> 0).
        momentum: beta in [0, 1).
        weight_decay: lambda >= 0, applied as ``x <- x - lr * (step + lambda * x)``.
        scaled: scale each tensor's sign by the mean absolute value of its momentum.
        error_feedback: EF-signSGD (implies the scaled sign, as in Karimireddy et al.).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, scaled: bool = False,
                 error_feedback: bool = False):
        if not lr > 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum} must be in [0, 1)")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, scaled=scaled,
                        error_feedback=error_feedback)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            smooth = momentum(group["momentum"])
            ef = group["error_feedback"]
            compress = scale_by_sign(scaled=group["scaled"] or ef)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum"] = smooth.init(p)
                    if ef:
                        state["error"] = error_feedback(compress).init(p)
                m, state["momentum"] = smooth.update(p.grad, state["momentum"])
                decay = p * (lr * wd) if wd else None
                if ef:
                    delta, state["error"] = error_feedback(compress).update(lr * m,
                                                                            state["error"])
                else:
                    s, _ = compress.update(m, None)
                    delta = lr * s
                p.sub_(delta)
                if decay is not None:
                    p.sub_(decay)
        return loss
