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

Beyond the name table, ``make_aggregator`` also takes:

- ``"byzfl:NNM+TrMean"``: a chain of ByzFL 0.0.11 (Allouah et al., EPFL, the ``bench`` extra)
  pre-aggregators joined with ``+``, the last one an aggregator (``ByzFLAggregator``); a stage
  takes keyword arguments, ``"byzfl:Bucketing(s=2)+GeometricMedian(nu=0.1, T=3)"``, and every
  stage with an ``f`` argument not given gets ``num_byzantine``.
- ``"package.module:name"``: a user's own aggregator, a callable
  ``aggregate(values: float32 [n, d]) -> float32 [d]``, optionally with a keyword
  ``num_byzantine`` (then bound); see ``raysign.signsgd.user_callables``.

Both need the whole vector (one vote shard); ``check_aggregator`` calls one on a tiny input.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raysign.signsgd.user_callables import is_import_path, load_callable

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
    """The aggregator called ``name`` (a key of ``AGGREGATORS``, a ``"byzfl:..."`` chain or a
    user's ``"package.module:name"``) as ``values -> aggregate``.

    ``num_byzantine`` is the assumed bound ``f`` on adversaries (used by trimmed mean, the
    Krums, the ByzFL stages with an ``f`` and a user's aggregator with a ``num_byzantine``
    keyword; ignored by the others). ``options``: ``num_neighbours`` (krum, multi_krum), ``m``
    (multi_krum), ``tau``, ``iters``, ``center`` (centered_clipping; a ``CenteredClipping``
    instance is returned, whose ``center`` is updated after each call), ``seed`` (byzfl)."""
    _check_num_byzantine(num_byzantine, 0, None, f"aggregator {name!r}")
    if isinstance(name, str) and name.startswith(BYZFL_PREFIX):
        return ByzFLAggregator(name, num_byzantine, **options)
    if is_import_path(name):
        if options:
            raise ValueError(f"option(s) {sorted(options)} are not valid for the user's "
                             f"aggregator {name!r}")
        return user_aggregator(name, num_byzantine)
    if name not in AGGREGATORS:
        raise ValueError(f"aggregator={name!r} is not one of {list(AGGREGATORS)}, a ByzFL "
                         "chain 'byzfl:NNM+TrMean' or an import path 'package.module:name'")
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


def check_aggregator(aggregator: Aggregator, name: str, num_workers: int) -> None:
    """Call ``aggregator`` once on a tiny float32 [num_workers, 4] input and fail with a
    one-line ``ValueError`` naming ``name`` unless it returns a finite float32 [4]."""
    values = np.random.default_rng(0).standard_normal((num_workers, 4), dtype=np.float32)
    try:
        out = aggregator(values)
    except Exception as err:  # any failure of the user's code, reported in one line
        raise ValueError(f"aggregator={name!r} failed on a float32 [{num_workers}, 4] input: "
                         f"{err.__class__.__name__}: {err}") from None
    if not (isinstance(out, np.ndarray) and out.shape == (4,) and out.dtype == np.float32
            and np.isfinite(out).all()):
        got = (f"{type(out).__name__} shape={getattr(out, 'shape', None)} "
               f"dtype={getattr(out, 'dtype', None)}")
        raise ValueError(f"aggregator={name!r} must return a finite float32 [d] numpy array "
                         f"for float32 [n, d] values; on [{num_workers}, 4] it returned {got}")


# ------------------------------------------------------------------- a user's aggregator
def user_aggregator(path: str, num_byzantine: int = 0) -> Aggregator:
    """The callable at ``path``, ``values: float32 [n, d] -> float32 [d]``, with
    ``num_byzantine`` bound if it takes a keyword of that name."""
    fn = load_callable(path, "aggregator")
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "num_byzantine" in parameters:
        return functools.partial(fn, num_byzantine=num_byzantine)
    return fn


# ------------------------------------------------------------------------- ByzFL's chain
BYZFL_PREFIX = "byzfl:"
BYZFL_INSTALL = "pip install --no-deps byzfl==0.0.11"
_STAGE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def byzfl_aggregators() -> types.ModuleType:
    """``byzfl.aggregators``, imported without ByzFL's package ``__init__`` (which imports its
    benchmark and torchvision; the aggregators need only numpy and torch): unless ``byzfl``
    is already imported, a bare package module stands in for it in ``sys.modules``."""
    if "byzfl" not in sys.modules:
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"the 'byzfl:' aggregators need ByzFL (the bench extra): "
                              f"{BYZFL_INSTALL}")
        stub = types.ModuleType("byzfl")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec  # so that importlib.util.find_spec("byzfl") still answers
        sys.modules["byzfl"] = stub
    return importlib.import_module("byzfl.aggregators")


def parse_byzfl(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"byzfl:Bucketing(s=2)+TrMean"`` -> ``[("Bucketing", {"s": 2}), ("TrMean", {})]``:
    stages joined with ``+``, each a ByzFL class name with optional keyword arguments whose
    values are Python literals."""
    if not (isinstance(spec, str) and spec.startswith(BYZFL_PREFIX)):
        raise ValueError(f"aggregator={spec!r} does not start with {BYZFL_PREFIX!r}")
    stages = []
    for part in spec[len(BYZFL_PREFIX):].split("+"):
        match = _STAGE.match(part)
        if match is None:
            raise ValueError(f"aggregator={spec!r}: stage {part!r} is not 'Name' or "
                             "'Name(key=value, ...)'")
        name, arguments = match.groups()
        options: dict[str, Any] = {}
        if arguments and arguments.strip():
            try:
                call = ast.parse(f"f({arguments})", mode="eval").body
                if not isinstance(call, ast.Call) or call.args:
                    raise ValueError("only keyword arguments")
                options = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            except (SyntaxError, ValueError) as err:
                raise ValueError(f"aggregator={spec!r}: the arguments of {name} must be "
                                 f"key=literal pairs ({err})") from None
        stages.append((name, options))
    return stages


class ByzFLAggregator:
    """A ByzFL chain ``"byzfl:Pre1+Pre2+Agg"`` as ``values: float32 [n, d] -> float32 [d]``:
    each pre-aggregator maps the [n, d] rows to new rows, the aggregator reduces them to [d].

    Stages with an ``f`` argument get ``num_byzantine`` unless it is given. ByzFL draws its
    randomness (Bucketing's permutation) from numpy's global generator: each call seeds it
    with ``[seed, calls]`` and restores the caller's state after, so a run is reproducible
    and call ``k`` equals ByzFL run after ``np.random.seed([seed, k])``. Pickled (to a vote
    actor) as its spec, call count and seed; the state of a stateful ByzFL stage
    (``CenteredClipping``'s previous aggregate) starts afresh in the unpickled copy, and
    travels with ``state`` / ``load_state`` (checkpoints, a restarted vote actor)."""

    def __init__(self, spec: str, num_byzantine: int = 0, seed: int = 0):
        self.spec, self.num_byzantine, self.seed = spec, num_byzantine, seed
        self.calls = 0
        self._stages = self._build()

    def _build(self) -> list[Any]:
        module = byzfl_aggregators()
        pre = {n for n in dir(module.preaggregators) if not n.startswith("_")}
        final = {n for n in dir(module.aggregators) if not n.startswith("_")}
        valid_pre = sorted(n for n in pre if isinstance(getattr(module, n, None), type))
        valid_final = sorted(n for n in final if isinstance(getattr(module, n, None), type)
                             and getattr(module, n).__module__ == module.aggregators.__name__)
        stages = parse_byzfl(self.spec)
        built = []
        for i, (name, options) in enumerate(stages):
            last = i == len(stages) - 1
            allowed = valid_final if last else valid_pre
            if name not in allowed:
                role = "the last stage (an aggregator)" if last else "a pre-aggregator"
                raise ValueError(f"aggregator={self.spec!r}: {name!r} is not a ByzFL class "
                                 f"valid as {role}: {allowed}")
            cls = getattr(module, name)
            parameters = inspect.signature(cls.__init__).parameters
            unknown = sorted(set(options) - set(parameters) - {"self"})
            if unknown:
                raise ValueError(f"aggregator={self.spec!r}: {name} takes no {unknown}; its "
                                 f"arguments: {[p for p in parameters if p != 'self']}")
            if "f" in parameters and "f" not in options:
                options = {**options, "f": self.num_byzantine}
            try:
                built.append(cls(**options))
            except (TypeError, ValueError) as err:
                raise ValueError(f"aggregator={self.spec!r}: {name}({options}) is refused "
                                 f"by ByzFL: {err}") from None
        return built

    def __call__(self, values: np.ndarray) -> np.ndarray:
        rows = _as_matrix(values).copy()  # ByzFL's clipping stages write to their input
        caller_state = np.random.get_state()
        np.random.seed([self.seed, self.calls])
        try:
            for stage in self._stages[:-1]:
                rows = stage(rows)
            out = self._stages[-1](rows)
        finally:
            np.random.set_state(caller_state)
        self.calls += 1
        return np.asarray(out, dtype=np.float32)

    def state(self) -> dict[str, Any]:
        """The chain's state after its last call, as a checkpoint holds it (tensors and
        numbers only): the call count that seeds the next call, and every stage's array
        attributes (``CenteredClipping.m``; None before its first call)."""
        stages = []
        for stage in self._stages:
            kept = {}
            for name, value in vars(stage).items():
                if value is None or isinstance(value, np.ndarray):
                    kept[name] = None if value is None else torch.from_numpy(value.copy())
            stages.append(kept)
        return {"calls": self.calls, "stages": stages}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Put the chain back in ``state`` (from ``state``); None: as before its first call."""
        self._stages = self._build()
        self.calls = 0
        if state is None:
            return
        self.calls = int(state["calls"])
        for stage, kept in zip(self._stages, state["stages"], strict=True):
            for name, value in kept.items():
                setattr(stage, name, None if value is None else value.numpy().copy())

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "num_byzantine": self.num_byzantine, "seed": self.seed,
                "calls": self.calls}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stages = self._build()

    def __repr__(self) -> str:
        return (f"ByzFLAggregator({self.spec!r}, num_byzantine={self.num_byzantine}, "
                f"seed={self.seed})")
