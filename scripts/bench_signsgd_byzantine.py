"""Every attack against every aggregator, 0 to 3 adversaries of 7 workers, on Fashion-MNIST.

Each cell is one distributed run (``SignSGDTrainer``, local Ray or ``$RAY_ADDRESS``) with the
same model, data, steps and per-worker batch; the score of an aggregator at f adversaries is
its worst test accuracy over the attacks (ByzFL's way of scoring), averaged over seeds.
Writes ``byzantine.csv`` (every run), ``worst_case.csv``, ``tables.md`` (the two tables of
docs/byzantine.md) and ``accuracy_vs_adversaries.png`` (worst case against the adversarial
fraction, the talk's figure) to ``runs/bench_signsgd_byzantine/<timestamp>/``.

Before training, the aggregators are timed side by side with ByzFL's implementations on the
same inputs (n = 7 vectors of the model's size) when ByzFL is installed (``pip install
--no-deps byzfl seaborn``; see docs/byzantine.md).

    python scripts/bench_signsgd_byzantine.py           # full grid: 3 seeds, 1 epoch each
    python scripts/bench_signsgd_byzantine.py --quick   # MLP, 150 steps, f in {0, 3}, 1 seed
    # ByzFL chains beside the vote (any --aggregator value of raysign signsgd):
    python scripts/bench_signsgd_byzantine.py --model mlp --max-steps 150 --attacks alie \
        --adversaries 3 --seeds 0 --aggregators vote median byzfl:NNM+TrMean byzfl:MDA
    # finish a grid:
    python scripts/bench_signsgd_byzantine.py --resume runs/bench_signsgd_byzantine/<timestamp>

``--resume`` reads that folder's ``byzantine.csv`` and ``config.json``, runs only the cells not
yet in it (same model, steps and learning rates), and appends to the same files, so a grid too
long for one sitting is finished in several.

A cell must be a function of (aggregator, attack, f, seed, model, steps) alone. Each row
records what could make it otherwise: the fewest voters any round counted against the
``num_workers`` expected, the rounds that counted fewer (apart from rounds in which a diverged
model made every worker abstain), rejected messages, workers that failed and were re-synced,
whether the honest replicas ended identical, the digest of the final parameters (so a re-run
can be compared bit for bit, not only to 4 decimals), the workers' torch thread count and the
code commit; ``environment.json`` holds the rest (torch, numpy, CPU). A cell in which any of
that happened (``disturbed``) is run again on freshly started actors, up to ``--retries``
times; a row still disturbed after that is marked in the tables.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.actors.cluster import connect  # noqa: E402
from raysign.actors.trainer import SignSGDTrainer  # noqa: E402
from raysign.results import RunDir  # noqa: E402
from raysign.signsgd import aggregators  # noqa: E402
from raysign.signsgd.attacks import ALL_ATTACKS  # noqa: E402
from raysign.signsgd.config import AGGREGATORS, SignSGDConfig  # noqa: E402
from raysign.signsgd.models import build_model, num_parameters  # noqa: E402

LR = {"vote": 1e-3}  # Signum; every fp32 aggregator uses --fp32-lr
ROOT = Path(__file__).resolve().parents[1]
# Marks in tables.md: a cell averaging a disturbed row, or one carried over from an earlier
# commit and not re-run (``provenance``).
DISTURBED_MARK, CARRIED_MARK = "†", "*"


def participation(records: list[dict], num_workers: int) -> dict:
    """What a run's per-step records say about who voted: the fewest voters counted in a
    round (over the vote shards) against the ``num_workers`` expected; the rounds that counted
    fewer while the honest loss was finite (``short_rounds``: a worker dropped, timed out or
    rejected) and those whose honest loss was not (``diverged_rounds``: the model diverged and
    the workers abstain, part of the computation, the same on every re-run); messages rejected;
    the ranks of workers that failed. ``disturbed``: a short round or a failed worker."""
    voters = [int(r["voters"]) for r in records]
    failed = sorted({int(rank) for r in records for rank in r.get("failed_workers", [])})
    finite = [math.isfinite(float(r.get("loss", 0.0))) for r in records]
    short = sum(v < num_workers and ok for v, ok in zip(voters, finite, strict=True))
    rejected = sum(int(r.get("rejected", 0)) for r in records)
    return {"expected_voters": num_workers, "min_voters": min(voters, default=0),
            "short_rounds": short, "diverged_rounds": finite.count(False),
            "rejected": rejected, "failed_workers": ";".join(map(str, failed)),
            "disturbed": bool(short or failed or len(records) == 0)}


def code_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def environment() -> dict:
    """The numerical environment a cell's bits depend on besides the code (the BLAS kernels
    torch picks differ between CPUs and thread counts)."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"commit": code_commit(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": cpu, "machine": platform.machine(),
            "blas": torch.__config__.show().splitlines()[3:5]}


def replica_facts(trainer: SignSGDTrainer) -> dict:
    """After a run: the digest of the first honest replica's parameters (the honest replicas
    were checked identical) and the torch thread count inside a worker (float reductions
    depend on it)."""
    return {"param_digest": ray.get(trainer.workers[trainer.honest[0]].checksum.remote()),
            "worker_threads": ray.get(trainer.workers[0].__ray_call__.remote(
                lambda self: torch.get_num_threads()))}


def byzfl_modules():
    """ByzFL's aggregators module, loaded without its torchvision-importing package init."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None:
        return None
    stub = types.ModuleType("byzfl")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("byzfl", stub)
    return importlib.import_module("byzfl.aggregators")


def time_aggregators(d: int, f: int, out: RunDir) -> None:
    values = np.random.default_rng(0).standard_normal((7, d), dtype=np.float32)
    peer = byzfl_modules()
    peers = {}
    if peer is not None:
        peers = {"mean": peer.Average(), "median": peer.Median(), "trimmed_mean": peer.TrMean(f=f),
                 "krum": peer.Krum(f=f), "multi_krum": peer.MultiKrum(f=f),
                 "centered_clipping": peer.CenteredClipping()}
    rows = []
    for name in aggregators.AGGREGATORS:
        ours = aggregators.make_aggregator(name, f)
        row = {"aggregator": name, "n": 7, "d": d, "f": f}
        for label, fn in (("raysign", ours), ("byzfl", peers.get(name))):
            if fn is None:
                continue
            fn(values)
            start = time.perf_counter()
            for _ in range(3):
                fn(values)
            row[f"{label}_ms"] = 1e3 * (time.perf_counter() - start) / 3
        if "byzfl_ms" in row:
            row["speedup_vs_byzfl"] = row["byzfl_ms"] / row["raysign_ms"]
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()), flush=True)
    out.write_csv("aggregator_timing.csv", rows)


def marks(rows: list[dict]) -> str:
    """The table marks for a cell made of ``rows``: ``*`` if one is carried over from an
    earlier commit and not reproduced, ``†`` if one was disturbed (``participation``)."""
    carried = any(is_carried(r) for r in rows)
    disturbed = any(r.get("disturbed") is True for r in rows)
    return (CARRIED_MARK if carried else "") + (DISTURBED_MARK if disturbed else "")


def markdown_tables(rows: list[dict], worst: list[dict], aggregators_: list[str],
                    adversaries: list[int]) -> str:
    """Two tables for the docs: the worst case over attacks (mean +- std over seeds) per
    aggregator and adversary count, and every attack at the largest adversary count. A cell
    carries ``marks`` of the rows it is computed from."""
    seeds = sorted({r["seed"] for r in rows})
    fs = [f for f in adversaries if any(w["adversaries"] == f for w in worst)]
    lines = [f"Worst case over attacks, mean +- std over seeds {seeds}:", "",
             "| aggregator | " + " | ".join(f"f = {f} ({100 * f / 7:.0f}%)" for f in fs) + " |",
             "|---|" + "---|" * len(fs)]
    for agg in aggregators_:
        cells = []
        for f in fs:
            w = [w for w in worst if w["aggregator"] == agg and w["adversaries"] == f]
            used = [r for r in rows if r["aggregator"] == agg and r["adversaries"] == f]
            cells.append(f"{w[0]['worst_case_accuracy']:.3f} +- {w[0]['spread']:.3f}"
                         f"{marks(used)}" if w else "-")
        lines.append(f"| {agg} | " + " | ".join(cells) + " |")
    top = max(fs) if fs else 0
    attacks = sorted({r["attack"] for r in rows if r["adversaries"] == top})
    lines += ["", f"Every attack at f = {top}, mean over seeds:", "",
              "| aggregator | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
    for agg in aggregators_:
        cells = []
        for attack in attacks:
            used = [r for r in rows if r["aggregator"] == agg
                    and r["attack"] == attack and r["adversaries"] == top]
            cells.append(f"{np.mean([r['test_accuracy'] for r in used]):.3f}{marks(used)}"
                         if used else "-")
        lines.append(f"| {agg} | " + " | ".join(cells) + " |")
    if any(marks([r]) for r in rows):
        lines += ["", f"{CARRIED_MARK}: includes a row carried over from an earlier commit and "
                  f"not reproduced (its provenance column); {DISTURBED_MARK}: includes a row in "
                  "which a round counted fewer voters than workers, a message was rejected or a "
                  "worker failed."]
    return "\n".join(lines) + "\n"


def summarise(rows: list[dict], aggregators_: list[str], adversaries: list[int], model: str,
              out: RunDir) -> list[dict]:
    """Worst case over attacks per (aggregator, f, seed), averaged over the seeds present;
    writes ``worst_case.csv`` and ``accuracy_vs_adversaries.png``."""
    worst = []
    for agg in aggregators_:
        for f in adversaries:
            per_seed = []
            for seed in sorted({r["seed"] for r in rows}):
                accs = [r["test_accuracy"] for r in rows if r["aggregator"] == agg
                        and r["adversaries"] == f and r["seed"] == seed]
                if accs:
                    per_seed.append(min(accs))
            if per_seed:
                worst.append({"aggregator": agg, "adversaries": f, "fraction": f / 7,
                              "worst_case_accuracy": float(np.mean(per_seed)),
                              "spread": float(np.std(per_seed)), "seeds": len(per_seed)})
    out.write_csv("worst_case.csv", worst)
    out.file("tables.md").write_text(markdown_tables(rows, worst, aggregators_, adversaries))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for agg in aggregators_:
        pts = [(100 * w["fraction"], w["worst_case_accuracy"], w["spread"]) for w in worst
               if w["aggregator"] == agg]
        if pts:
            x, y, err = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=agg)
    ax.set(xlabel="adversarial workers (%)", ylabel="worst-case test accuracy over attacks",
           title=f"Fashion-MNIST, 7 workers, {model}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.file("accuracy_vs_adversaries.png"), dpi=120)
    plt.close(fig)
    return worst


GRID_FIELDS = {"aggregators": None, "attacks": None, "adversaries": None, "seeds": None,
               "model": None, "epochs": None, "max_steps": None, "fp32_lr": None,
               "clip_tau": 10.0}


def resume(args: argparse.Namespace) -> tuple[RunDir, list[dict]]:
    """The run folder to finish and the cells it already holds; the grid comes from its
    config.json so the finished table is one consistent measurement."""
    folder = Path(args.resume)
    config_path, csv_path = folder / "config.json", folder / "byzantine.csv"
    if not config_path.is_file():
        raise SystemExit(f"--resume: {config_path} not found (expected an earlier run folder)")
    saved = json.loads(config_path.read_text())
    for field, default in GRID_FIELDS.items():
        setattr(args, field, saved[field] if default is None else saved.get(field, default))
    rows = read_rows(csv_path) if csv_path.is_file() else []
    print(f"resuming {folder}: {len(rows)} cells already measured", flush=True)
    return RunDir(folder), rows


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``byzantine.csv``, typed; columns an older file lacks stay absent."""
    types_ = {"adversaries": int, "seed": int, "test_accuracy": float, "steps": int,
              "wall_seconds": float, "expected_voters": int, "min_voters": int,
              "short_rounds": int, "diverged_rounds": int, "rejected": int, "resyncs": int,
              "worker_threads": int, "attempts": int, "load_average": float,
              "disturbed": lambda v: v == "True", "replicas_identical": lambda v: v == "True"}
    with open(path, newline="") as fh:
        return [{k: types_[k](v) if k in types_ and v != "" else v for k, v in r.items()}
                for r in csv.DictReader(fh)]


def label(aggregator: str, clip_tau: float) -> str:
    """The aggregator's name in the tables (centered clipping carries a non-default radius)."""
    if aggregator == "centered_clipping" and clip_tau != 10.0:
        return f"centered_clipping(tau={clip_tau:g})"
    return aggregator


def run_cell(trainer, config: SignSGDConfig, retries: int, start=SignSGDTrainer,
             facts=replica_facts):
    """One cell on ``trainer`` (reconfigured; None: ``start`` one), run again on freshly
    started actors while disturbed (``participation``, a re-sync, honest replicas that
    differed, or a run that raised), at most ``retries`` more times. Returns the trainer, the
    summary and the cell's record fields (``facts(trainer)`` among them)."""
    for attempt in range(1, retries + 2):
        if trainer is None:
            trainer = start(config, progress=False)
        else:
            trainer.reconfigure(config)  # same actors, fresh replicas: no start-up cost
        records: list[dict] = []
        try:
            summary = trainer.run(on_record=records.append)
        except (RuntimeError, ray.exceptions.RayError) as err:
            # A run that a fault ended (e.g. a worker killed for memory and restarted with
            # the first cell's configuration) is disturbed too: fresh actors, while retries last.
            print(f"  {config.name}: failed ({err.__class__.__name__}: "
                  f"{str(err).splitlines()[0][:200]}); again on fresh actors", flush=True)
            trainer.shutdown()
            trainer = None
            if attempt > retries:
                raise
            continue
        fields = participation(records, config.num_workers)
        fields["disturbed"] = bool(fields["disturbed"] or summary.resyncs
                                   or not summary.replicas_identical)
        fields.update(resyncs=summary.resyncs, replicas_identical=summary.replicas_identical,
                      **facts(trainer), attempts=attempt)
        if not fields["disturbed"] or attempt > retries:
            return trainer, summary, fields
        print(f"  {config.name}: disturbed ({fields}); again on fresh actors", flush=True)
        trainer.shutdown()
        trainer = None
    raise AssertionError("unreachable: the last attempt returns")


def cell_key(row: dict) -> tuple:
    return row["aggregator"], row["attack"], row["adversaries"], row["seed"]


def is_carried(row: dict) -> bool:
    """A row copied from an earlier commit's table, not re-run here (``carry_over``)."""
    return str(row.get("provenance", "")).endswith("not reproduced")


def carry_over(rows: list[dict], earlier: list[dict], commit: str) -> list[dict]:
    """``rows`` plus every row of ``earlier`` (a committed table from ``commit``) for a cell
    ``rows`` lacks, its provenance ``"<commit>, not reproduced"``: the tables stay complete,
    marked, and a ``--resume`` re-runs exactly those cells."""
    have = {cell_key(r) for r in rows}
    return rows + [{**r, "provenance": f"{commit}, not reproduced"} for r in earlier
                   if cell_key(r) not in have]


def measured(rows: list[dict]) -> set[tuple]:
    """The cells a ``--resume`` need not run: those measured, not carried over."""
    return {cell_key(r) for r in rows if not is_carried(r)}


def put_row(rows: list[dict], row: dict) -> None:
    """Put a measured row in place of a carried-over row of the same cell, or append it."""
    for i, r in enumerate(rows):
        if cell_key(r) == cell_key(row):
            rows[i] = row
            return
    rows.append(row)


def run_grid(args: argparse.Namespace, rows: list[dict], done: set, out: RunDir) -> list[dict]:
    """Every cell not in ``done``, on one set of actors reconfigured from cell to cell (the
    start-up of 8 processes would otherwise cost more than 150 training steps)."""
    trainer = None
    worst: list[dict] = []
    commit = code_commit()
    try:
        # Seeds outermost: after each seed the worst-case table and the figure cover every seed
        # finished so far, so a long grid stopped early still leaves complete, usable results.
        for seed in args.seeds:
            cells = [(agg, "none", 0) for agg in args.aggregators if 0 in args.adversaries]
            cells += list(itertools.product(args.aggregators, args.attacks,
                                            [f for f in args.adversaries if f]))
            for i, (agg, attack, f) in enumerate(cells, 1):
                if (label(agg, args.clip_tau), attack, f, seed) in done:
                    continue
                config = SignSGDConfig(model=args.model, aggregator=agg, num_byzantine=f,
                                       attack="negate" if attack == "none" else attack,
                                       lr=LR.get(agg, args.fp32_lr), epochs=args.epochs,
                                       max_steps=args.max_steps, seed=seed, num_workers=7,
                                       clip_tau=args.clip_tau, results_dir=str(out.path),
                                       name=f"{agg}-{attack}-{f}-{seed}")
                trainer, summary, fields = run_cell(trainer, config, args.retries)
                load = os.getloadavg()[0]
                put_row(rows, {"aggregator": label(agg, args.clip_tau), "attack": attack,
                               "adversaries": f, "seed": seed,
                               "test_accuracy": summary.test_accuracy, "steps": summary.steps,
                               "wall_seconds": summary.wall_seconds, **fields,
                               "load_average": round(load, 1), "provenance": commit})
                out.write_csv("byzantine.csv", rows)
                print(f"[seed {seed}: {i}/{len(cells)}] {agg:17s} {attack:13s} f={f}: "
                      f"{summary.test_accuracy:.4f}  ({summary.wall_seconds:.0f} s, load "
                      f"average {load:.1f}, min voters {fields['min_voters']}/7, "
                      f"{'DISTURBED' if fields['disturbed'] else 'clean'}, "
                      f"digest {fields['param_digest'][:8]})", flush=True)
            worst = summarise(rows, [label(a, args.clip_tau) for a in args.aggregators],
                              args.adversaries, args.model, out)
    finally:
        if trainer is not None:
            trainer.shutdown()
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--attacks", nargs="+", default=list(ALL_ATTACKS))
    parser.add_argument("--adversaries", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--fp32-lr", type=float, default=0.3)
    parser.add_argument("--clip-tau", type=float, default=10.0,
                        help="centered clipping's radius; rows are labelled "
                             "centered_clipping(tau=...) when it is not the default 10")
    parser.add_argument("--quick", action="store_true",
                        help="MLP, 150 steps, adversaries 0 and 3, seed 0")
    parser.add_argument("--results-dir", default="runs")
    parser.add_argument("--address", default=None)
    parser.add_argument("--retries", type=int, default=2,
                        help="run a disturbed cell (a round with fewer voters than workers, a "
                             "rejected message, a failed worker) again on fresh actors up to "
                             "this many times")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="finish the grid of an earlier run folder (its config is used); "
                             "carried-over rows are run again")
    parser.add_argument("--carry-over", nargs=2, metavar=("CSV", "COMMIT"), default=None,
                        help="fill the cells not measured here with the rows of an earlier "
                             "byzantine.csv from COMMIT, marked 'COMMIT, not reproduced'")
    parser.add_argument("--no-run", action="store_true",
                        help="only write the CSV and tables (after --resume / --carry-over)")
    args = parser.parse_args()
    if args.quick:
        args.model, args.max_steps, args.adversaries, args.seeds = "mlp", 150, [0, 3], [0]
    rows: list[dict] = []
    if args.resume:
        out, rows = resume(args)
    else:
        out = RunDir.create(args.results_dir, "bench_signsgd_byzantine")
        out.write_json("config.json", vars(args))
        time_aggregators(num_parameters(build_model(args.model)), max(args.adversaries), out)
    if args.carry_over:
        rows = carry_over(rows, read_rows(Path(args.carry_over[0])), args.carry_over[1])
        out.write_csv("byzantine.csv", rows)
    if args.no_run:
        worst = summarise(rows, [label(a, args.clip_tau) for a in args.aggregators],
                          args.adversaries, args.model, out)
    else:
        # One entry per sitting (a --resume may run on another machine or commit).
        env_path = out.file("environment.json")
        sittings = json.loads(env_path.read_text()) if env_path.is_file() else []
        out.write_json("environment.json", [*sittings, {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), **environment()}])
        done = measured(rows)
        connect(args.address)
        worst = run_grid(args, rows, done, out)
    for w in worst:
        print(f"{w['aggregator']:17s} f={w['adversaries']}: worst case "
              f"{w['worst_case_accuracy']:.4f} +- {w['spread']:.4f} over {w['seeds']} seeds")
    print(f"results: {out.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
