"""The scarce-and-noisy-data extrapolation experiment: its data, error measures and summary,
each against an independent numpy computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raysign.lander.collect import CollectConfig, collect_flights
from raysign.lander.env import GRAVITY, GroundEffectModel
from raysign.lander.extrapolation import (
    CURVE_HEIGHTS,
    METRICS,
    ExtrapolationConfig,
    grid_errors,
    replicate_data,
    run_replicate,
    summarise_extrapolation,
)
from raysign.lander.report import plot_extrapolation
from raysign.lander.stats import paired_difference

MASS = 1.47


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_replicate_data_keeps_the_training_range_and_adds_the_stated_label_noise():
    # A high cut so that this short flight has samples on both sides of it.
    config = ExtrapolationConfig(flights=1, duration=5.0, label_noise_std=0.5, min_height=0.7)
    data = replicate_data(config, replicate=0)
    raw = collect_flights(CollectConfig(flights=1, duration=5.0), seed=0)
    keep = raw["z"] >= 0.7
    assert 100 < len(data["z"]) == int(keep.sum()) < len(raw["z"])
    np.testing.assert_array_equal(data["z"], raw["z"][keep])
    noise = data["residual"] - raw["residual"][keep]
    assert noise.std() == pytest.approx(0.5, rel=0.1) and abs(noise.mean()) < 0.1
    # Against the true residual: process noise 0.05 and label noise 0.5 add in quadrature.
    truth = GroundEffectModel()(data["z"], data["v"], data["thrust"]) / MASS
    assert (data["residual"] - truth).std() == pytest.approx(np.hypot(0.05, 0.5), rel=0.1)


def test_grid_errors_are_zero_for_the_truth_and_the_true_residual_for_zero():
    truth = GroundEffectModel()
    assert grid_errors(truth, 0.0, 0.12) == (0.0, 0.0)
    rms, largest = grid_errors(lambda z, v, t: 0.0, 0.0, 0.12)
    values = np.array([truth(z, v, t) for z in np.arange(9) * 0.12 / 9
                       for v in (-0.5, -0.25, 0.0, 0.25, 0.5)
                       for t in MASS * GRAVITY * np.array([0.7, 0.85, 1.0, 1.15, 1.3])]) / MASS
    assert rms == pytest.approx(np.sqrt(np.mean(values**2)), rel=1e-12)
    assert largest == pytest.approx(np.abs(values).max(), rel=1e-12)


def test_summary_reports_mean_sample_std_and_paired_wins():
    rng = np.random.default_rng(0)
    rows = [{"network": net, "replicate": k, **{m: float(rng.uniform()) for m in METRICS}}
            for k in range(4) for net in ("sn", "nosn")]
    table = {r["metric"]: r for r in summarise_extrapolation(rows)}
    for metric in METRICS:
        sn = np.array([r[metric] for r in rows if r["network"] == "sn"])
        free = np.array([r[metric] for r in rows if r["network"] == "nosn"])
        row = table[metric]
        assert row["sn_mean"] == pytest.approx(sn.mean())
        assert row["nosn_std"] == pytest.approx(np.std(free, ddof=1))
        assert row["sn_smaller"] == sum(a < b for a, b in zip(sn, free, strict=True))
        assert row["replicates"] == 4


def test_paired_difference_matches_the_t_table_and_the_exact_signed_rank_distribution():
    sn = np.array([0.05, 0.02, 0.03, 0.01, 0.04])
    nosn = sn + np.array([0.010, 0.030, 0.005, 0.020, 0.015])
    out = paired_difference(sn, nosn)
    d = nosn - sn
    se = np.std(d, ddof=1) / np.sqrt(5)
    assert out["diff_mean"] == pytest.approx(0.016)
    assert out["diff_t"] == pytest.approx(0.016 / se)
    # t(0.975, 4 d.o.f.) = 2.776 (any t table).
    assert out["diff_ci_low"] == pytest.approx(0.016 - 2.776 * se, rel=1e-3)
    assert out["diff_ci_high"] == pytest.approx(0.016 + 2.776 * se, rel=1e-3)
    # All five differences positive: exact two-sided signed-rank p = 2 / 2^5.
    assert out["diff_p_wilcoxon"] == pytest.approx(2 / 32)
    assert out["diff_positive"] == 5
    assert out["diff_p_t"] < 0.05 < out["diff_p_wilcoxon"]
    flipped = paired_difference(nosn, sn)
    assert flipped["diff_ci_high"] == pytest.approx(-out["diff_ci_low"])
    assert flipped["diff_positive"] == 0


def test_extension_runs_the_stated_replicates():
    assert list(ExtrapolationConfig(replicates=20, first_replicate=5).replicate_ids) == list(
        range(5, 25))
    with pytest.raises(ValueError, match="first_replicate"):
        ExtrapolationConfig(first_replicate=-1)


def test_one_replicate_trains_both_networks_on_the_same_data_and_reports_every_metric():
    config = ExtrapolationConfig(replicates=1, flights=1, duration=3.0, width=8, steps=30,
                                 eval_seeds=1, gamma=1.0)
    data = replicate_data(config, 0)
    sn = run_replicate(config, 0, spectral=True, data=data)
    free = run_replicate(config, 0, spectral=False, data=data)
    assert sn["samples"] == free["samples"] == len(data["z"])
    assert set(METRICS) <= set(sn) and set(METRICS) <= set(free)
    assert sn["lipschitz_product"] <= 1.0 * (1 + 1e-6)
    # Hover errors are physical: below the 0.5 m start height, non-negative.
    assert all(0.0 <= sn[f"{t}_error"] < 0.5 for t in ("hover_5cm", "hover_10cm", "hover_20cm"))
    # The stored curve is the network's output: the same network trained again (same data and
    # seed) and evaluated by its torch forward pass at hover thrust and rest.
    import torch

    from raysign.lander.fitting import fit_residual

    net, _ = fit_residual(data, config.lander_config(0), config.gamma)
    heights = np.asarray(CURVE_HEIGHTS)
    features = net.scales.features(heights, np.zeros_like(heights),
                                   np.full_like(heights, MASS * GRAVITY))
    with torch.no_grad():
        forward = net(torch.from_numpy(features)).numpy()
    assert np.allclose(sn["curve"], forward, atol=1e-5)
    # ... and its distance from the true ground effect at the point heights is the reported
    # residual error.
    truth = GroundEffectModel(MASS)
    for h in (0.0, 0.05, 0.10, 0.20, 0.50):
        learned = sn["curve"][int(np.argmin(np.abs(heights - h)))]
        assert abs(learned - truth(h, 0.0, MASS * GRAVITY) / MASS) == pytest.approx(
            sn[f"residual_err_{round(h * 100)}cm"], rel=1e-6, abs=1e-9)


def test_extrapolation_figure_is_written(tmp_path):
    rows = [{"network": n, "replicate": k, "curve": list(np.linspace(0, 1, 51) * (k + 1)),
             "hover_5cm_error": 0.05 + 0.001 * k, "hover_10cm_error": 0.01 * (k + 1)}
            for n in ("sn", "nosn") for k in range(3)]
    rows.append({**rows[0], "replicate": 7})  # a replicate whose no-SN row is still missing
    plot_extrapolation(rows, 0.12, str(tmp_path / "e.png"))
    assert (tmp_path / "e.png").stat().st_size > 10_000


def test_bench_reuses_only_the_missing_replicates_of_runs_with_the_same_settings(tmp_path):
    import importlib.util

    from raysign.config import to_dict
    from raysign.results import RunDir

    spec = importlib.util.spec_from_file_location(
        "bench_lander", Path(__file__).resolve().parents[1] / "scripts" / "bench_lander.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    earlier = RunDir(tmp_path / "earlier")
    earlier.write_json("config.json", to_dict(ExtrapolationConfig(replicates=3,
                                                                  first_replicate=4)))
    for k in (4, 5, 6):
        for net in ("sn", "nosn"):
            earlier.log({"replicate": k, "network": net}, "replicates.jsonl")
    pooled = ExtrapolationConfig(replicates=6)  # replicates 0-5
    rows = bench.reused_rows(earlier, pooled, have={(4, "sn")})
    assert sorted((r["replicate"], r["network"]) for r in rows) == [
        (4, "nosn"), (5, "nosn"), (5, "sn")]
    with pytest.raises(ValueError, match="steps"):
        bench.reused_rows(earlier, ExtrapolationConfig(replicates=6, steps=10), have=set())
