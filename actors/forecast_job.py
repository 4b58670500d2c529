"""``raysign forecast``: train and compare forecasters, one Ray task per (model, seed).

    raysign forecast --dataset lorenz --models ttlstm,lstm,mlstm,dlinear,persistence --seeds 3
    raysign forecast --csv my_series.csv --target OT --time-col date --split 0.7,0.1,0.2
    ray job submit --working-dir . -- python scripts/run_forecast.py --dataset lorenz --seeds 3

Each (model, seed) run is a Ray task with one CPU (one GPU when the cluster has them), so the
comparison spreads over a cluster; LSTM and MLSTM get the hidden size matching the TT-LSTM's
parameter count. Results land in ``runs/<name>/<timestamp>/``: ``config.json``,
``metrics.jsonl`` (one record per run), ``rmse_per_horizon.csv`` (model, seed, step, rmse),
``summary.csv`` (mean and spread per model), ``rmse_vs_horizon.png`` and ``rollouts.png``;
for a user's series (``--csv``) also ``forecasts.csv`` (model, time, horizon, target, forecast,
truth: every test forecast of the first seed of each model, in the series' units) and
``forecast_vs_truth.png``. Every path of this command starts (or joins) Ray; a bad
configuration or a bad series fails before it does. The driver reads a ``--csv`` series once
and hands the windows to the tasks, so the file need not exist on the other nodes.

``--results-dir`` and ``--data-dir`` take a path or a URI (``raysign.storage``). The tasks
read ETTh1 themselves: a data URI is copied once into each node's cache by the task, and a
path is checked on every node before the tasks start.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from raysign.config import ConfigError, add_config_arguments, check_choice, to_dict
from raysign.config import config_from_args as config_from_args_of
from raysign.data import data_location
from raysign.forecast.config import ETTH1, ForecastConfig
from raysign.forecast.models import MODELS
from raysign.storage import exists, is_uri, join

_HELP = {
    "dataset": "genz, lorenz or etth1 (a user's series: --csv)",
    "csv": "a user's series: CSV file with a header line, one row per time step",
    "target": "--csv: column(s) to forecast and score, comma-separated",
    "time_col": "--csv: column of dates (parsed, strictly increasing; default: row number)",
    "features": "--csv: input columns, comma-separated (default: every numeric column but "
                "--time-col; targets are always inputs)",
    "split": "--csv: train,validation,test fractions (0.7,0.1,0.2) or the first validation "
             "and first test date (2020-01-01,2021-01-01)",
    "model": "model of a single run (use --models for a comparison)",
    "data_dir": "folder holding forecast/ETTh1.csv, a path or a URI such as s3://bucket/data "
                "(default: $RAYSIGN_DATA, else ../shared/data)",
    "input_len": "burn-in window length (encoder steps)",
    "horizon": "forecast horizon (decoder steps)",
    "hidden_size": "hidden units H of the TT cell",
    "lags": "lagged hidden states L in the TT state",
    "order": "polynomial order p of the TT transition",
    "rank": "tensor-train rank r",
    "match_params": "give LSTM/MLSTM the TT-LSTM's parameter count (--no-match-params: "
                    "--hidden-size)",
    "instance_norm": "normalise every window by its own per-channel mean and std (RevIN)",
    "epochs": "maximum epochs",
    "batch_size": "mini-batch size",
    "lr": "Adam learning rate",
    "clip": "gradient-norm clipping threshold",
    "patience": "early stopping: epochs without validation improvement",
    "teacher": "scheduled (sampling), forcing or free",
    "num_sequences": "synthetic sequences (Genz / Lorenz)",
    "stride": "ETTh1 and --csv: stride between training / validation windows",
    "max_train_windows": "use at most N training windows (0 = all)",
    "seed": "first seed",
    "results_dir": "root folder for results: a path, or a URI such as s3://bucket/runs (in a "
                   "Ray job: storage every node reaches)",
    "name": "run name (runs/<name>/<timestamp>/)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ForecastConfig, _HELP)
    parser.add_argument("--models", default="ttlstm,lstm,mlstm,dlinear,persistence",
                        help=f"comma-separated models out of {list(MODELS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model")
    parser.add_argument("--eval-horizons", default="",
                        help="comma-separated steps ahead to tabulate (default: every 8th)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--address", default=None,
                        help="join: auto or host:port (default: $RAY_ADDRESS, else a private Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    return config_from_args_of(ForecastConfig, args)


def compare(base: ForecastConfig, models: list[str], seeds: int, *, threads: int = 1,
            address: str | None = None, num_cpus: int | None = None,
            eval_horizons: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run every (model, seed) as a Ray task; write tables and figures; return the summary
    (``eval_horizons``: also MSE / MAE over steps 1..h on each horizon-h test set). On ETTh1
    the tasks read the file: a URI must exist (each task copies it into its node's cache), a
    path must exist on every node (checked before the tasks start); ConfigError otherwise."""
    import ray
    from tqdm import tqdm

    from raysign.actors.cluster import connect, require_path_on_nodes
    from raysign.forecast.report import summarise, write_figures
    from raysign.results import RunDir

    for name in models:
        check_choice("models", name, MODELS)
    etth1, data = None, None
    if base.dataset == "csv":  # read (and checked) here, before Ray starts
        from raysign.forecast.train import load_data

        try:
            data = load_data(base)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if base.dataset == "etth1":
        # Every node reads the folder the driver names (the default resolved here, once).
        base = dataclasses.replace(base, data_dir=data_location(base.data_dir))
        etth1 = join(base.data_dir, ETTH1)
        if is_uri(etth1) and not exists(etth1):
            raise ConfigError(f"data_dir={base.data_dir!r} has no {ETTH1} ({etth1!r} does not "
                              "exist)")
    connect(address, num_cpus)
    if etth1 is not None and not is_uri(etth1):
        require_path_on_nodes(etth1, "data_dir")
    gpus = ray.cluster_resources().get("GPU", 0.0)
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus >= 1 else 0)(_one_run)
    run_dir = RunDir.create(base.results_dir, base.name)
    run_dir.write_json("config.json", {**to_dict(base), "models": models, "seeds": seeds})
    configs = [dataclasses.replace(base, model=m, seed=base.seed + k)
               for m in models for k in range(seeds)]
    data_ref = ray.put(data) if data is not None else None
    pending = {task.remote(c, threads, tuple(eval_horizons), data_ref): c for c in configs}
    results = []
    with tqdm(total=len(pending), desc="forecast runs") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            result = ray.get(done[0])
            pending.pop(done[0])
            run_dir.log({k: v for k, v in result.items() if k not in ("rollout", "forecasts")})
            results.append(result)
            bar.update(1)
    table = summarise(results)
    run_dir.write_csv("rmse_per_horizon.csv", (
        {"model": r["model"], "seed": r["seed"], "step": k + 1, "rmse": v}
        for r in results for k, v in enumerate(r["test_rmse_per_horizon"])))
    run_dir.write_csv("summary.csv", table)
    title = Path(base.csv).name if data is not None else base.dataset
    write_figures(results, run_dir.path, title=title)
    if data is not None:
        write_forecasts(results, run_dir, title)
    run_dir.close()
    return {"run_dir": run_dir.location, "table": table, "results": results}


def write_forecasts(results: list[dict[str, Any]], run_dir: Any, title: str) -> None:
    """``forecasts.csv`` and ``forecast_vs_truth.png`` of the first seed of every model."""
    import pandas as pd

    from raysign.forecast.report import write_forecast_figure

    first = {}
    for r in sorted(results, key=lambda r: r["seed"]):
        first.setdefault(r["model"], r["forecasts"])
    table = pd.concat([t.assign(model=m) for m, t in first.items()], ignore_index=True)
    table = table[["model", "time", "horizon", "target", "forecast", "truth"]]
    table.to_csv(run_dir.file("forecasts.csv"), index=False)
    write_forecast_figure(first, run_dir.file("forecast_vs_truth.png"), title=title)


def _one_run(config: ForecastConfig, threads: int, eval_horizons: tuple[int, ...] = (),
             data: Any = None) -> dict[str, Any]:
    from raysign.forecast.train import run_forecast

    return run_forecast(config, write=False, threads=threads, eval_horizons=eval_horizons,
                        data=data)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        for name in models:
            check_choice("models", name, MODELS)
    except ConfigError as err:  # fails before Ray starts
        raise SystemExit(f"raysign forecast: invalid configuration: {err}") from None
    try:
        out = compare(config, models, args.seeds, threads=args.threads, address=args.address,
                      num_cpus=args.num_cpus)
    except ConfigError as err:  # a bad series, or the data file is missing (on some node)
        raise SystemExit(f"raysign forecast: {err}") from None
    steps = ([int(s) for s in args.eval_horizons.split(",")] if args.eval_horizons
             else list(range(1, config.horizon + 1)) if config.horizon <= 12
             else sorted({*range(8, config.horizon + 1, 8), config.horizon}))
    print(f"{'model':12s} {'params':>8s} {'s/epoch':>8s} "
          + " ".join(f"{'h=' + str(s):>14s}" for s in steps))
    for row in out["table"]:
        cells = " ".join(f"{row[f'rmse_h{s}_mean']:.4f}+-{row[f'rmse_h{s}_std']:.4f}"
                         for s in steps)
        print(f"{row['model']:12s} {row['parameters']:8d} {row['seconds_per_epoch']:8.2f} {cells}")
    print(f"results: {out['run_dir']}")
    return 0

