"""Robust fp32 aggregators: the baselines that majority vote is compared with under attack.

Each aggregator is a pure numpy function over the stacked worker messages
``values: float32 [n, d]`` (row i is worker i's vector) returning ``float32 [d]``:

- ``mean``: the parameter-server average (not robust: one worker moves it anywhere).
- ``coordinate_median``: per-coordinate median (Yin, Chen, Ramchandran, Bartlett, ICML 2018,
  "Byzantine-robust distributed learning: towards optimal statistical rates", Def. 1); with an
  even ``n`` the two middle values are averaged (``np.median``).
- ``trimmed_mean(values, f)``: per coordinate, drop the ``f`` largest and ``f`` smallest values
  and average the ``n - 2f`` others (Yin et al. 2018, Def. 2); needs ``2f < n``.
- ``krum(values, f)``: Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017, "Machine
  learning with adversaries: Byzantine tolerant gradient descent", Sec. 4: the score of
  vector i is the sum of squared distances to its ``n - f - 2`` nearest neighbours (itself
  excluded); Krum returns the vector with the lowest score. Multi-Krum (same paper, Sec. 5)
  averages the ``m`` vectors with the lowest scores (``m = n - f`` by default). The
  convergence guarantee needs ``n >= 2f + 3``; the functions run whenever at least one
  neighbour is left (``n - f - 2 >= 1``), so that 3 of 7 adversaries can be measured.
- ``centered_clipping(values, center, tau, iters)``: Karimireddy, He, Jaggi, ICML 2021,
  "Learning from history for Byzantine robust optimization", Eq. (CC):
  ``v <- v + (1/n) sum_i clip_tau(x_i - v)`` with ``clip_tau(z) = z * min(1, tau / ||z||)``,
  started from ``center`` (the previous round's aggregate) and repeated ``iters`` times.

Where they can run. ``mean``, ``coordinate_median`` and ``trimmed_mean`` are coordinate-wise:
each output coordinate depends only on that coordinate of the inputs, so a vote shard can
aggregate its own slice ``[start, stop)`` and the concatenated slices equal the aggregate of
the whole vector (``SLICEWISE``). ``krum``, ``multi_krum`` and ``centered_clipping`` use
Euclidean norms of whole vectors: run on one slice they become a different, block-wise
aggregator, so give them the whole vector (one vote shard).

Inputs are assumed finite (the vote actor rejects non-finite payloads before aggregating).
``make_aggregator(name, num_byzantine, **options)`` binds the options and returns a callable
``values -> aggregate``; centered clipping's callable carries the previous aggregate in its
``center`` attribute (its only state, to be checkpointed with the run).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Aggregator = Callable[[np.ndarray], np.ndarray]


def _as_matrix(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 [n, d] with n >= 1 (no copy when it already is)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must be a float32 [n, d] array with n >= 1, got shape "
                         f"{values.shape}")
    return values


def _check_num_byzantine(f: int, low: int, high: int | None, what: str) -> None:
    ok = not isinstance(f, bool) and isinstance(f, (int, np.integer)) and f >= low
    if not ok or (high is not None and f > high):
        bound = "inf)" if high is None else f"{high}]"
        raise ValueError(f"num_byzantine={f!r} is outside the allowed range [{low}, {bound} "
                         f"for {what}")


def mean(values: np.ndarray) -> np.ndarray:
    """Average of the rows: float32 [n, d] -> float32 [d]."""
    return _as_matrix(values).mean(axis=0, dtype=np.float32)


def coordinate_median(values: np.ndarray) -> np.ndarray:
    """Per-coordinate median (middle two averaged for even n): float32 [n, d] -> [d]."""
    return np.median(_as_matrix(values), axis=0).astype(np.float32, copy=False)


def trimmed_mean(values: np.ndarray, f: int) -> np.ndarray:
    """Per coordinate, the mean of the values left after dropping the ``f`` largest and ``f``
    smallest (Yin et al. 2018): float32 [n, d] -> [d]; needs ``0 <= f`` and ``2f < n``."""
    values = _as_matrix(values)
    n = values.shape[0]
    _check_num_byzantine(f, 0, (n - 1) // 2, f"trimmed_mean with n={n} (needs 2f < n)")
    if f == 0:
        return mean(values)
    return np.sort(values, axis=0)[f : n - f].mean(axis=0, dtype=np.float32)


def pairwise_squared_distances(values: np.ndarray) -> np.ndarray:
    """float64 [n, n] squared Euclidean distances between the rows of float32 [n, d].

    Through the Gram matrix ``||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>`` in float64, so that
    memory stays [n, d] + [n, n] (no [n, n, d] differences) and close vectors with large
    norms do not lose their distance to float32 cancellation."""
    x = _as_matrix(values).astype(np.float64)
    gram = x @ x.T
    norms = np.diag(gram)
    distances = norms[:, None] + norms[None, :] - 2.0 * gram
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def krum_scores(values: np.ndarray, num_neighbours: int) -> np.ndarray:
    """float64 [n]: for each row, the sum of squared distances to its ``num_neighbours``
    nearest other rows (Blanchard et al. 2017, score s(i))."""
    distances = pairwise_squared_distances(values)
    n = distances.shape[0]
    if not 1 <= num_neighbours <= n - 1:
        raise ValueError(f"num_neighbours={num_neighbours!r} is outside the allowed range "
                         f"[1, {n - 1}] for n={n}")
    # Column 0 of each sorted row is the row's zero distance to itself.
    return np.sort(distances, axis=1)[:, 1 : num_neighbours + 1].sum(axis=1)


def _krum_neighbours(n: int, f: int, num_neighbours: int | None) -> int:
    _check_num_byzantine(f, 0, n - 3, f"krum with n={n} (needs n - f - 2 >= 1)")
    return n - f - 2 if num_neighbours is None else num_neighbours


def krum(values: np.ndarray, f: int, num_neighbours: int | None = None) -> np.ndarray:
    """The row with the lowest Krum score (Blanchard et al. 2017): float32 [n, d] -> [d].

    ``num_neighbours`` defaults to the paper's ``n - f - 2`` (ByzFL uses ``n - f - 1``).
    Ties go to the lowest index."""
    values = _as_matrix(values)
    k = _krum_neighbours(values.shape[0], f, num_neighbours)
    return values[int(np.argmin(krum_scores(values, k)))].copy()


def multi_krum(
    values: np.ndarray, f: int, m: int | None = None, num_neighbours: int | None = None
) -> np.ndarray:
    """Mean of the ``m`` rows with the lowest Krum scores (Blanchard et al. 2017, Multi-Krum;
    ``m = n - f`` by default): float32 [n, d] -> [d]. Ties go to the lowest index."""
    values = _as_matrix(values)
    n = values.shape[0]
    k = _krum_neighbours(n, f, num_neighbours)
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise ValueError(f"m={m!r} is outside the allowed range [1, {n}] for n={n}")
    chosen = np.argsort(krum_scores(values, k), kind="stable")[:m]
    return values[np.sort(chosen)].mean(axis=0, dtype=np.float32)


def centered_clipping(
    values: np.ndarray, center: np.ndarray, tau: float, iters: int = 1
) -> np.ndarray:
    """Centered clipping (Karimireddy, He, Jaggi 2021): float32 [n, d], center [d] -> [d].

    ``iters`` times: ``v <- v + mean_i (x_i - v) * min(1, tau / ||x_i - v||)``, from
    ``v = center``. A row equal to ``v`` contributes zero."""
    values = _as_matrix(values)
    if not (isinstance(tau, (int, float)) and np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau={tau!r} is outside the allowed range (0, inf)")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters={iters!r} is outside the allowed range [1, inf)")
    v = np.asarray(center, dtype=np.float32)
    if v.shape != values.shape[1:]:
        raise ValueError(f"center has shape {v.shape}, expected ({values.shape[1]},)")
    for _ in range(iters):
        differences = values - v
        norms = np.sqrt(np.einsum("ij,ij->i", differences, differences, dtype=np.float64))
        scale = np.ones_like(norms)
        np.divide(tau, norms, out=scale, where=norms > tau)
        v = v + (differences * scale[:, None].astype(np.float32)).mean(axis=0, dtype=np.float32)
    return v.astype(np.float32, copy=False)


@dataclass
class CenteredClipping:
    """Centered clipping as a callable ``values -> aggregate`` that remembers its last output.

    ``center`` is the previous round's aggregate (zeros before the first round, as in ByzFL);
    it is the aggregator's whole state: save it with a checkpoint, restore it on resume."""

    tau: float = 10.0
    iters: int = 1
    center: np.ndarray | None = None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = _as_matrix(values)
        center = np.zeros(values.shape[1], np.float32) if self.center is None else self.center
        self.center = centered_clipping(values, center, self.tau, self.iters)
        return self.center


AGGREGATORS: dict[str, Callable[..., np.ndarray]] = {
    "mean": mean,
    "median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "centered_clipping": centered_clipping,
}
"""Name -> pure function. ``make_aggregator`` turns a name into a ``values -> aggregate``."""

SLICEWISE = ("mean", "median", "trimmed_mean")
"""Coordinate-wise aggregators: a vote shard may run them on its slice of the vector."""

_OPTIONS = {
    "mean": (),
    "median": (),
    "trimmed_mean": (),
    "krum": ("num_neighbours",),
    "multi_krum": ("m", "num_neighbours"),
    "centered_clipping": ("tau", "iters", "center"),
}


def make_aggregator(name: str, num_byzantine: int = 0, **options: Any) -> Aggregator:
    """The aggregator called ``name`` (a key of ``AGGREGATORS``) as ``values -> aggregate``.

    ``num_byzantine`` is the assumed bound ``f`` on adversaries (used by trimmed mean and the
    Krums; ignored by the others). ``options``: ``num_neighbours`` (krum, multi_krum), ``m``
    (multi_krum), ``tau``, ``iters``, ``center`` (centered_clipping; a ``CenteredClipping``
    instance is returned, whose ``center`` is updated after each call)."""
    if name not in AGGREGATORS:
        raise ValueError(f"aggregator={name!r} is not one of {list(AGGREGATORS)}")
    _check_num_byzantine(num_byzantine, 0, None, f"aggregator {name!r}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise ValueError(f"option(s) {unknown} are not valid for aggregator {name!r}; "
                         f"valid options: {list(_OPTIONS[name])}")
    if name == "centered_clipping":
        aggregator = CenteredClipping(**options)
        # Fail on a bad tau/iters now rather than in the first round.
        centered_clipping(np.zeros((1, 1), np.float32), np.zeros(1, np.float32),
                          aggregator.tau, aggregator.iters)
        return aggregator
    if name in ("trimmed_mean", "krum", "multi_krum"):
        return functools.partial(AGGREGATORS[name], f=num_byzantine, **options)
    return AGGREGATORS[name]
