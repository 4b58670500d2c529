"""Byzantine behaviours, as pure functions on the message a worker would send.

A Byzantine worker computes its honest message ``v`` (its momentum, before compression) and
sends ``attack(v, generator)`` instead; the result then goes through the same compression as an
honest message (packed signs for majority vote, fp32 for the mean). Acting before compression
lets one attack definition serve every aggregator. Negation of the message is exactly the
bitwise NOT of its packed signs, except for exact zeros, which negate to zero and so stay +1.

The attacks of the majority-vote paper (Bernstein et al., ICLR 2019, Theorem 2: "sending the
negation of their sign gradient estimate") and the usual stress tests:

- ``negate``: ``-v``.
- ``scaled_negate``: ``-scale * v``; ruins the fp32 mean, but a sign cannot carry the scale,
  so against majority vote it is exactly ``negate``.
- ``random``: i.i.d. standard normal noise (random signs after compression), ignoring ``v``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Attack = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def negate_attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return -v


def scaled_negate_attack(scale: float) -> Attack:
    def attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -scale * v

    return attack


def random_attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)


ATTACKS = ("negate", "scaled_negate", "random")


def make_attack(name: str, scale: float = 10.0) -> Attack:
    """The attack called ``name`` (one of ``ATTACKS``)."""
    if name == "negate":
        return negate_attack
    if name == "scaled_negate":
        return scaled_negate_attack(scale)
    if name == "random":
        return random_attack
    raise ValueError(f"attack={name!r} is not one of {list(ATTACKS)}")
