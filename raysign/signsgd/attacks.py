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

Omniscient attacks (``OMNISCIENT_ATTACKS``) also see the honest workers' messages of the
round, so they are crafted where all messages meet (the vote actor or the driver), as numpy
functions ``attack(honest: float32 [h, d], own: float32 [d], rng) -> float32 [d]`` built by
``make_crafted_attack(name, num_byzantine, ...)`` (the three attacks above have such forms
too, so one call site serves all six; ``craft`` is the one-shot form). ``n = h + f`` is the
number of workers, ``f = num_byzantine``:

- ``colluding``: every adversary sends the opposite of the honest majority's vote,
  ``-sign(sum_i sign(honest_i))`` with the vote's own conventions (``sign(0) = +1``, a tied
  coordinate votes +1, so the adversaries send -1 there): the strongest attack on a majority
  vote, since it flips every coordinate whose honest margin is below ``f``. Its magnitude is
  the honest messages' mean absolute value (one scalar), so against an fp32 aggregator it
  looks like an honest-sized message.
- ``alie``: "a little is enough" (Baruch, Baruch, Goldberg, NeurIPS 2019, Sec. 3 and Alg. 3):
  ``mean_i honest_i - z * std_i honest_i`` per coordinate, with the sample standard deviation
  (ddof=1, as ByzFL) and, unless ``z`` is given, the paper's
  ``z_max = Phi^-1((n - s) / n)``, ``s = floor(n/2 + 1) - f``.
- ``ipm``: inner-product manipulation (Xie, Koyejo, Gupta, UAI 2020, "Fall of empires",
  Sec. 3): ``-epsilon * mean_i honest_i``; a small ``epsilon`` (0.1) against median and Krum,
  a large one against the mean.

All of them are coordinate-wise given the honest messages, so a vote shard can craft them on
its own slice; ``colluding`` needs only the honest signs, which a majority vote already has.

A researcher's own attack is named by its import path ``"package.module:name"``
(``raysign.signsgd.user_callables``) and has one of the two signatures above, told apart by
its number of positional parameters:

- two, ``attack(v: torch.Tensor [d] float32, generator: torch.Generator) -> float32 [d]``:
  applied by each Byzantine worker to its own message, like ``negate``;
- three, ``attack(honest: float32 [h, d], own: float32 [d], rng: np.random.Generator) ->
  float32 [d]`` (numpy): crafted from the round's honest messages, like ``alie``; with
  several vote shards it is called on each shard's slice, so it should be coordinate-wise.

A crafted attack's keyword parameter ``num_byzantine`` is bound to the run's ``f`` (the
worker builds it with ``make_crafted_attack(name, f)``). A per-worker attack must return a new
tensor: ``v`` is the worker's momentum buffer itself. ``ATTACKS`` and
``OMNISCIENT_ATTACKS`` answer ``in`` for such paths by their kind, so every place that
routes an attack by ``name in ATTACKS`` / ``name in OMNISCIENT_ATTACKS`` routes a user's
attack the same way; ``check_attack`` calls it once on a tiny input.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import torch

from raysign.signsgd.user_callables import is_import_path, load_callable

Attack = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def negate_attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return -v


def scaled_negate_attack(scale: float) -> Attack:
    def attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return -scale * v

    return attack


def random_attack(v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device)


PER_WORKER, CRAFTED = "per_worker", "crafted"


def user_attack(path: str, num_byzantine: int = 0) -> tuple[str, Callable[..., object]]:
    """A user's attack at ``path``: its kind (``PER_WORKER`` for two positional parameters,
    ``CRAFTED`` for three) and the callable, with ``num_byzantine`` bound if it takes a
    keyword of that name."""
    fn = load_callable(path, "attack")
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        raise ValueError(f"attack={path!r} has no inspectable signature") from None
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    kinds = {2: PER_WORKER, 3: CRAFTED}
    if len(positional) not in kinds:
        raise ValueError(f"attack={path!r} takes {len(positional)} positional parameters; "
                         "an attack takes (v, generator) or (honest, own, rng)")
    if any(p.name == "num_byzantine" for p in parameters):
        fn = functools.partial(fn, num_byzantine=num_byzantine)
    return kinds[len(positional)], fn


class AttackNames(tuple):
    """A tuple of attack names whose ``in`` also holds for a user's import path of the
    attacks' ``kind`` (``PER_WORKER`` or ``CRAFTED``; an unimportable path raises)."""

    kind: str

    def __new__(cls, names: tuple[str, ...], kind: str) -> AttackNames:
        self = super().__new__(cls, names)
        self.kind = kind
        return self

    def __contains__(self, name: object) -> bool:
        if is_import_path(name):
            return user_attack(name)[0] == self.kind
        return tuple.__contains__(self, name)

    def __reduce__(self):
        return AttackNames, (tuple(self), self.kind)


ATTACKS = AttackNames(("negate", "scaled_negate", "random"), PER_WORKER)


def make_attack(name: str, scale: float = 10.0, num_byzantine: int = 0) -> Attack:
    """The attack called ``name`` (one of ``ATTACKS``, or a user's per-worker attack's
    import path)."""
    if is_import_path(name):
        kind, fn = user_attack(name, num_byzantine)
        if kind != PER_WORKER:
            raise ValueError(f"attack={name!r} takes (honest, own, rng): it is crafted from "
                             "the honest messages (make_crafted_attack), not per worker")
        return fn
    if name == "negate":
        return negate_attack
    if name == "scaled_negate":
        return scaled_negate_attack(scale)
    if name == "random":
        return random_attack
    raise ValueError(f"attack={name!r} is not one of {list(ATTACKS)}")


# Omniscient attacks and numpy forms of the attacks above: crafted where all messages meet.

CraftedAttack = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
"""``(honest: float32 [h, d], own: float32 [d], rng) -> float32 [d]``, the message to send."""

OMNISCIENT_ATTACKS = AttackNames(("colluding", "alie", "ipm"), CRAFTED)
ALL_ATTACKS = tuple(ATTACKS) + tuple(OMNISCIENT_ATTACKS)


def negate_crafted(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``-own``, as ``negate_attack``."""
    return -np.asarray(own, dtype=np.float32)


def scaled_negate_crafted(scale: float) -> CraftedAttack:
    """``-scale * own``, as ``scaled_negate_attack(scale)``."""
    def attack(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (np.float32(-scale) * np.asarray(own, dtype=np.float32)).astype(np.float32)

    return attack


def random_crafted(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """i.i.d. standard normal noise of ``own``'s length, as ``random_attack``."""
    return rng.standard_normal(np.shape(own), dtype=np.float32)


def colluding_attack(
    honest: np.ndarray, own: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Opposite of the honest majority vote, per coordinate: float32 [h, d] -> [d].

    ``sign(result) = -vote(honest)`` where ``vote = +1`` iff at least half of the honest
    signs are +1 (``sign(0) = +1``; ties vote +1, the rules of ``raysign.signs``). The
    magnitude is ``mean |honest|`` (1 when that is 0, so the sign survives compression)."""
    honest = _as_honest(honest)
    honest_sum = np.where(honest >= 0, 1, -1).sum(axis=0)
    direction = np.where(honest_sum >= 0, np.float32(-1), np.float32(1))
    magnitude = float(np.abs(honest).mean(dtype=np.float64))
    if not (magnitude > 0 and math.isfinite(magnitude)):
        magnitude = 1.0
    return (direction * np.float32(magnitude)).astype(np.float32)


def alie_z_max(num_workers: int, num_byzantine: int) -> float:
    """Baruch et al. 2019, Sec. 3: ``z_max = Phi^-1((n - s) / n)``, ``s = floor(n/2 + 1) - f``
    (the number of honest workers the adversaries must win over), for ``0 <= f <= n // 2``;
    ``-inf`` when ``s = n`` (f = 0, n <= 2), like ``scipy.stats.norm.ppf(0)``."""
    n, f = num_workers, num_byzantine
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"num_workers={n!r} is outside the allowed range [1, inf)")
    if not isinstance(f, int) or not 0 <= f <= n // 2:
        raise ValueError(f"num_byzantine={f!r} is outside the allowed range [0, {n // 2}] for "
                         f"ALIE's z_max with n={n} workers")
    s = n // 2 + 1 - f
    if s == n:  # f = 0 with n <= 2: no quantile below the lowest
        return -math.inf
    return NormalDist().inv_cdf((n - s) / n)


def alie_attack(num_byzantine: int, z: float | None = None) -> CraftedAttack:
    """ALIE: ``mean - z * std`` of the honest messages per coordinate (std with ddof=1; zero
    for a single honest worker); ``z`` defaults to ``alie_z_max(h + f, f)``."""
    def attack(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        honest = _as_honest(honest)
        h = honest.shape[0]
        z_used = alie_z_max(h + num_byzantine, num_byzantine) if z is None else z
        centre = honest.mean(axis=0, dtype=np.float64)
        spread = honest.std(axis=0, ddof=1, dtype=np.float64) if h > 1 else 0.0
        return (centre - z_used * spread).astype(np.float32)

    return attack


def ipm_attack(epsilon: float = 0.1) -> CraftedAttack:
    """Inner-product manipulation: ``-epsilon * mean_i honest_i`` (Xie et al. 2020)."""
    def attack(honest: np.ndarray, own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centre = _as_honest(honest).mean(axis=0, dtype=np.float64)
        return (-epsilon * centre).astype(np.float32)

    return attack


def _as_honest(honest: np.ndarray) -> np.ndarray:
    honest = np.asarray(honest, dtype=np.float32)
    if honest.ndim != 2 or honest.shape[0] < 1:
        raise ValueError(f"honest must be a float32 [h, d] array with h >= 1, got shape "
                         f"{honest.shape}")
    return honest


def make_crafted_attack(
    name: str,
    num_byzantine: int,
    *,
    scale: float = 10.0,
    z: float | None = None,
    epsilon: float = 0.1,
) -> CraftedAttack:
    """The attack called ``name`` (one of ``ALL_ATTACKS``) as ``(honest, own, rng) -> message``.

    ``num_byzantine`` (f) sets ALIE's default ``z``; ``scale`` is scaled_negate's factor,
    ``z`` ALIE's (None: ``z_max``), ``epsilon`` IPM's. A user's crafted attack is named by
    its import path."""
    if is_import_path(name):
        kind, fn = user_attack(name, num_byzantine)
        if kind != CRAFTED:
            raise ValueError(f"attack={name!r} takes (v, generator): it runs on each worker "
                             "(make_attack), not crafted from the honest messages")
        return fn
    if name not in ALL_ATTACKS:
        raise ValueError(f"attack={name!r} is not one of {list(ALL_ATTACKS)}")
    if not isinstance(num_byzantine, int) or num_byzantine < 0:
        raise ValueError(f"num_byzantine={num_byzantine!r} is outside the allowed range "
                         f"[0, inf)")
    for field, value in (("scale", scale), ("epsilon", epsilon), ("z", z)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{field}={value!r} must be a finite number")
    if name == "negate":
        return negate_crafted
    if name == "scaled_negate":
        return scaled_negate_crafted(scale)
    if name == "random":
        return random_crafted
    if name == "colluding":
        return colluding_attack
    if name == "alie":
        return alie_attack(num_byzantine, z)
    return ipm_attack(epsilon)


def craft(
    name: str,
    honest: np.ndarray,
    own: np.ndarray,
    rng: np.random.Generator,
    num_byzantine: int,
    **options: float | None,
) -> np.ndarray:
    """One Byzantine message: ``make_crafted_attack(name, num_byzantine, **options)`` applied
    to ``honest`` (float32 [h, d]) and ``own`` (float32 [d]); returns float32 [d]."""
    return make_crafted_attack(name, num_byzantine, **options)(honest, own, rng)


def check_attack(path: str, num_workers: int, num_byzantine: int) -> None:
    """Import a user's attack and call it once on a tiny input (d = 5; for a crafted one
    ``num_workers - num_byzantine`` honest rows); a one-line ``ValueError`` naming the path
    unless it returns a float32 [5] of its kind (a torch tensor per worker, a numpy array
    crafted)."""
    kind, fn = user_attack(path, num_byzantine)
    if kind == PER_WORKER:
        args: tuple = (torch.linspace(-1, 1, 5), torch.Generator().manual_seed(0))
        expected = "a float32 torch.Tensor of shape [5]"
    else:
        h = max(num_workers - num_byzantine, 1)
        rng = np.random.default_rng(0)
        args = (rng.standard_normal((h, 5), dtype=np.float32),
                rng.standard_normal(5, dtype=np.float32), np.random.default_rng(1))
        expected = "a float32 numpy array of shape [5]"
    try:
        out = fn(*args)
    except Exception as err:  # any failure of the user's code, reported in one line
        raise ValueError(f"attack={path!r} failed on a tiny input: {err.__class__.__name__}: "
                         f"{err}") from None
    array_type = torch.Tensor if kind == PER_WORKER else np.ndarray
    dtype = torch.float32 if kind == PER_WORKER else np.float32
    if not (isinstance(out, array_type) and tuple(out.shape) == (5,) and out.dtype == dtype):
        got = (f"{type(out).__name__} shape={tuple(getattr(out, 'shape', ()))} "
               f"dtype={getattr(out, 'dtype', None)}")
        raise ValueError(f"attack={path!r} must return {expected} for a message of 5 "
                         f"values; it returned {got}")
