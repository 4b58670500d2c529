"""Robust aggregators against plain-Python references (loops over coordinates, brute-force
sorting and neighbour search) and, where the bench extra is installed, against ByzFL."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysign.signsgd.aggregators import (
    AGGREGATORS,
    SLICEWISE,
    CenteredClipping,
    centered_clipping,
    coordinate_median,
    krum,
    krum_scores,
    make_aggregator,
    mean,
    multi_krum,
    trimmed_mean,
)

# ---------------------------------------------------------------- plain-Python references


def reference_median(rows: list[list[float]]) -> list[float]:
    out = []
    for column in zip(*rows, strict=True):
        s = sorted(column)
        n = len(s)
        out.append(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)
    return out


def reference_trimmed_mean(rows: list[list[float]], f: int) -> list[float]:
    out = []
    for column in zip(*rows, strict=True):
        kept = sorted(column)[f : len(column) - f]
        out.append(math.fsum(kept) / len(kept))
    return out


def reference_squared_distance(a: list[float], b: list[float]) -> float:
    return math.fsum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def reference_krum_scores(rows: list[list[float]], k: int) -> list[float]:
    scores = []
    for i, row in enumerate(rows):
        others = sorted(reference_squared_distance(row, other)
                        for j, other in enumerate(rows) if j != i)
        scores.append(math.fsum(others[:k]))
    return scores


def reference_krum_order(rows: list[list[float]], k: int) -> list[int]:
    """Indices by (score, index): the lowest score first, ties to the lowest index."""
    scores = reference_krum_scores(rows, k)
    return sorted(range(len(rows)), key=lambda i: (scores[i], i))


def reference_centered_clipping(rows, center, tau, iters):
    v = list(center)
    for _ in range(iters):
        steps = []
        for row in rows:
            diff = [x - c for x, c in zip(row, v, strict=True)]
            norm = math.sqrt(math.fsum(z * z for z in diff))
            factor = 1.0 if norm == 0 else min(1.0, tau / norm)
            steps.append([z * factor for z in diff])
        columns = zip(*steps, strict=True)
        v = [c + math.fsum(column) / len(rows) for c, column in zip(v, columns, strict=True)]
    return v


def as_rows(values: np.ndarray) -> list[list[float]]:
    return values.astype(np.float64).tolist()


def random_values(seed: int, n: int, d: int, integer: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if integer:  # small integers: many exact ties per coordinate and between distances
        return rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    return rng.standard_normal((n, d)).astype(np.float32)


CASES = [(n, d, integer) for n in (1, 2, 3, 4, 5, 7, 8) for d in (1, 5, 33)
         for integer in (False, True)]

# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize("n,d,integer", CASES)
def test_mean_median_and_trimmed_mean_match_sorting_references(n, d, integer):
    values = random_values(n * 100 + d, n, d, integer)
    rows = as_rows(values)
    np.testing.assert_allclose(mean(values), np.mean(rows, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(coordinate_median(values), reference_median(rows), rtol=1e-6,
                               atol=1e-6)
    for f in range(0, (n - 1) // 2 + 1):
        got = trimmed_mean(values, f)
        assert got.dtype == np.float32 and got.shape == (d,)
        np.testing.assert_allclose(got, reference_trimmed_mean(rows, f), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n,d,integer", [c for c in CASES if c[0] >= 3])
def test_krum_and_multi_krum_match_brute_force_neighbour_search(n, d, integer):
    values = random_values(n * 1000 + d, n, d, integer)
    rows = as_rows(values)
    for f in range(0, n - 2):
        k = n - f - 2
        np.testing.assert_allclose(krum_scores(values, k), reference_krum_scores(rows, k),
                                   rtol=1e-9, atol=1e-9)
        order = reference_krum_order(rows, k)
        np.testing.assert_array_equal(krum(values, f), values[order[0]])
        for m in range(1, n + 1):
            expected = np.mean([rows[i] for i in order[:m]], axis=0)
            np.testing.assert_allclose(multi_krum(values, f, m=m), expected, rtol=1e-6,
                                       atol=1e-6)
        expected = np.mean([rows[i] for i in order[: n - f]], axis=0)
        np.testing.assert_allclose(multi_krum(values, f), expected, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 8),
    d=st.integers(1, 12),
    tau=st.floats(0.01, 10.0),
    iters=st.integers(1, 4),
)
def test_centered_clipping_matches_loop_reference(data, n, d, tau, iters):
    element = st.floats(-100, 100, width=32, allow_subnormal=False)
    values = np.array(data.draw(st.lists(st.lists(element, min_size=d, max_size=d),
                                         min_size=n, max_size=n)), dtype=np.float32)
    center = np.array(data.draw(st.lists(element, min_size=d, max_size=d)), dtype=np.float32)
    expected = reference_centered_clipping(as_rows(values), center.tolist(), tau, iters)
    got = centered_clipping(values, center, tau, iters)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_krum_on_a_million_coordinates_matches_direct_pairwise_differences():
    """The Gram-matrix distances of n=7, d=1M vectors agree with differences taken pair by
    pair in float64, for nearby vectors with large norms (where float32 Gram would cancel)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(1_000_000).astype(np.float32) * 10
    values = base + 1e-3 * rng.standard_normal((7, 1_000_000)).astype(np.float32)
    x = values.astype(np.float64)
    direct = np.zeros((7, 7))
    for i, j in itertools.combinations(range(7), 2):
        direct[i, j] = direct[j, i] = np.sum((x[i] - x[j]) ** 2)
    k = 7 - 2 - 2
    expected_scores = np.sort(direct, axis=1)[:, 1 : k + 1].sum(axis=1)
    np.testing.assert_allclose(krum_scores(values, k), expected_scores, rtol=1e-6)
    np.testing.assert_array_equal(krum(values, 2), values[np.argmin(expected_scores)])


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("name", SLICEWISE)
def test_slicewise_aggregators_equal_on_slices_and_on_the_whole_vector(name):
    values = random_values(3, 7, 101)
    aggregate = make_aggregator(name, num_byzantine=2)
    cuts = [0, 17, 18, 64, 101]
    pieces = [aggregate(values[:, a:b]) for a, b in itertools.pairwise(cuts)]
    np.testing.assert_array_equal(np.concatenate(pieces), aggregate(values))


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multi_krum"])
def test_robust_aggregators_stay_within_the_honest_range_under_huge_outliers(name):
    """With f = 2 of 7 rows replaced by 1e6 (Krum's condition n >= 2f + 3 holds), every
    coordinate of the robust aggregates lies between the honest minimum and maximum; the
    mean's does not."""
    honest = random_values(5, 5, 50)
    values = np.concatenate([honest, np.full((2, 50), 1e6, np.float32)])
    got = make_aggregator(name, num_byzantine=2)(values)
    assert np.all(got >= honest.min(axis=0) - 1e-6) and np.all(got <= honest.max(axis=0) + 1e-6)
    assert np.all(make_aggregator("mean")(values) > honest.max(axis=0))


def test_krum_picks_identical_outliers_beyond_its_condition_three_of_seven():
    """Documented limit: with f = 3 of n = 7 (n < 2f + 3) three identical Byzantine vectors
    are each other's 2 = n - f - 2 nearest neighbours at distance 0, so Krum returns one."""
    honest = random_values(5, 4, 50)
    values = np.concatenate([honest, np.full((3, 50), 1e6, np.float32)])
    np.testing.assert_array_equal(krum(values, 3), values[4])
    assert np.all(trimmed_mean(values, 3) <= honest.max(axis=0))


def test_centered_clipping_moves_at_most_tau_per_iteration():
    values = np.concatenate([random_values(6, 4, 20), np.full((3, 20), 1e6, np.float32)])
    center = np.zeros(20, np.float32)
    got = centered_clipping(values, center, tau=0.5, iters=1)
    assert np.linalg.norm(got - center) <= 0.5 + 1e-6


def test_centered_clipping_callable_carries_the_previous_aggregate_as_center():
    first, second = random_values(7, 5, 9), random_values(8, 5, 9)
    aggregate = make_aggregator("centered_clipping", num_byzantine=1, tau=0.3, iters=2)
    assert isinstance(aggregate, CenteredClipping) and aggregate.center is None
    out1 = aggregate(first)
    np.testing.assert_array_equal(out1, centered_clipping(first, np.zeros(9, np.float32),
                                                          0.3, 2))
    out2 = aggregate(second)
    np.testing.assert_array_equal(out2, centered_clipping(second, out1, 0.3, 2))
    np.testing.assert_array_equal(aggregate.center, out2)


def test_make_aggregator_binds_num_byzantine_and_options():
    values = random_values(9, 7, 13)
    assert set(AGGREGATORS) == {"mean", "median", "trimmed_mean", "krum", "multi_krum",
                                "centered_clipping"}
    np.testing.assert_array_equal(make_aggregator("trimmed_mean", 2)(values),
                                  trimmed_mean(values, 2))
    np.testing.assert_array_equal(make_aggregator("krum", 1, num_neighbours=5)(values),
                                  krum(values, 1, num_neighbours=5))
    np.testing.assert_array_equal(make_aggregator("multi_krum", 2, m=3)(values),
                                  multi_krum(values, 2, m=3))
    np.testing.assert_array_equal(make_aggregator("median", 3)(values),
                                  coordinate_median(values))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_aggregator("geomed", 1), "aggregator='geomed' is not one of"),
        (lambda: make_aggregator("krum", -1), "num_byzantine=-1"),
        (lambda: make_aggregator("krum", 1, tau=1.0), "['num_neighbours']"),
        (lambda: make_aggregator("centered_clipping", 1, tau=0.0), "tau=0.0"),
        (lambda: make_aggregator("centered_clipping", 1, iters=0), "iters=0"),
        (lambda: trimmed_mean(np.zeros((6, 2)), 3), "num_byzantine=3"),
        (lambda: krum(np.zeros((7, 2)), 5), "num_byzantine=5"),
        (lambda: multi_krum(np.zeros((7, 2)), 1, m=8), "m=8"),
        (lambda: mean(np.zeros(5)), "shape (5,)"),
        (lambda: centered_clipping(np.zeros((3, 2)), np.zeros(3), 1.0), "center has shape"),
    ],
)
def test_bad_arguments_fail_naming_the_value_and_the_valid_choices(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
    if "is not one of" in message:
        assert "'krum'" in str(error.value) and "'centered_clipping'" in str(error.value)


# ---------------------------------------------------------------- against ByzFL (bench extra)


@pytest.fixture(scope="module")
def byzfl_aggregators():
    """``byzfl.aggregators``, loaded under a bare package stub: ByzFL's ``__init__`` also
    imports its benchmark, which needs torchvision (not installed here: it would replace the
    CPU torch), while the aggregators only need numpy, torch and scipy."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        pytest.skip("byzfl (bench extra) is not installed; the plain references still run")
    with pytest.MonkeyPatch.context() as patch:
        if "byzfl" not in sys.modules:
            stub = types.ModuleType("byzfl")
            stub.__path__ = list(spec.submodule_search_locations)
            patch.setitem(sys.modules, "byzfl", stub)
        yield importlib.import_module("byzfl.aggregators")


@pytest.mark.parametrize("seed,n,d", [(0, 7, 40), (1, 5, 3), (2, 8, 17), (3, 3, 1)])
def test_coordinate_wise_aggregators_match_byzfl(byzfl_aggregators, seed, n, d):
    values = random_values(seed, n, d)
    np.testing.assert_allclose(mean(values), byzfl_aggregators.Average()(values), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(coordinate_median(values), byzfl_aggregators.Median()(values),
                               rtol=1e-6, atol=1e-7)
    for f in range(0, (n - 1) // 2 + 1):
        np.testing.assert_allclose(trimmed_mean(values, f), byzfl_aggregators.TrMean(f)(values),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed,n,d", [(0, 7, 40), (1, 5, 3), (2, 8, 17), (4, 9, 200)])
def test_krum_matches_byzfl_with_its_neighbour_count(byzfl_aggregators, seed, n, d):
    """ByzFL scores with the n - f - 1 nearest neighbours (mean, not sum: same argmin); the
    paper and our default use n - f - 2. With ByzFL's count the outputs are identical."""
    values = random_values(seed, n, d)
    for f in range(0, (n - 1) // 2 + 1):
        np.testing.assert_array_equal(krum(values, f, num_neighbours=n - f - 1),
                                      byzfl_aggregators.Krum(f)(values))
        np.testing.assert_allclose(multi_krum(values, f, num_neighbours=n - f - 1),
                                   byzfl_aggregators.MultiKrum(f)(values), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("tau,iters", [(0.5, 1), (2.0, 3), (100.0, 1)])
def test_centered_clipping_matches_byzfl_over_two_rounds(byzfl_aggregators, tau, iters):
    """ByzFL's constructor refuses any ``m`` (its type check can never pass), so its center
    starts at zero and is set between rounds through the attribute, as its own call does."""
    theirs = byzfl_aggregators.CenteredClipping(L=iters, tau=tau)
    ours = make_aggregator("centered_clipping", 2, tau=tau, iters=iters)
    for seed in (10, 11):
        values = random_values(seed, 7, 30) * 3
        np.testing.assert_allclose(ours(values), theirs(values), rtol=1e-5, atol=1e-6)
