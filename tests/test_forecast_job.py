"""End-to-end: ``raysign forecast`` comparison on Ray and the ``ttrnn`` Tune sweep (tiny)."""

from __future__ import annotations

import csv
import json

import pytest

from raysign.forecast.config import ForecastConfig


@pytest.mark.slow
@pytest.mark.ray
def test_forecast_comparison_writes_tables_and_figures(ray_session, tmp_path):
    from raysign.actors.forecast_job import compare

    base = ForecastConfig(dataset="genz", input_len=8, horizon=6, num_sequences=60, epochs=1,
                          hidden_size=6, lags=2, order=2, rank=2, results_dir=str(tmp_path),
                          name="cmp")
    out = compare(base, ["ttlstm", "lstm", "persistence"], seeds=2)
    run_dir = tmp_path / "cmp"
    (folder,) = list(run_dir.iterdir())
    for name in ("config.json", "metrics.jsonl", "summary.csv", "rmse_per_horizon.csv",
                 "rmse_vs_horizon.png", "rollouts.png"):
        assert (folder / name).is_file(), name
    with open(folder / "rmse_per_horizon.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3 * 2 * 6
    table = {row["model"]: row for row in out["table"]}
    assert set(table) == {"ttlstm", "lstm", "persistence"}
    assert all(row["seeds"] == 2 for row in table.values())
    assert table["persistence"]["parameters"] == 0
    gap = abs(table["lstm"]["parameters"] - table["ttlstm"]["parameters"])
    assert gap / table["ttlstm"]["parameters"] < 0.1  # coarse steps at this tiny size
    assert json.loads((folder / "config.json").read_text())["seeds"] == 2


@pytest.mark.slow
@pytest.mark.ray
def test_ttrnn_quick_sweep_reports_validation_rmse(ray_session, tmp_path):
    from raysign.actors.sweep import run_sweep

    summary = run_sweep("forecast", quick=True, num_samples=1, results_root=tmp_path)
    assert summary["errors"] == []
    assert summary["num_trials"] == 2
    assert summary["best_config"]["rank"] in (2, 4)
    assert 0.0 < summary["best_result"]["val_rmse"] < 10.0
