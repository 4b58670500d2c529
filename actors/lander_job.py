"""``raysign lander``: the Neural Lander pipeline on Ray (Shi et al., ICRA 2019).

    raysign lander                               # 4 collection seeds, 10 evaluation seeds
    raysign lander --gamma 2 --width 32 --flights 4 --eval-seeds 3 --tasks landing,hover_10cm
    raysign land ...                             # the same (alias)
    raysign lander fit --logs flights.csv [--mass 1.47] [--height-col z] ...   # your own logs
    raysign lander logs --out flights.csv        # raysign's simulated flights in that format

1. **Collect**: one Ray task per seed flies ``--flights`` random near-ground flights
   (``raysign.lander.collect``) and returns (state, control, measured residual) samples.
2. **Train**: one Ray task per residual network: spectrally normalised (``--gamma``) and
   unnormalised, each on all data and on the data above ``--gen-min-height`` only.
3. **Evaluate**: one Ray task per (task, controller) runs ``--eval-seeds`` seeded episodes.

Results land in ``runs/<name>/<timestamp>/``: ``config.json``, ``residuals.json`` (samples,
loss, Lipschitz product against gamma, certified thrust contraction per network),
``metrics.jsonl`` (one record per episode), ``summary.csv`` (per task and controller),
``claims.csv`` (the targets checked per task) and ``trajectories.png``. ``--results-dir`` is a
path or a URI (``raysign.storage``); the simulated pipeline reads no data files.

``raysign lander fit`` fits the residual to a user's flight logs (``raysign.lander.logs``: a CSV
of height, velocity, thrust and measured acceleration) in this process, without Ray, and writes
``fit.json`` (samples, loss, Lipschitz bound), ``curve.csv`` and ``ground_effect.png`` (the
learned ground-effect curve, with the true one when ``--true-curve`` gives it) and the exported
residual ``residual.pt`` + ``residual.json`` (``raysign.lander.export``). ``raysign lander logs``
writes raysign's own simulated flights as such a CSV.
"""

from __future__ import annotations

import argparse
from typing import Any

from raysign.config import (
    ConfigError,
    add_config_arguments,
    check_choice,
    config_from_args,
    to_dict,
)
from raysign.lander.config import CONTROLLERS, LanderConfig
from raysign.lander.logs import FlightLogConfig
from raysign.lander.tasks import TASKS, check_task
from raysign.storage import check_location

_HELP = {
    "collect_seeds": "data-collection Ray tasks (one seed each)",
    "flights": "random near-ground flights per collection seed",
    "duration": "seconds per flight",
    "gamma": "Lipschitz bound of the spectrally normalised residual network",
    "width": "hidden units per layer",
    "depth": "linear layers",
    "steps": "Adam steps of residual training",
    "batch_size": "mini-batch size",
    "lr": "Adam learning rate",
    "gen_min_height": "training range of the *_gen networks starts at this height (m)",
    "eval_seeds": "seeded episodes per task and controller",
    "first_eval_seed": "evaluation seeds are seed + first_eval_seed + k, k < eval_seeds",
    "kp": "position gain of the PD loop (1/s^2)",
    "kd": "velocity gain of the PD loop (1/s)",
    "seed": "first seed (collection, training and evaluation)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LanderConfig, _HELP)
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"out of {list(TASKS)}, hover_<N>cm, landing_descend_<N>cms")
    parser.add_argument("--controllers", default=",".join(CONTROLLERS),
                        help=f"out of {list(CONTROLLERS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per task")
    parser.add_argument("--results-dir", default="runs",
                        help="root folder for results: a path, or a URI such as "
                             "s3://bucket/runs (in a Ray job: storage every node reaches)")
    parser.add_argument("--name", default="lander", help="run name (runs/<name>/<timestamp>/)")
    parser.add_argument("--address", default=None,
                        help="join: auto or host:port (default: $RAY_ADDRESS, else a private Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")
    modes = parser.add_subparsers(dest="mode", metavar="MODE",
                                  help="none: the simulated experiment on Ray (above)")
    fit = modes.add_parser("fit", help="fit the residual to your own flight logs (CSV), "
                                       "report its ground-effect curve, export it")
    fit.add_argument("--logs", required=True,
                     help="CSV with columns height (m), velocity (m/s), thrust (N), "
                          "acceleration (m/s^2); names set by the --*-col options")
    add_config_arguments(fit, FlightLogConfig, _FIT_HELP)
    fit.add_argument("--true-curve", default=None,
                     help="'raysign' (the logs come from raysign's simulator) or a CSV with "
                          "columns height, residual (m, m/s^2): drawn and compared")
    fit.add_argument("--threads", type=int, default=1, help="torch threads")
    fit.add_argument("--results-dir", default="runs", help="root folder for results")
    fit.add_argument("--name", default="lander_fit",
                     help="run name (runs/<name>/<timestamp>/)")
    logs = modes.add_parser("logs", help="write raysign's simulated flights as flight logs")
    logs.add_argument("--out", required=True, help="CSV to write")
    logs.add_argument("--flights", type=int, default=8, help="random near-ground flights")
    logs.add_argument("--duration", type=float, default=10.0, help="seconds per flight")
    logs.add_argument("--seed", type=int, default=0, help="seed of the flights")
    logs.add_argument("--accel-noise-std", type=float, default=0.05,
                      help="acceleration noise of the simulator (m/s^2)")


_FIT_HELP = {
    "height_col": "column of heights above the ground (m)",
    "velocity_col": "column of vertical velocities (m/s, up positive)",
    "thrust_col": "column of collective thrusts (N)",
    "accel_col": "column of measured vertical accelerations (m/s^2, up positive)",
    "mass": "vehicle mass of the nominal model a = T / m - g (kg)",
    "gravity": "gravity of the nominal model (m/s^2)",
    "ground_height": "rows at or below this height are on the ground and left out (m)",
    "near_ground_height": "rows below this height count as near the ground (m)",
    "min_near_ground": "airborne rows below --near-ground-height the fit needs",
    # The residual network and its training: the same options as the simulator's runs.
    **{k: _HELP[k] for k in ("gamma", "width", "depth", "steps", "batch_size", "lr")},
    "seed": "seed of the initial weights and the mini-batches",
}


def true_curve_from(spec: str | None, mass: float):
    """``--true-curve``: None, raysign's simulator curve for ``mass``, or a CSV's curve
    (linear interpolation in height); ConfigError if the CSV lacks ``height`` / ``residual``."""
    import numpy as np

    from raysign.lander.logs import read_flight_logs, simulator_curve

    if spec is None:
        return None
    if spec == "raysign":
        return lambda heights: simulator_curve(heights, mass)
    table = read_flight_logs(spec, "true curve", "height, residual")
    missing = [c for c in ("height", "residual") if c not in table.columns]
    if missing:
        raise ConfigError(f"true_curve={spec!r} has no column {missing[0]!r}; expected 'raysign' "
                          f"or a CSV with columns height, residual (columns: "
                          f"{list(table.columns)})")
    order = np.argsort(table["height"].to_numpy())
    z = table["height"].to_numpy(dtype=float)[order]
    f = table["residual"].to_numpy(dtype=float)[order]
    return lambda heights: np.interp(heights, z, f)


def run_fit(args: argparse.Namespace) -> dict[str, Any]:
    """``raysign lander fit``: every check, then the fit, the curve, the figure, the export."""
    import torch

    from raysign.lander.export import export_residual
    from raysign.lander.fitting import fit_residual_from_logs
    from raysign.lander.logs import read_flight_logs
    from raysign.lander.report import plot_ground_effect_curve
    from raysign.results import RunDir

    config = config_from_args(FlightLogConfig, args)
    true_curve = true_curve_from(args.true_curve, config.mass)
    check_location("results_dir", args.results_dir)
    logs = read_flight_logs(args.logs)
    torch.set_num_threads(args.threads)
    fit = fit_residual_from_logs(logs, config, source=f"flight logs {args.logs!r}",
                                 true_curve=true_curve)
    run_dir = RunDir.create(args.results_dir, args.name)
    run_dir.write_json("config.json", {**to_dict(config), "logs": args.logs,
                                       "true_curve": args.true_curve})
    metadata = export_residual(fit.net, run_dir.file("residual.pt"))
    report = {**fit.report, "exported": "residual.pt", "export": metadata}
    run_dir.write_json("fit.json", report)
    run_dir.write_csv("curve.csv", fit.curve.to_dict("records"))
    plot_ground_effect_curve(fit.curve, str(run_dir.file("ground_effect.png")),
                             config.near_ground_height)
    run_dir.close()
    print(f"[raysign lander fit] {fit.report['samples']} airborne samples "
          f"({fit.report['near_ground_samples']} below {config.near_ground_height} m), "
          f"final loss {fit.report['final_loss']:.4g} (m/s^2)^2")
    print(f"{'height m':>8s} {'learned f/m':>11s}" + (f" {'true f/m':>9s}"
                                                     if "true" in fit.curve else ""))
    for row in fit.curve.iloc[::5].itertuples():
        print(f"{row.height:8.2f} {row.residual:11.4f}"
              + (f" {row.true:9.4f}" if "true" in fit.curve else ""))
    if "curve_rmse" in fit.report:
        print(f"curve RMSE against the true curve: {fit.report['curve_rmse']:.4f} m/s^2")
    print(f"Lipschitz bound (product of the layers' spectral norms): "
          f"{fit.report['lipschitz_product']:.4f} <= gamma {config.gamma}; "
          f"|d f_a / d T| <= {fit.report['thrust_lipschitz_bound']:.4f}")
    print(f"results: {run_dir.location} (residual.pt: TorchScript, bound in residual.json)")
    return {"run_dir": run_dir.location, "report": report, "curve": fit.curve}


def run_logs(args: argparse.Namespace) -> None:
    """``raysign lander logs``: raysign's simulated flights written as flight logs."""
    from raysign.lander.collect import CollectConfig
    from raysign.lander.logs import simulated_flight_logs

    CollectConfig(flights=args.flights, duration=args.duration,
                  accel_noise_std=args.accel_noise_std)  # checks before flying
    logs = simulated_flight_logs(args.flights, args.duration, args.seed, args.accel_noise_std)
    logs.to_csv(args.out, index=False)
    print(f"[raysign lander logs] {len(logs)} rows of {args.flights} flights -> {args.out}")


def _collect(config: LanderConfig, seed: int) -> dict[str, Any]:
    from raysign.lander.collect import collect_flights

    return collect_flights(config.collect_config(), seed)


def _train(data: dict[str, Any], config: LanderConfig, gamma: float | None, min_height: float,
           threads: int) -> tuple[Any, dict[str, Any]]:
    import torch

    from raysign.lander.fitting import fit_residual

    torch.set_num_threads(threads)
    net, report = fit_residual(data, config, gamma, min_height)
    return net.to_numpy(), report


def _evaluate(residual: Any, name: str, task: str, config: LanderConfig) -> list[dict]:
    from raysign.lander.episodes import evaluate, make_controllers

    controller = make_controllers({name: residual}, config)[name]
    seeds = config.evaluation_seeds()
    return evaluate(controller, task, seeds)


NETWORKS = {  # controller -> (spectrally normalised?, restricted to the generalisation range?)
    "neural": (True, False), "nosn": (False, False),
    "neural_gen": (True, True), "nosn_gen": (False, True),
}


def check_selection(tasks: list[str], controllers: list[str]) -> None:
    """ConfigError naming the first task or controller that does not exist."""
    for task in tasks:
        check_task(task)
    for controller in controllers:
        check_choice("controllers", controller, CONTROLLERS)


def run_land(config: LanderConfig, tasks: list[str], controllers: list[str], *,
             threads: int = 1, results_dir: str = "runs", name: str = "lander",
             address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Collect, train and evaluate as Ray tasks; tables and figures in a RunDir."""
    import ray
    from tqdm import tqdm

    from raysign.actors.cluster import connect
    from raysign.lander.collect import merge
    from raysign.lander.report import plot_trajectories, summarise
    from raysign.lander.stats import check_claims
    from raysign.results import RunDir

    check_selection(tasks, controllers)
    check_location("results_dir", results_dir)
    connect(address, num_cpus)
    gpus = ray.cluster_resources().get("GPU", 0.0)
    run_dir = RunDir.create(results_dir, name)
    run_dir.write_json("config.json", {**to_dict(config), "tasks": tasks,
                                       "controllers": controllers})
    # 1. Collection: one task per seed.
    collect = ray.remote(num_cpus=1)(_collect)
    parts = ray.get([collect.remote(config, config.seed + k)
                     for k in range(config.collect_seeds)])
    data = merge(parts)
    print(f"[raysign lander] collected {len(data['z'])} samples from "
          f"{config.collect_seeds * config.flights} flights")
    data_ref = ray.put(data)
    # 2. Training: one task per network the chosen controllers need.
    train = ray.remote(num_cpus=1, num_gpus=1 if gpus >= 1 else 0)(_train)
    wanted = [c for c in controllers if c in NETWORKS]
    refs = {c: train.remote(data_ref, config, config.gamma if NETWORKS[c][0] else None,
                            config.gen_min_height if NETWORKS[c][1] else 0.0, threads)
            for c in wanted}
    residuals: dict[str, Any] = {"baseline": None, "oracle": None}
    reports = {}
    for controller, ref in refs.items():
        residuals[controller], reports[controller] = ray.get(ref)
        print(f"[raysign lander] {controller}: {reports[controller]}")
    run_dir.write_json("residuals.json", reports)
    # 3. Evaluation: one task per (task, controller).
    evaluate = ray.remote(num_cpus=1)(_evaluate)
    pending = {evaluate.remote(residuals[c], c, t, config): (t, c)
               for t in tasks for c in controllers}
    rows, recorded = [], []
    with tqdm(total=len(pending), desc="lander episodes") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            for episode in ray.get(done[0]):
                if "trajectory" in episode:
                    recorded.append(episode)
                record = {k: v for k, v in episode.items() if k != "trajectory"}
                run_dir.log(record)
                rows.append(record)
            bar.update(1)
    table = summarise(rows)
    claims = check_claims(table, rows)
    run_dir.write_csv("episodes.csv", rows)
    run_dir.write_csv("summary.csv", table)
    run_dir.write_csv("claims.csv", claims)
    plot_trajectories(recorded, str(run_dir.file("trajectories.png")))
    run_dir.close()
    print_tables(table, claims)
    print(f"results: {run_dir.location}")
    return {"run_dir": run_dir.location, "table": table, "claims": claims, "episodes": rows,
            "residuals": reports, "samples": int(len(data["z"])),
            "networks": {c: r for c, r in residuals.items() if r is not None}}


def print_tables(table: list[dict[str, Any]], claims: list[dict[str, Any]]) -> None:
    print(f"{'task':11s} {'controller':11s} {'mean|e| m':>10s} {'max|e| m':>9s} "
          f"{'touch':>5s} {'v_td m/s':>8s} {'t_td s':>7s} {'fp it':>6s} {'fp max':>6s} "
          f"{'contr':>6s}")
    for r in table:
        print(f"{r['task']:11s} {r['controller']:11s} {r['final_mean_abs_z_error']:10.4f} "
              f"{r['final_max_abs_z_error']:9.4f} {r['touchdowns']:5d} "
              f"{r['touchdown_speed_max']:8.4f} {r['time_to_touchdown_mean']:7.2f} "
              f"{r['fp_iterations_mean']:6.2f} {r['fp_iterations_max']:6d} "
              f"{r['fp_max_contraction']:6.3f}")
    for c in claims:
        print(f"{c['task']:11s} reduction {c['neural_reduction']:.1%} (>=80%: "
              f"{c['reduction_ge_80pct']}), touchdown no worse: {c['touchdown_speed_no_worse']}, "
              f"oracle <= neural: {c['oracle_le_neural']}, SN < noSN: {c['sn_beats_nosn']}, "
              f"outside range SN < noSN: {c['sn_beats_nosn_outside_range']}")


def run(args: argparse.Namespace) -> int:
    if args.mode is not None:
        try:
            run_fit(args) if args.mode == "fit" else run_logs(args)
        except ConfigError as err:
            raise SystemExit(f"raysign lander {args.mode}: {err}") from None
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    controllers = [c for c in args.controllers.split(",") if c]
    try:  # fails before Ray starts
        config = config_from_args(LanderConfig, args)
        check_selection(tasks, controllers)
        check_location("results_dir", args.results_dir)
    except ConfigError as err:
        raise SystemExit(f"raysign lander: invalid configuration: {err}") from None
    run_land(config, tasks, controllers, threads=args.threads, results_dir=args.results_dir,
             name=args.name, address=args.address, num_cpus=args.num_cpus)
    return 0
