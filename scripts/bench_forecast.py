"""Benchmark: RMSE against forecast horizon for TT-LSTM and every baseline, several seeds.

    python scripts/bench_forecast.py                       # Genz, Lorenz and ETTh1, 3 seeds
    python scripts/bench_forecast.py --datasets lorenz --seeds 3 --epochs 40

Synthetic data (Genz, Lorenz): every model in ``--models`` (LSTM and MLSTM parameter-matched to
the TT-LSTM), mean and std over seeds of the RMSE at every step ahead, and the relative gain of
TT-LSTM over LSTM at the longest horizon (per seed, paired, and of the means).
ETTh1 (7 variables, input 96): the recurrent models are trained once for horizon 720 and scored
on the prefixes 96/192/336/720; DLinear is trained separately for each horizon (its usual
protocol); persistence needs no training. Metrics are the MSE over steps 1..H in
normalised units (train statistics), as in the DLinear/Informer tables; RMSE = sqrt(MSE).

Writes ``runs/bench_forecast/<timestamp>/``: one sub-folder per dataset (and horizon) with the
CSV tables and PNG figures of ``raysign forecast``, plus ``bench.csv`` and ``bench.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.forecast_job import compare  # noqa: E402
from raysign.forecast.report import relative_gain  # noqa: E402
from raysign.forecast.train import ForecastConfig  # noqa: E402
from raysign.results import RunDir  # noqa: E402

SYNTHETIC = {
    "genz": dict(input_len=12, horizon=36, num_sequences=600),
    "lorenz": dict(input_len=24, horizon=40, num_sequences=600),
}
ETTH1_HORIZONS = (96, 192, 336, 720)


def paired_gains(results: list[dict[str, Any]], model: str, baseline: str) -> list[float]:
    """Per-seed ``1 - RMSE_last(model) / RMSE_last(baseline)``."""
    last = {(r["model"], r["seed"]): r["test_rmse_last"] for r in results}
    seeds = sorted(s for (m, s) in last if m == model and (baseline, s) in last)
    return [1.0 - last[(model, s)] / last[(baseline, s)] for s in seeds]


def bench_synthetic(name: str, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    base = ForecastConfig(dataset=name, epochs=args.epochs, results_dir=str(root), name=name,
                          hidden_size=args.hidden_size, lags=args.lags, order=args.order,
                          rank=args.rank, lr=args.lr, **SYNTHETIC[name])
    out = compare(base, args.models.split(","), args.seeds, num_cpus=args.num_cpus)
    horizon = base.horizon
    rows = []
    for row in out["table"]:
        rows.append({"dataset": name, "model": row["model"], "parameters": row["parameters"],
                     "hidden_size": row["hidden_size"],
                     "seconds_per_epoch": row["seconds_per_epoch"],
                     "rmse_all_mean": row["test_rmse_mean"], "rmse_all_std": row["test_rmse_std"],
                     "horizon": horizon, "rmse_last_mean": row[f"rmse_h{horizon}_mean"],
                     "rmse_last_std": row[f"rmse_h{horizon}_std"]})
    models = {r["model"] for r in out["table"]}
    if {"ttlstm", "lstm"} <= models:
        gains = paired_gains(out["results"], "ttlstm", "lstm")
        mean_gain = relative_gain(out["table"], "ttlstm", "lstm", horizon)
        print(f"[{name}] TT-LSTM vs LSTM at step {horizon}: gain of means {100 * mean_gain:.1f}%"
              f", per seed {[round(100 * g, 1) for g in gains]}% (>=10% wanted)")
        rows.append({"dataset": name, "model": "ttlstm_vs_lstm_gain_last",
                     "rmse_last_mean": mean_gain, "per_seed": json.dumps(gains)})
    return rows


def _mse_upto(curves: np.ndarray, horizon: int) -> np.ndarray:
    """Per-seed MSE over steps 1..horizon from per-step RMSE curves [seeds, H]."""
    return (curves[:, :horizon] ** 2).mean(axis=1)


def bench_etth1(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    base = ForecastConfig(dataset="etth1", input_len=96, horizon=max(ETTH1_HORIZONS),
                          epochs=args.etth1_epochs, stride=args.etth1_stride,
                          results_dir=str(root), name="etth1-recurrent",
                          hidden_size=args.hidden_size, lags=args.lags, order=args.order,
                          rank=args.rank, lr=args.lr, batch_size=32, patience=3)
    recurrent = [m for m in args.models.split(",") if m in ("ttlstm", "ttrnn", "lstm", "mlstm")]
    runs = compare(base, recurrent, args.etth1_seeds, num_cpus=args.num_cpus)["results"]
    for horizon in ETTH1_HORIZONS:
        cfg = dataclasses.replace(base, horizon=horizon, stride=1, epochs=args.epochs,
                                  name=f"etth1-linear-h{horizon}", patience=5)
        runs += [dict(r, horizon_trained=horizon)
                 for r in compare(cfg, ["dlinear", "persistence"], args.etth1_seeds,
                                  num_cpus=args.num_cpus)["results"]]
    rows = []
    for horizon in ETTH1_HORIZONS:
        print(f"[etth1] horizon {horizon}: MSE over steps 1..{horizon} (normalised), mean+-std")
        for model in [*recurrent, "dlinear", "persistence"]:
            picked = [r for r in runs if r["model"] == model
                      and r.get("horizon_trained", horizon) == horizon]
            curves = np.array([r["test_rmse_per_horizon"] for r in picked])
            mse = _mse_upto(curves, horizon)
            rows.append({"dataset": "etth1", "model": model, "horizon": horizon,
                         "parameters": picked[0]["parameters"],
                         "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"]
                                                             for r in picked])),
                         "mse_mean": float(mse.mean()), "mse_std": float(mse.std()),
                         "rmse_all_mean": float(np.sqrt(mse).mean()),
                         "rmse_last_mean": float(curves[:, horizon - 1].mean()),
                         "seeds": len(picked)})
            print(f"  {model:12s} {picked[0]['parameters']:>8,d} params  "
                  f"MSE {mse.mean():.4f}+-{mse.std():.4f}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="genz,lorenz,etth1")
    parser.add_argument("--models", default="ttlstm,lstm,mlstm,dlinear,persistence")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument("--lags", type=int, default=3)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--etth1-epochs", type=int, default=6)
    parser.add_argument("--etth1-seeds", type=int, default=3)
    parser.add_argument("--etth1-stride", type=int, default=24,
                        help="stride between ETTh1 training windows of the recurrent models")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--results-dir", default="runs")
    args = parser.parse_args()
    run_dir = RunDir.create(args.results_dir, "bench_forecast")
    run_dir.write_json("config.json", vars(args))
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        rows += bench_etth1(args, run_dir.path) if name == "etth1" else bench_synthetic(
            name, args, run_dir.path)
        run_dir.write_csv("bench.csv", rows)
    run_dir.write_json("bench.json", {"rows": rows})
    print(f"results: {run_dir.path}")
    import ray

    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
