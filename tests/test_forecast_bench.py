"""Specifications of the forecasting bookkeeping: a stopped ETTh1 bench resumes without
repeating finished runs, its table is the mean / spread of exactly the runs it holds, and the
trials of a TT-LSTM sweep are read back from Ray Tune's folder with their ASHA outcome."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

HORIZONS = (96, 192, 336, 720)


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_forecast.py"
    spec = importlib.util.spec_from_file_location("bench_forecast", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_summary(model: str, seed: int, trained: int, scored: tuple[int, ...]) -> dict:
    """A ``run_forecast`` summary whose MSE encodes (model, seed, horizon), MAE half of it."""
    code = {"ttlstm": 1, "lstm": 2, "mlstm": 3, "dlinear": 4, "persistence": 5}[model]
    return {"model": model, "seed": seed, "parameters": 10 * code, "epochs_run": 2,
            "seconds_per_epoch": 1.0, "test_rmse_per_horizon": [0.0] * trained,
            "test_by_horizon": {str(h): {"mse": code + seed / 10 + h / 1e4,
                                         "mae": (code + seed / 10 + h / 1e4) / 2}
                                for h in scored}}


def bench_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        etth1_horizons=",".join(map(str, HORIZONS)), etth1_recurrent_horizon=0,
        etth1_epochs=1, etth1_stride=8, etth1_lr=1e-3, etth1_teacher="free", instance_norm=True,
        etth1_linear_lr=1e-3, etth1_seeds=3, hidden_size=4, lags=2, order=2, rank=2,
        models="ttlstm,lstm,dlinear,persistence", ray=False, workers=1,
        results_dir=str(tmp_path))


def test_resumed_etth1_bench_runs_only_the_missing_jobs_and_tabulates_all(bench, tmp_path,
                                                                          monkeypatch):
    # A stopped bench: every linear run, recurrent seed 0 and LSTM seed 1 finished; plus a
    # line of a model this bench does not run, which must be ignored.
    kept = [fake_summary(m, s, h, (h,)) for s in range(3) for h in HORIZONS
            for m in ("dlinear", "persistence")]
    kept += [fake_summary("ttlstm", 0, 720, HORIZONS), fake_summary("lstm", 0, 720, HORIZONS),
             fake_summary("lstm", 1, 720, HORIZONS), fake_summary("mlstm", 0, 720, HORIZONS)]
    log = tmp_path / "etth1_runs.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in kept))
    submitted = []

    def run_jobs(jobs, workers, log=None):
        submitted.extend((c.model, c.seed, c.horizon, h) for c, h in jobs)
        return [fake_summary(c.model, c.seed, c.horizon, h) for c, h in jobs]

    monkeypatch.setattr(bench, "run_jobs", run_jobs)
    monkeypatch.setattr(bench, "write_group", lambda base, runs: None)
    rows = bench.bench_etth1(bench_args(tmp_path), tmp_path)

    assert sorted(submitted) == [("lstm", 2, 720, HORIZONS), ("ttlstm", 1, 720, HORIZONS),
                                 ("ttlstm", 2, 720, HORIZONS)]
    assert (tmp_path / "etth1_mse_vs_horizon.png").is_file()
    table = {(r["model"], r["horizon"]): r for r in rows}
    assert set(table) == {(m, h) for m in ("ttlstm", "lstm", "dlinear", "persistence")
                          for h in HORIZONS}
    for (model, horizon), row in table.items():
        code = {"ttlstm": 1, "lstm": 2, "dlinear": 4, "persistence": 5}[model]
        mse = np.array([code + s / 10 + horizon / 1e4 for s in range(3)])
        assert row["seeds"] == [0, 1, 2]
        assert row["mse_mean"] == pytest.approx(mse.mean())
        assert row["mse_std"] == pytest.approx(mse.std())
        assert row["mae_mean"] == pytest.approx(mse.mean() / 2)
        assert row["rmse_mean"] == pytest.approx(np.sqrt(mse).mean())


def test_finished_runs_keeps_one_summary_per_wanted_run(bench, tmp_path):
    from raysign.forecast.config import ForecastConfig

    log = tmp_path / "runs.jsonl"
    first, again = fake_summary("lstm", 0, 720, (720,)), fake_summary("lstm", 0, 720, (720,))
    again["epochs_run"] = 7
    other_horizon = fake_summary("dlinear", 0, 96, (96,))
    log.write_text("".join(json.dumps(r) + "\n" for r in (first, again, other_horizon)))
    configs = [ForecastConfig(dataset="etth1", model="lstm", horizon=720, seed=0),
               ForecastConfig(dataset="etth1", model="dlinear", horizon=192, seed=0)]
    found = bench.finished_runs(log, configs)
    assert [(r["model"], r["epochs_run"]) for r in found] == [("lstm", 7)]
    assert bench.finished_runs(tmp_path / "missing.jsonl", configs) == []


def write_trial(folder: Path, trial_id: str, vals: list[float], *, final: dict | None = None,
                done: bool = True) -> None:
    """A Ray Tune trial folder: one result.json line per epoch, then the final report."""
    config = {"rank": 2, "order": 3, "lags": 2, "hidden_size": 8, "lr": 1e-3}
    lines = [{"val_rmse": v, "epoch": k + 1, "training_iteration": k + 1, "done": False,
              "trial_id": trial_id, "config": config, "time_total_s": float(k + 1)}
             for k, v in enumerate(vals)]
    if final is not None:
        lines.append({**lines[-1], **final, "training_iteration": len(vals) + 1})
    lines[-1]["done"] = done
    (folder / trial_id).mkdir(parents=True)
    (folder / trial_id / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_sweep_trials_and_asha_statistics_classify_every_trial(tmp_path):
    from raysign.forecast.report import asha_statistics, sweep_trials

    write_trial(tmp_path, "a", [0.9, 0.8, 0.85])                       # ASHA: rung 3
    write_trial(tmp_path, "b", [0.9, 0.7, 0.6, 0.65, 0.7], final={      # early stopping
        "val_rmse": 0.6, "test_rmse": 0.5, "test_rmse_last": 0.7, "parameters": 99})
    write_trial(tmp_path, "c", [1.0, 0.95, 0.99])                      # ASHA: rung 3
    write_trial(tmp_path, "d", [1.2, 1.1, 1.0, 0.9], done=False)       # cut off by the end
    trials = sweep_trials(tmp_path)
    assert [(t["trial_id"], t["status"], t["epochs"]) for t in trials] == [
        ("b", "completed", 5), ("a", "stopped", 3), ("d", "running", 4), ("c", "stopped", 3)]
    assert [t["best_val_rmse"] for t in trials] == [0.6, 0.8, 0.9, 0.95]
    assert trials[0]["test_rmse_last"] == 0.7 and trials[1]["test_rmse"] is None
    assert trials[0]["rank"] == 2 and trials[0]["parameters"] == 99
    stats = asha_statistics(trials, max_epochs=30)
    assert stats == {"trials": 4, "by_status": {"completed": 1, "stopped": 2, "running": 1},
                     "stopped_after_epochs": {3: 2}, "completed_after_epochs": {5: 1},
                     "epochs_trained": 15, "epochs_without_stopping": 120}
