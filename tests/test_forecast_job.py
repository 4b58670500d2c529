"""End-to-end: ``raysign forecast`` comparison on Ray and the forecast Tune sweep (tiny)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raysign.forecast.config import ForecastConfig
from raysign.forecast.train import load_data, run_forecast


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


def tune_trials(sweep_dir: str) -> list[list[dict]]:
    """Every trial's reports, read with plain json from Ray Tune's own ``result.json`` files
    (one line per ``tune.report``) under ``<sweep run dir>/tune/<sweep>/<trial>/``."""
    files = sorted(Path(sweep_dir).glob("tune/*/*/result.json"))
    return [[json.loads(line) for line in f.read_text().splitlines()] for f in files]


@pytest.mark.slow
@pytest.mark.ray
def test_forecast_quick_sweep_picks_the_trial_with_the_lowest_validation_rmse(
        ray_session, tmp_path, one_torch_thread):
    from raysign.actors.sweep import run_sweep

    summary = run_sweep("forecast", quick=True, num_samples=1, results_root=tmp_path)
    assert summary["errors"] == []
    trials = tune_trials(summary["run_dir"])
    assert trials and summary["num_trials"] == len(trials)
    for reports in trials:
        epochs = [r["val_rmse"] for r in reports if "train_mse" in r]
        # A trial's last report is its best epoch (early stopping restores the best weights).
        assert "test_rmse" in reports[-1] and reports[-1]["val_rmse"] == min(epochs)
    best = min(trials, key=lambda reports: reports[-1]["val_rmse"])[-1]
    assert summary["best_result"]["val_rmse"] == best["val_rmse"]
    assert summary["best_config"] == best["config"]

    # The best configuration trained again here, outside Ray, gives the same validation RMSE,
    # and beats persistence (repeat the last value) on the same windows, computed in numpy.
    fields = {k: v for k, v in summary["best_config"].items()
              if k in ForecastConfig.__dataclass_fields__}
    config = ForecastConfig(**fields)
    again = run_forecast(config, write=False, threads=1)
    assert again["best_val_rmse"] == pytest.approx(best["val_rmse"], rel=1e-6)
    val = load_data(config).val
    inputs, targets = val.inputs.numpy(), val.targets.numpy()
    persistence = np.sqrt(np.mean((targets - inputs[:, -1:, :]) ** 2))
    assert best["val_rmse"] < persistence


def test_forecast_command_rejects_a_bad_config_without_ray():
    """Every ``raysign forecast`` run uses Ray; a bad configuration is rejected before, so the
    rejection works where ``ray`` cannot even be imported."""
    without_ray = ("import sys; sys.modules['ray'] = None; from raysign.cli import main; "
                   "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", without_ray, "forecast", "--order", "0"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert done.stderr.strip() == ("raysign forecast: invalid configuration: order=0 is "
                                   "outside the allowed range [1, 8]")

