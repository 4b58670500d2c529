"""Benchmark: RMSE against forecast horizon for TT-LSTM and every baseline, several seeds.

    python scripts/bench_forecast.py                       # Genz, Lorenz and ETTh1, 3 seeds
    python scripts/bench_forecast.py --datasets lorenz --seeds 3 --epochs 40
    nice -n 10 python scripts/bench_forecast.py --datasets etth1 --no-ray   # plain processes

Synthetic data (Genz, Lorenz): every model in ``--models`` (LSTM and MLSTM parameter-matched to
the TT-LSTM), mean and std over seeds of the RMSE at every step ahead, and the relative gain of
TT-LSTM over LSTM at the longest horizon (per seed, paired, and of the means).
ETTh1 (7 variables, input 96): the recurrent models are trained once, for
``--etth1-recurrent-horizon`` (default 720), free-running with instance normalisation
(``--no-instance-norm`` turns it off), and scored at every shorter horizon on that horizon's
own test windows; DLinear is trained separately for each horizon (its usual protocol);
persistence needs no training. Metrics are the MSE and MAE over steps 1..H in normalised units
(train statistics), as in the DLinear / Informer tables; RMSE = sqrt(MSE). (The RMSE at the
*last* step alone flatters persistence on ETTh1: 96, 192, 336 and 720 hours are whole days,
where the daily cycle repeats.)

Runs go to a local Ray (``--ray``, the default: one task per (model, seed), as
``raysign forecast``) or, with ``--no-ray``, to ``--workers`` plain processes that inherit the
caller's niceness (Ray starts its workers at niceness 19, which on a machine shared with other
jobs leaves them almost no CPU) and never start Ray; ETTh1 then appends every finished run to
``etth1_runs.jsonl`` as it ends, and ``--resume <folder>`` continues a stopped ETTh1 bench
without repeating its finished runs.

Writes ``runs/bench_forecast/<timestamp>/``: one sub-folder per dataset (and horizon) with the
CSV tables and PNG figures of ``raysign forecast``, plus ``bench.csv`` and ``bench.json``
(and, for ETTh1, ``etth1_mse_vs_horizon.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.actors.forecast_job import compare  # noqa: E402
from raysign.forecast.config import ForecastConfig  # noqa: E402
from raysign.forecast.report import (  # noqa: E402
    relative_gain,
    summarise,
    write_figures,
    write_horizon_figure,
)
from raysign.forecast.train import run_forecast  # noqa: E402
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


def run_jobs(jobs: list[tuple[ForecastConfig, tuple[int, ...]]], workers: int,
             log: Path | None = None) -> list[dict[str, Any]]:
    """Every (config, eval horizons) job in ``workers`` spawned processes (one torch thread
    each), in order; each summary is appended to ``log`` (JSON lines) when it finishes."""
    results = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(run_forecast, config, write=False, threads=1,
                               eval_horizons=horizons) for config, horizons in jobs]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            print(f"  done: {result['model']} seed {result['seed']} "
                  f"({result['epochs_run']} epochs, {result['seconds_per_epoch']:.1f} s/epoch)",
                  flush=True)
            if log is not None:
                with open(log, "a") as fh:
                    fh.write(json.dumps(result) + "\n")
    return results


def run_group(base: ForecastConfig, models: list[str], seeds: int, args: argparse.Namespace,
              eval_horizons: tuple[int, ...] = ()) -> dict[str, Any]:
    """``compare`` on Ray, or the same runs in local processes with the same tables and
    figures under ``<results_dir>/<name>/``."""
    if args.ray:
        return compare(base, models, seeds, num_cpus=args.num_cpus,
                       eval_horizons=eval_horizons)
    jobs = [(dataclasses.replace(base, model=m, seed=base.seed + k), eval_horizons)
            for m in models for k in range(seeds)]
    return write_group(base, run_jobs(jobs, args.workers))


def write_group(base: ForecastConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary.csv``, ``rmse_per_horizon.csv`` and the figures of one group of runs."""
    folder = Path(base.results_dir) / base.name
    folder.mkdir(parents=True, exist_ok=True)
    table = summarise(results)
    RunDir(folder).write_csv("summary.csv", table)
    RunDir(folder).write_csv("rmse_per_horizon.csv", (
        {"model": r["model"], "seed": r["seed"], "step": k + 1, "rmse": v}
        for r in results for k, v in enumerate(r["test_rmse_per_horizon"])))
    write_figures(results, folder, title=base.dataset)
    return {"run_dir": str(folder), "table": table, "results": results}


def bench_synthetic(name: str, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    base = ForecastConfig(dataset=name, epochs=args.epochs, results_dir=str(root), name=name,
                          hidden_size=args.hidden_size, lags=args.lags, order=args.order,
                          rank=args.rank, lr=args.lr, **SYNTHETIC[name])
    out = run_group(base, args.models.split(","), args.seeds, args)
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


def bench_etth1(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    horizons = [int(h) for h in args.etth1_horizons.split(",")]
    trained = args.etth1_recurrent_horizon or max(horizons)
    base = ForecastConfig(dataset="etth1", input_len=96, horizon=trained,
                          epochs=args.etth1_epochs, stride=args.etth1_stride,
                          results_dir=str(root), name=f"etth1-recurrent-h{trained}",
                          hidden_size=args.hidden_size, lags=args.lags, order=args.order,
                          rank=args.rank, lr=args.etth1_lr, batch_size=32, patience=3,
                          teacher=args.etth1_teacher, instance_norm=args.instance_norm)
    recurrent = [m for m in args.models.split(",") if m in ("ttlstm", "ttrnn", "lstm", "mlstm")]
    scored = tuple(h for h in horizons if h <= trained)
    linear = {horizon: dataclasses.replace(  # DLinear as published: no instance normalisation
        base, horizon=horizon, stride=1, epochs=10, patience=3, lr=args.etth1_linear_lr,
        instance_norm=False, name=f"etth1-linear-h{horizon}") for horizon in horizons}
    if args.ray:
        runs = []
        if recurrent:
            runs += compare(base, recurrent, args.etth1_seeds, num_cpus=args.num_cpus,
                            eval_horizons=scored)["results"]
        for horizon, cfg in linear.items():
            runs += compare(cfg, ["dlinear", "persistence"], args.etth1_seeds,
                            num_cpus=args.num_cpus, eval_horizons=(horizon,))["results"]
    else:
        # One pool for everything: the cheap linear runs first, then the recurrent ones seed
        # by seed, so that an interrupted run has complete seeds in etth1_runs.jsonl.
        jobs = [(dataclasses.replace(cfg, model=m, seed=k), (horizon,))
                for k in range(args.etth1_seeds) for horizon, cfg in linear.items()
                for m in ("dlinear", "persistence")]
        jobs += [(dataclasses.replace(base, model=m, seed=k), scored)
                 for k in range(args.etth1_seeds) for m in recurrent]
        log = root / "etth1_runs.jsonl"
        kept = finished_runs(log, [config for config, _ in jobs])
        if kept:
            print(f"[etth1] resuming {root}: {len(kept)} of {len(jobs)} runs already in {log}")
        done = {run_key(r) for r in kept}
        runs = kept + run_jobs([(config, h) for config, h in jobs
                                if (config.model, config.seed, config.horizon) not in done],
                               args.workers, log=log)
        if recurrent:
            write_group(base, [r for r in runs if r["model"] in recurrent])
        for horizon, cfg in linear.items():
            write_group(cfg, [r for r in runs if r["model"] in ("dlinear", "persistence")
                              and len(r["test_rmse_per_horizon"]) == horizon])
    rows = etth1_rows(runs, horizons, recurrent, trained)
    write_horizon_figure(rows, root / "etth1_mse_vs_horizon.png", title="ETTh1")
    return rows


def run_key(summary: dict[str, Any]) -> tuple[str, int, int]:
    """(model, seed, trained horizon) of a ``run_forecast`` summary."""
    return summary["model"], summary["seed"], len(summary["test_rmse_per_horizon"])


def finished_runs(log: Path, configs: list[ForecastConfig]) -> list[dict[str, Any]]:
    """The summaries in ``log`` (JSON lines; none if it does not exist) of runs in
    ``configs``, one per (model, seed, horizon)."""
    wanted = {(c.model, c.seed, c.horizon) for c in configs}
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            summary = json.loads(line)
            if run_key(summary) in wanted:
                found[run_key(summary)] = summary
    return list(found.values())


def etth1_rows(runs: list[dict[str, Any]], horizons: list[int], recurrent: list[str],
               trained: int) -> list[dict[str, Any]]:
    """Per (horizon, model): MSE / MAE over steps 1..horizon, mean and std over the seeds
    found in ``runs`` (summaries of ``run_forecast``); printed as a table."""
    rows = []
    for horizon in horizons:
        print(f"[etth1] horizon {horizon}: MSE / MAE over steps 1..{horizon} (normalised), "
              "mean+-std over seeds")
        for model in [*(recurrent if horizon <= trained else []), "dlinear", "persistence"]:
            picked = [r for r in runs if r["model"] == model
                      and str(horizon) in r["test_by_horizon"]]
            if not picked:
                print(f"  {model:12s} no finished run")
                continue
            mse = np.array([r["test_by_horizon"][str(horizon)]["mse"] for r in picked])
            mae = np.array([r["test_by_horizon"][str(horizon)]["mae"] for r in picked])
            rows.append({"dataset": "etth1", "model": model, "horizon": horizon,
                         "trained_horizon": len(picked[0]["test_rmse_per_horizon"]),
                         "parameters": picked[0]["parameters"],
                         "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"]
                                                             for r in picked])),
                         "epochs_run": float(np.mean([r["epochs_run"] for r in picked])),
                         "mse_mean": float(mse.mean()), "mse_std": float(mse.std()),
                         "mae_mean": float(mae.mean()), "mae_std": float(mae.std()),
                         "rmse_mean": float(np.sqrt(mse).mean()),
                         "rmse_std": float(np.sqrt(mse).std()),
                         "seeds": sorted(r["seed"] for r in picked)})
            print(f"  {model:12s} {picked[0]['parameters']:>8,d} params  "
                  f"MSE {mse.mean():.3f}+-{mse.std():.3f}  MAE {mae.mean():.3f}+-{mae.std():.3f}"
                  f"  RMSE {np.sqrt(mse).mean():.3f}+-{np.sqrt(mse).std():.3f}"
                  f"  seeds {sorted(r['seed'] for r in picked)}"
                  f"  epochs {np.mean([r['epochs_run'] for r in picked]):.1f}")
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
    parser.add_argument("--etth1-horizons", default="96,192,336,720")
    parser.add_argument("--etth1-recurrent-horizon", type=int, default=0,
                        help="horizon the recurrent models are trained for (default: the "
                             "longest); they are scored at every listed horizon up to it")
    parser.add_argument("--etth1-epochs", type=int, default=10)
    parser.add_argument("--etth1-seeds", type=int, default=3)
    parser.add_argument("--etth1-stride", type=int, default=8,
                        help="stride between ETTh1 training windows of the recurrent models")
    parser.add_argument("--etth1-lr", type=float, default=1e-3)
    parser.add_argument("--etth1-teacher", default="free", help="scheduled, forcing or free")
    parser.add_argument("--instance-norm", action=argparse.BooleanOptionalAction, default=True,
                        help="ETTh1 recurrent models: normalise each window by its own "
                             "statistics (RevIN)")
    parser.add_argument("--etth1-linear-lr", type=float, default=1e-3,
                        help="DLinear learning rate (1e-3 reproduces the published 0.386 "
                             "MSE at horizon 96 with input 96)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True,
                        help="one Ray task per run (--no-ray: --workers local processes)")
    parser.add_argument("--workers", type=int, default=2, help="processes with --no-ray")
    parser.add_argument("--results-dir", default="runs")
    parser.add_argument("--resume", default="",
                        help="ETTh1 with --no-ray: continue the bench in this folder, keeping "
                             "the runs its etth1_runs.jsonl already holds")
    parser.add_argument("--from-log", default="",
                        help="only tabulate the ETTh1 runs of an etth1_runs.jsonl (e.g. of an "
                             "interrupted bench) with this bench's horizons and models")
    args = parser.parse_args()
    if args.from_log:
        runs = [json.loads(line) for line in Path(args.from_log).read_text().splitlines()]
        horizons = [int(h) for h in args.etth1_horizons.split(",")]
        recurrent = [m for m in args.models.split(",") if m in ("ttlstm", "ttrnn", "lstm",
                                                                "mlstm")]
        rows = etth1_rows(runs, horizons, recurrent,
                          args.etth1_recurrent_horizon or max(horizons))
        RunDir(Path(args.from_log).parent).write_csv("etth1_from_log.csv", rows)
        write_horizon_figure(rows, Path(args.from_log).parent / "etth1_mse_vs_horizon.png",
                             title="ETTh1")
        return 0
    if args.resume and (args.ray or args.datasets != "etth1"):
        parser.error("--resume continues an ETTh1 bench run with --no-ray --datasets etth1")
    if args.resume:
        run_dir = RunDir(args.resume)
        run_dir.write_json("config_resume.json", vars(args))
    else:
        run_dir = RunDir.create(args.results_dir, "bench_forecast")
        run_dir.write_json("config.json", vars(args))
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        rows += bench_etth1(args, run_dir.path) if name == "etth1" else bench_synthetic(
            name, args, run_dir.path)
        run_dir.write_csv("bench.csv", rows)
    run_dir.write_json("bench.json", {"rows": rows})
    print(f"results: {run_dir.path}")
    if args.ray:
        import ray

        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
