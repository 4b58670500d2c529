"""Attacks against plain-Python references, the packed majority vote of ``raysign.signs`` and,
where the bench extra is installed, ByzFL's implementations of the same attacks."""

from __future__ import annotations

import importlib
import importlib.util
import math
import statistics
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from raysign.signs import majority_vote, pack_signs, unpack_signs
from raysign.signsgd.attacks import (
    ALL_ATTACKS,
    ATTACKS,
    OMNISCIENT_ATTACKS,
    alie_z_max,
    craft,
    make_attack,
    make_crafted_attack,
    negate_attack,
    random_attack,
    scaled_negate_attack,
)


def honest_messages(seed: int, h: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A shared drift plus worker noise, like stochastic gradients of one model.
    return (rng.standard_normal(d) + rng.standard_normal((h, d))).astype(np.float32)


# ---------------------------------------------------------------- the worker-side attacks


def test_worker_attacks_keep_their_behaviour():
    v = torch.randn(100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(negate_attack(v, torch.Generator()), -v)
    torch.testing.assert_close(scaled_negate_attack(3.0)(v, torch.Generator()), -3.0 * v)
    torch.testing.assert_close(make_attack("scaled_negate", 4.0)(v, torch.Generator()), -4.0 * v)
    first = random_attack(v, torch.Generator().manual_seed(5))
    again = make_attack("random")(v, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, again)
    assert first.shape == v.shape and first.dtype == v.dtype
    assert ATTACKS == ("negate", "scaled_negate", "random")
    with pytest.raises(ValueError, match=r"attack='alie' is not one of \['negate'"):
        make_attack("alie")


def test_crafted_negations_equal_the_worker_attacks():
    honest = honest_messages(1, 4, 300)
    own = honest_messages(2, 1, 300)[0]
    v = torch.from_numpy(own.copy())
    np.testing.assert_array_equal(craft("negate", honest, own, np.random.default_rng(), 3),
                                  negate_attack(v, torch.Generator()).numpy())
    got = craft("scaled_negate", honest, own, np.random.default_rng(), 3, scale=7.5)
    np.testing.assert_allclose(got, scaled_negate_attack(7.5)(v, torch.Generator()).numpy(),
                               rtol=1e-7, atol=0)


def test_crafted_random_is_standard_normal_and_reproducible():
    own = np.zeros(200_000, np.float32)
    first = craft("random", own[None], own, np.random.default_rng(3), 1)
    assert first.dtype == np.float32 and first.shape == own.shape
    np.testing.assert_array_equal(first, craft("random", own[None], own,
                                               np.random.default_rng(3), 1))
    # 200k draws: the standard errors of mean and std are about 0.002.
    assert abs(first.mean()) < 0.01 and abs(first.std() - 1) < 0.01


# ---------------------------------------------------------------- colluding


def reference_honest_vote(rows: list[list[float]]) -> list[int]:
    """The vote of raysign.signs, one coordinate at a time: sign(0) = +1, a tie votes +1."""
    votes = []
    for column in zip(*rows, strict=True):
        total = sum(1 if x >= 0 else -1 for x in column)
        votes.append(1 if total >= 0 else -1)
    return votes


@pytest.mark.parametrize("h", [1, 2, 3, 4, 5, 6])
def test_colluding_sends_the_opposite_of_the_honest_majority(h):
    honest = honest_messages(h, h, 257)
    honest[:, :5] = 0.0  # exact zeros count as +1
    got = craft("colluding", honest, honest[0], np.random.default_rng(), 3)
    expected = -np.array(reference_honest_vote(honest.tolist()))
    np.testing.assert_array_equal(np.where(got >= 0, 1, -1), expected)
    assert np.all(got != 0)
    np.testing.assert_allclose(np.abs(got), np.abs(honest).mean(), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 8), f=st.integers(0, 7), seed=st.integers(0, 2**32 - 1))
def test_colluding_flips_exactly_the_coordinates_whose_honest_margin_is_at_most_f(h, f, seed):
    """Through the real packed majority vote: f identical colluding messages flip coordinate
    j iff it is within their reach (honest sum s >= 0 flips iff s < f; s < 0 iff -s <= f)."""
    d = 130
    rng = np.random.default_rng(seed)
    honest = rng.choice([-1.0, 0.0, 1.0], size=(h, d)).astype(np.float32)
    message = craft("colluding", honest, honest[0], rng, f)
    rows = [torch.from_numpy(row) for row in honest] + [torch.from_numpy(message)] * f
    voted = unpack_signs(majority_vote(torch.stack([pack_signs(r) for r in rows])), d).numpy()
    honest_only = unpack_signs(majority_vote(torch.stack([pack_signs(torch.from_numpy(r))
                                                          for r in honest])), d).numpy()
    s = np.where(honest >= 0, 1, -1).sum(axis=0)
    reachable = np.where(s >= 0, s < f, -s <= f)
    np.testing.assert_array_equal(voted == -honest_only, reachable)


def test_colluding_keeps_its_sign_when_every_honest_message_is_zero():
    honest = np.zeros((3, 10), np.float32)
    got = craft("colluding", honest, honest[0], np.random.default_rng(), 2)
    np.testing.assert_array_equal(got, -np.ones(10, np.float32))


# ---------------------------------------------------------------- ALIE and IPM


@pytest.mark.parametrize("n", range(1, 30))
def test_alie_z_max_follows_the_papers_formula(n):
    for f in range(0, n // 2 + 1):
        s = math.floor(n / 2 + 1) - f
        assert alie_z_max(n, f) == pytest.approx(norm.ppf((n - s) / n), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match=rf"num_byzantine={n // 2 + 1} is outside"):
        alie_z_max(n, n // 2 + 1)


def test_alie_z_max_for_seven_workers():
    # n = 7: s = 4 - f honest workers to win over, z = Phi^-1((7 - s) / 7).
    for f, quantile in [(1, 4 / 7), (2, 5 / 7), (3, 6 / 7)]:
        assert alie_z_max(7, f) == pytest.approx(statistics.NormalDist().inv_cdf(quantile))
    assert alie_z_max(7, 3) == pytest.approx(1.0676, abs=1e-4)


@pytest.mark.parametrize("h,f", [(2, 1), (4, 3), (5, 2), (6, 1), (1, 1)])
def test_alie_matches_a_per_coordinate_loop_reference(h, f):
    honest = honest_messages(10 + h, h, 64)
    for z in (None, 0.0, 1.5):
        got = craft("alie", honest, honest[0], np.random.default_rng(), f, z=z)
        z_used = alie_z_max(h + f, f) if z is None else z
        expected = [statistics.fmean(c) - z_used * (statistics.stdev(c) if h > 1 else 0.0)
                    for c in zip(*honest.astype(np.float64).tolist(), strict=True)]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 2.0, 100.0])
def test_ipm_is_minus_epsilon_times_the_honest_mean(epsilon):
    honest = honest_messages(20, 5, 64)
    got = craft("ipm", honest, honest[0], np.random.default_rng(), 2, epsilon=epsilon)
    expected = [-epsilon * statistics.fmean(c)
                for c in zip(*honest.astype(np.float64).tolist(), strict=True)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.dot(got.astype(np.float64), honest.mean(axis=0)) < 0


@pytest.mark.parametrize("name", OMNISCIENT_ATTACKS)
def test_omniscient_attacks_are_coordinate_wise_so_a_vote_shard_can_craft_them(name):
    honest = honest_messages(30, 4, 100)
    attack = make_crafted_attack(name, 3)
    whole = attack(honest, honest[0], np.random.default_rng())
    pieces = [attack(honest[:, a:b], honest[0, a:b], np.random.default_rng())
              for a, b in [(0, 13), (13, 64), (64, 100)]]
    if name == "colluding":  # its magnitude is one scalar over the message: compare signs
        np.testing.assert_array_equal(np.sign(np.concatenate(pieces)), np.sign(whole))
    else:
        np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=1e-6, atol=1e-7)


def test_attack_registry_and_errors_name_the_valid_choices():
    assert set(OMNISCIENT_ATTACKS) == {"colluding", "alie", "ipm"}
    assert ALL_ATTACKS == ATTACKS + OMNISCIENT_ATTACKS
    with pytest.raises(ValueError, match=r"attack='lie' is not one of \[.*'colluding'"):
        make_crafted_attack("lie", 1)
    with pytest.raises(ValueError, match="num_byzantine=-1"):
        make_crafted_attack("alie", -1)
    with pytest.raises(ValueError, match="epsilon=nan"):
        make_crafted_attack("ipm", 1, epsilon=float("nan"))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        craft("ipm", np.zeros(5), np.zeros(5), np.random.default_rng(), 1)
    with pytest.raises(ValueError, match=r"num_byzantine=4 is outside the allowed range \[0, 3\]"):
        craft("alie", np.zeros((3, 2)), np.zeros(2), np.random.default_rng(), 4)


# ---------------------------------------------------------------- against ByzFL (bench extra)


@pytest.fixture(scope="module")
def byzfl_attacks():
    """``byzfl.attacks``, loaded under a bare package stub: ByzFL's ``__init__`` also imports
    its benchmark, which needs torchvision (not installed here: it would replace the CPU
    torch), while the attacks only need numpy, torch and scipy."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        pytest.skip("byzfl (bench extra) is not installed; the plain references still run")
    with pytest.MonkeyPatch.context() as patch:
        if "byzfl" not in sys.modules:
            stub = types.ModuleType("byzfl")
            stub.__path__ = list(spec.submodule_search_locations)
            patch.setitem(sys.modules, "byzfl", stub)
        yield importlib.import_module("byzfl.attacks")


@pytest.mark.parametrize("seed,h,d", [(0, 4, 50), (1, 6, 7), (2, 2, 300)])
def test_attacks_match_byzfl(byzfl_attacks, seed, h, d):
    """Conventions: ByzFL's ALIE adds ``tau * std`` (ours subtracts ``z * std``: same with
    tau = -z); its IPM's ``tau`` is our ``epsilon``; its SignFlipping negates the honest
    mean (our ``negate`` negates the sender's own message: same when that is the mean)."""
    honest = honest_messages(seed, h, d)
    rng = np.random.default_rng()
    f = max(1, h // 2)
    for z in (None, 0.7):
        z_used = alie_z_max(h + f, f) if z is None else z
        np.testing.assert_allclose(craft("alie", honest, honest[0], rng, f, z=z),
                                   byzfl_attacks.ALittleIsEnough(tau=-z_used)(honest),
                                   rtol=1e-5, atol=1e-6)
    for epsilon in (0.1, 2.0):
        np.testing.assert_allclose(craft("ipm", honest, honest[0], rng, f, epsilon=epsilon),
                                   byzfl_attacks.InnerProductManipulation(tau=epsilon)(honest),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(craft("negate", honest, honest.mean(axis=0), rng, f),
                               byzfl_attacks.SignFlipping()(honest), rtol=1e-6, atol=1e-7)
