"""Neural Lander benchmark (Shi et al., ICRA 2019, sec. VI), three suites:

- ``1d`` (default): baseline vs Neural Lander vs the unnormalised network vs the oracle on the
  1-D environment, landing from 1-2 m and hovering at 5, 10 and 20 cm, 10 seeds per task and
  controller (the pipeline of ``raysign lander``);
- ``3d``: the same tasks on the 3-D point-mass environment with a lateral offset
  (``raysign.lander.episodes3d``), baseline vs Neural Lander vs oracle, plus lateral error;
- ``extrapolation``: spectral normalisation against none outside the training range with scarce,
  noisy data (``raysign.lander.extrapolation``; the design is in its docstring).

    python scripts/bench_lander.py                      # 1d, the defaults of ``raysign lander``
    python scripts/bench_lander.py --eval-seeds 3 --flights 4 --steps 1000   # quicker
    python scripts/bench_lander.py --suite 3d --num-cpus 2
    python scripts/bench_lander.py --suite extrapolation --num-cpus 2
    python scripts/bench_lander.py --suite extrapolation --replicates 20 --first-replicate 5 \
        --num-cpus 1 [--resume runs/bench_lander_extrapolation/<stamp>]
    python scripts/bench_lander.py --suite extrapolation --replicates 25 --num-cpus 1 \
        --reuse runs/bench_lander_extrapolation/<stamp>       # pooled, computes 0-4 only
    ray job submit --working-dir . -- python scripts/bench_lander.py

Data collection, training and evaluation run as Ray tasks. Prints the tables; writes CSVs to
``runs/<name>/<timestamp>/`` (``bench.csv``: final mean |z error| with the ratio to the
baseline's of the same run; ``extrapolation.csv`` (with the paired differences, their 95%
intervals and p values) and ``replicates.csv`` / ``replicates.jsonl`` for that suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.actors import lander_job  # noqa: E402
from raysign.config import (  # noqa: E402
    ConfigError,
    add_config_arguments,
    check_choice,
    config_from_args,
    to_dict,
)
from raysign.lander.config import LanderConfig  # noqa: E402
from raysign.lander.episodes3d import CONTROLLERS_3D  # noqa: E402
from raysign.lander.extrapolation import ExtrapolationConfig  # noqa: E402
from raysign.lander.tasks import check_task  # noqa: E402
from raysign.results import RunDir  # noqa: E402

SUITES = ("1d", "3d", "extrapolation")
_EXTRAPOLATION_HELP = {
    "replicates": "data and network seeds (each trains one SN and one unnormalised network)",
    "first_replicate": "seed of the first replicate",
    "flights": "random near-ground flights per replicate",
    "duration": "seconds per flight",
    "label_noise_std": "extra Gaussian noise on the measured residual labels (m/s^2)",
    "min_height": "training samples only at or above this height (m)",
    "gamma": "Lipschitz bound of the spectrally normalised network",
    "width": "hidden units per layer",
    "depth": "linear layers",
    "steps": "Adam steps of residual training",
    "eval_seeds": "seeded hover episodes per height and network",
}


def ratio_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary table with each controller's final mean |z error| relative to the
    baseline's of the same task (NaN without a baseline)."""
    base = {r["task"]: r["final_mean_abs_z_error"] for r in table
            if r["controller"] == "baseline"}
    keep = ("final_max_abs_z_error", "final_mean_lateral_error", "final_max_lateral_error",
            "touchdowns", "touchdown_speed_mean", "touchdown_speed_std", "touchdown_speed_max",
            "time_to_touchdown_mean", "descent_end_speed_mean", "descent_end_speed_std",
            "descent_end_speed_max", "min_height_mean", "min_height_min", "airborne_s_mean",
            "fp_iterations_mean", "fp_iterations_max", "fp_max_contraction", "fp_all_converged")
    return [{"task": r["task"], "controller": r["controller"],
             "final_mean_abs_z_error": r["final_mean_abs_z_error"],
             "ratio_to_baseline": r["final_mean_abs_z_error"] / base[r["task"]]
             if base.get(r["task"]) else float("nan"),
             **{k: r[k] for k in keep if k in r}} for r in table]


def print_rows(rows: list[dict[str, Any]]) -> None:
    print("\nfinal mean |z error| relative to the baseline (same run):")
    for r in rows:
        lateral = (f"  lateral {r['final_mean_lateral_error']:.4f} m"
                   if "final_mean_lateral_error" in r else "")
        print(f"  {r['task']:11s} {r['controller']:11s} {r['final_mean_abs_z_error']:.4f} m"
              f"  x{r['ratio_to_baseline']:.3f}  touchdowns {r['touchdowns']}"
              f"  v_td max {r['touchdown_speed_max']:.4f}  t_td {r['time_to_touchdown_mean']:.2f}"
              f"  fp {r['fp_iterations_mean']:.2f}/{r['fp_iterations_max']}{lateral}")
    print("\ntouchdown and descent (downward speed when the reference reaches its height):")
    for r in rows:
        print(f"  {r['task']:11s} {r['controller']:11s} touchdowns {r['touchdowns']:2d}"
              f"  v_td mean {r['touchdown_speed_mean']:.4f} std {r['touchdown_speed_std']:.4f}"
              f" max {r['touchdown_speed_max']:.4f} m/s  descent-end speed mean"
              f" {r['descent_end_speed_mean']:.4f} std {r['descent_end_speed_std']:.4f} max"
              f" {r['descent_end_speed_max']:.4f} m/s  lowest z mean {r['min_height_mean']:.4f}"
              f" min {r['min_height_min']:.4f} m  airborne {r['airborne_s_mean']:.2f} s")


def write_cancellation(run_dir: RunDir, networks: dict[str, Any],
                       config: LanderConfig) -> None:
    """Per learned network and hover height: residual error, the ground effect's stiffness and
    the part left uncancelled, and the noise floor of mean |e| it predicts next to the oracle's
    (``cancellation.csv``)."""
    from raysign.lander.env import GroundEffectLanderEnv
    from raysign.lander.fitting import ground_effect_cancellation, noise_floor_error

    env = GroundEffectLanderEnv()
    rows = []
    for name, residual in networks.items():
        for r in ground_effect_cancellation(residual, [0.05, 0.10, 0.20]):
            rows.append({"network": name, **r,
                         "predicted_error": noise_floor_error(
                             config.kp, config.kd, env.accel_noise_std, env.dt,
                             r["leftover_stiffness"], r["residual_error"]),
                         "predicted_oracle_error": noise_floor_error(
                             config.kp, config.kd, env.accel_noise_std, env.dt)})
    if not rows:
        return
    run_dir.write_csv("cancellation.csv", rows)
    print("\nground-effect cancellation while hovering (stiffness in 1/s^2, errors in m):")
    for r in rows:
        print(f"  {r['network']:11s} {r['height']:.2f} m  residual error "
              f"{r['residual_error']:+.4f} m/s^2  stiffness {r['true_stiffness']:.2f}, left "
              f"{r['leftover_stiffness']:+.2f}  predicted mean |e| {r['predicted_error']:.5f}"
              f" (oracle {r['predicted_oracle_error']:.5f})")


def write_paired(run_dir: RunDir, episodes: list[dict[str, Any]]) -> None:
    """The oracle against Neural Lander per task, paired by seed, with the bound's
    non-inferiority decision (``paired.csv``), and Neural Lander's touchdown speed against
    the baseline's (``touchdown.csv``)."""
    from raysign.lander.report import plot_touchdown
    from raysign.lander.stats import oracle_bound, touchdown_comparison

    rows = oracle_bound(episodes)
    if rows:
        run_dir.write_csv("paired.csv", rows)
        print(f"\noracle - neural, final mean |z error| paired by seed (m); the bound holds if "
              f"the interval ends below +{rows[0]['margin']:.4f} m:")
    for r in rows:
        print(f"  {r['task']:11s} {r['second_mean']:.5f} - {r['first_mean']:.5f} = "
              f"{r['diff_mean']:+.5f}  95% CI [{r['diff_ci_low']:+.5f}, {r['diff_ci_high']:+.5f}]"
              f"  p(t) {r['diff_p_t']:.3f}  p(Wilcoxon) {r['diff_p_wilcoxon']:.3f}"
              f"  oracle larger in {r['diff_positive']}/{r['seeds']} seeds  bound holds: "
              f"{r['bound_holds']}, strictly below: {r['strictly_below']}")
    touch = touchdown_comparison(episodes)
    if not touch:
        return
    run_dir.write_csv("touchdown.csv", touch)
    plot_touchdown(episodes, str(run_dir.file("touchdown.png")))
    print("\ntouchdown speed, neural - baseline, paired by seed (m/s); no worse if the interval "
          f"ends below +{touch[0]['margin']:.0%} of the baseline's mean:")
    for r in touch:
        print(f"  {r['task']:22s} touchdowns {r['second_touchdowns']}/{r['seeds']} vs "
              f"{r['first_touchdowns']}/{r['seeds']}  mean {r['second_mean']:.4f} vs "
              f"{r['first_mean']:.4f}  max {r['second_max']:.4f} vs {r['first_max']:.4f}"
              + (f"  diff {r['diff_mean']:+.4f} [{r['diff_ci_low']:+.4f}, "
                 f"{r['diff_ci_high']:+.4f}]" if "diff_mean" in r else "")
              + f"  no worse: {r['no_worse']}")


def run_1d(args: argparse.Namespace) -> int:
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(LanderConfig)}
    out = lander_job.run_land(LanderConfig(**fields), args.tasks.split(","),
                              args.controllers.split(","), threads=args.threads,
                              results_dir=args.results_dir, name=args.name,
                              address=args.address, num_cpus=args.num_cpus)
    rows = ratio_rows(out["table"])
    RunDir(out["run_dir"]).write_csv("bench.csv", rows)
    print_rows(rows)
    write_paired(RunDir(out["run_dir"]), out["episodes"])
    write_cancellation(RunDir(out["run_dir"]), out["networks"], LanderConfig(**fields))
    for name, report in out["residuals"].items():
        print(f"  {name:11s} Lipschitz product {report['lipschitz_product']:.3f} "
              f"(gamma {report['gamma']}), certified |df/dT| <= "
              f"{report['thrust_lipschitz_bound']:.3f}, samples {report['samples']}")
    return 0


def _train(data: dict[str, Any], config: LanderConfig, gamma: float | None,
           threads: int) -> tuple[Any, dict[str, Any]]:
    import torch

    from raysign.lander.fitting import fit_residual

    torch.set_num_threads(threads)
    net, report = fit_residual(data, config, gamma)
    return net.to_numpy(), report


def _evaluate_3d(residual: Any, name: str, task: str, config: LanderConfig) -> list[dict]:
    from raysign.lander.episodes3d import evaluate_3d, make_controllers_3d

    controller = make_controllers_3d({name: residual}, config)[name]
    return evaluate_3d(controller, task, config.evaluation_seeds())


def run_3d(args: argparse.Namespace) -> int:
    """Collect 1-D flights (the vertical residual of the 3-D env is the 1-D one), train the
    networks and fly the 3-D tasks, all as Ray tasks."""
    import ray

    from raysign.actors.cluster import connect
    from raysign.lander.collect import collect_flights, merge
    from raysign.lander.report import summarise_3d

    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(LanderConfig)}
    config = LanderConfig(**fields)
    tasks, controllers = args.tasks.split(","), args.controllers_3d.split(",")
    for task in tasks:
        check_task(task)
    for controller in controllers:
        check_choice("controllers_3d", controller, CONTROLLERS_3D)
    connect(args.address, args.num_cpus)
    run_dir = RunDir.create(args.results_dir, args.name + "3d")
    run_dir.write_json("config.json", {**to_dict(config), "tasks": tasks,
                                       "controllers": controllers, "suite": "3d"})
    collect = ray.remote(num_cpus=1)(collect_flights)
    data = merge(ray.get([collect.remote(config.collect_config(), config.seed + k)
                          for k in range(config.collect_seeds)]))
    data_ref = ray.put(data)
    train = ray.remote(num_cpus=1)(_train)
    gammas = {"neural": config.gamma, "nosn": None}
    refs = {c: train.remote(data_ref, config, gammas[c], args.threads)
            for c in controllers if c in gammas}
    residuals: dict[str, Any] = {"baseline": None, "oracle": None}
    reports = {}
    for name, ref in refs.items():
        residuals[name], reports[name] = ray.get(ref)
        print(f"[bench 3d] {name}: {reports[name]}")
    run_dir.write_json("residuals.json", reports)
    evaluate = ray.remote(num_cpus=1)(_evaluate_3d)
    episodes = ray.get([evaluate.remote(residuals[c], c, t, config)
                        for t in tasks for c in controllers])
    rows = [e for batch in episodes for e in batch]
    table = summarise_3d(rows)
    run_dir.write_csv("episodes.csv", rows)
    run_dir.write_csv("summary.csv", table)
    bench = ratio_rows(table)
    run_dir.write_csv("bench.csv", bench)
    print(f"[bench 3d] {len(data['z'])} samples")
    print_rows(bench)
    write_paired(run_dir, rows)
    write_cancellation(run_dir, {c: r for c, r in residuals.items() if r is not None}, config)
    print(f"[bench 3d] results: {run_dir.path}")
    return 0


def reused_rows(run_dir: RunDir, config: ExtrapolationConfig,
                have: set[tuple[int, str]]) -> list[dict[str, Any]]:
    """The rows of ``run_dir``'s ``replicates.jsonl`` that this run would compute itself: its
    settings equal ``config``'s but for the replicate range (replicate ``k`` depends on its
    seed only), the replicate is one of ``config``'s and not in ``have``."""
    from raysign.results import read_jsonl

    stored = json.loads(run_dir.file("config.json").read_text())
    ours = to_dict(config)
    other = {k for k in ours if stored.get(k) != ours[k]} - {"replicates", "first_replicate"}
    if other:
        raise ValueError(f"--reuse {run_dir.path}: settings {sorted(other)} differ from this "
                         f"run's ({ {k: stored.get(k) for k in other} } vs "
                         f"{ {k: ours[k] for k in other} })")
    return [r for r in read_jsonl(run_dir.file("replicates.jsonl"))
            if r["replicate"] in config.replicate_ids
            and (r["replicate"], r["network"]) not in have]


def run_extrapolation(args: argparse.Namespace) -> int:
    """One Ray task per (replicate, network type); both types of a replicate share its data.
    Each finished row is appended to ``replicates.jsonl`` at once; ``--resume DIR`` continues
    a run in ``DIR`` (same configuration), skipping the rows it already has; ``--reuse DIR ...``
    takes the replicates other runs of the same settings already computed."""
    import ray

    from raysign.actors.cluster import connect
    from raysign.lander.extrapolation import (
        replicate_data,
        run_replicate,
        summarise_extrapolation,
    )
    from raysign.lander.report import plot_extrapolation
    from raysign.results import read_jsonl

    config = config_from_args(ExtrapolationConfig, args)
    if args.resume:
        run_dir = RunDir(args.resume)
        stored = json.loads(run_dir.file("config.json").read_text())
        if stored != to_dict(config):
            raise ValueError(f"--resume {args.resume}: its config.json {stored} differs from "
                             f"this run's {to_dict(config)}")
        log = run_dir.file("replicates.jsonl")
        rows = read_jsonl(log) if log.exists() else []
    else:
        run_dir = RunDir.create(args.results_dir, args.name + "_extrapolation")
        run_dir.write_json("config.json", to_dict(config))
        rows = []
    for folder in args.reuse or []:
        for row in reused_rows(RunDir(folder), config,
                               {(r["replicate"], r["network"]) for r in rows}):
            run_dir.log(row, "replicates.jsonl")  # so that --resume finds it
            rows.append(row)
    done = {(r["replicate"], r["network"]) for r in rows}

    def replicate(k: int, spectral: bool) -> dict[str, Any]:
        import torch

        torch.set_num_threads(args.threads)
        return run_replicate(config, k, spectral, replicate_data(config, k))

    todo = [(k, spectral) for k in config.replicate_ids for spectral in (True, False)
            if (k, "sn" if spectral else "nosn") not in done]
    if todo:
        connect(args.address, args.num_cpus)
        task = ray.remote(num_cpus=1)(replicate)
        pending = {task.remote(k, spectral): (k, spectral) for k, spectral in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(ready[0])
            row = ray.get(ready[0])
            run_dir.log(row, "replicates.jsonl")
            rows.append(row)
            print(f"[bench extrapolation] replicate {row['replicate']} {row['network']}: "
                  f"hover 5/10 cm {row['hover_5cm_error']:.4f} / "
                  f"{row['hover_10cm_error']:.4f} m", flush=True)
    rows.sort(key=lambda r: (r["replicate"], r["network"] != "sn"))
    table = summarise_extrapolation(rows)
    run_dir.write_csv("replicates.csv", [{k: v for k, v in r.items() if k != "curve"}
                                         for r in rows])
    run_dir.write_csv("extrapolation.csv", table)
    if any("curve" in r for r in rows):
        plot_extrapolation(rows, config.min_height, str(run_dir.file("extrapolation.png")))
    print(f"\n{'metric':20s} {'SN mean':>9s} {'noSN mean':>9s}  SN smaller  "
          f"{'noSN-SN':>8s} {'95% CI':>19s} {'p (t)':>7s} {'p (W)':>7s}")
    for r in table:
        print(f"{r['metric']:20s} {r['sn_mean']:9.4f} {r['nosn_mean']:9.4f}  "
              f"{r['sn_smaller']:4d}/{r['replicates']:<4d}  {r['diff_mean']:8.4f} "
              f"[{r['diff_ci_low']:8.4f}, {r['diff_ci_high']:8.4f}] {r['diff_p_t']:7.4f} "
              f"{r['diff_p_wilcoxon']:7.4f}")
    failed = [(r["network"], r["replicate"]) for r in rows if not r["fp_all_converged"]]
    print(f"fixed-point solves that did not converge (network, replicate): {failed or 'none'}")
    print(f"[bench extrapolation] results: {run_dir.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite", default="1d", choices=SUITES)
    suite = pre.parse_known_args(argv)[0].suite
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[pre])
    if suite == "extrapolation":
        add_config_arguments(parser, ExtrapolationConfig, _EXTRAPOLATION_HELP)
        parser.add_argument("--threads", type=int, default=1, help="torch threads per task")
        parser.add_argument("--results-dir", default="runs", help="root folder for results")
        parser.add_argument("--name", default="lander", help="run name prefix")
        parser.add_argument("--address", default=None, help="Ray cluster address")
        parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
        parser.add_argument("--resume", default=None,
                            help="continue the run in this folder (same settings)")
        parser.add_argument("--reuse", nargs="*", default=None,
                            help="take the replicates these runs already computed (same "
                            "settings, other replicate range)")
    else:
        lander_job.add_arguments(parser)
        parser.add_argument("--controllers-3d", default="baseline,neural,oracle",
                            help=f"3d suite: out of {list(CONTROLLERS_3D)}")
    parser.set_defaults(name="bench_lander")
    args = parser.parse_args(argv)
    try:
        return {"1d": run_1d, "3d": run_3d, "extrapolation": run_extrapolation}[suite](args)
    except ConfigError as err:  # raised by the checks before any work starts
        raise SystemExit(f"bench_lander: invalid configuration: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
