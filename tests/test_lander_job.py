"""``raysign land`` and the lander sweep: end to end on a tiny configuration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from raysign.results import read_jsonl


@pytest.mark.slow
@pytest.mark.ray
def test_land_collects_trains_and_evaluates_as_ray_tasks(ray_session, tmp_path):
    from raysign.actors.lander_job import run_land
    from raysign.lander.experiment import LanderConfig

    config = LanderConfig(collect_seeds=2, flights=1, duration=3.0, steps=100, width=16,
                          eval_seeds=1, gamma=2.0)
    out = run_land(config, ["hover_10cm"], ["baseline", "neural", "nosn", "oracle"],
                   results_dir=str(tmp_path), name="land")
    run_dir = Path(out["run_dir"])
    for name in ("config.json", "residuals.json", "metrics.jsonl", "summary.csv",
                 "claims.csv", "episodes.csv", "trajectories.png"):
        assert (run_dir / name).is_file(), name
    episodes = read_jsonl(run_dir / "metrics.jsonl")
    assert len(episodes) == 4
    residuals = json.loads((run_dir / "residuals.json").read_text())
    assert residuals["neural"]["lipschitz_product"] <= 2.0 * (1 + 1e-6)
    assert residuals["neural"]["samples"] == out["samples"] > 400
    with open(run_dir / "summary.csv") as fh:
        table = {row["controller"]: row for row in csv.DictReader(fh)}
    # The baseline sits centimetres above 10 cm in ground effect; the oracle cancels it.
    assert float(table["baseline"]["final_mean_abs_z_error"]) > 0.03
    assert float(table["oracle"]["final_mean_abs_z_error"]) < 0.005
    assert table["neural"]["fp_all_converged"] == "True"


@pytest.mark.slow
@pytest.mark.ray
def test_lander_quick_sweep_reports_the_error_and_the_lipschitz_bound(ray_session, tmp_path):
    from raysign.actors.sweep import run_sweep

    summary = run_sweep("lander", quick=True, results_root=tmp_path)
    assert summary["errors"] == [] and summary["num_trials"] == 2
    best = summary["best_result"]
    assert best["neural_mean_error"] > 0.0
    assert best["lipschitz_product"] <= best["gamma"] * (1 + 1e-6)
