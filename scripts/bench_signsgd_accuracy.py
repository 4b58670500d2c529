"""Accuracy of majority-vote Signum against fp32-mean SGD, with and without adversaries.

Fashion-MNIST, the CNN, 7 workers, the same epochs and per-worker batch for every run, in one
local Ray session (or the cluster at $RAY_ADDRESS). Writes ``accuracy.csv`` and
``accuracy_vs_adversaries.png`` (the talk's Byzantine figure) to
``runs/bench_signsgd_accuracy/<timestamp>/`` and prints the table.

    python scripts/bench_signsgd_accuracy.py                # 11 runs, 2 epochs each
    python scripts/bench_signsgd_accuracy.py --plan short   # the 8 runs of the README table
    python scripts/bench_signsgd_accuracy.py --epochs 0.2   # a quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from raysign.actors.cluster import connect  # noqa: E402
from raysign.actors.trainer import SignSGDTrainer  # noqa: E402
from raysign.results import RunDir  # noqa: E402
from raysign.signsgd.config import SignSGDConfig  # noqa: E402

LR = {"vote": 1e-3, "mean": 1.0}
PLAN = (
    [("vote", "negate", 0), ("mean", "negate", 0)]
    + [("vote", "negate", k) for k in (1, 2, 3)]
    + [("vote", "scaled_negate", k) for k in (1, 2, 3)]
    + [("mean", "scaled_negate", k) for k in (1, 2, 3)]
)
# The runs the README's table needs (--plan short): 8 instead of 11.
SHORT = {("vote", "negate", 0), ("mean", "negate", 0), ("vote", "negate", 1),
         ("vote", "negate", 2), ("vote", "negate", 3), ("vote", "scaled_negate", 3),
         ("mean", "scaled_negate", 1), ("mean", "scaled_negate", 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--num-workers", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default="runs")
    parser.add_argument("--address", default=None)
    parser.add_argument("--plan", choices=["full", "short"], default="full")
    args = parser.parse_args()
    connect(args.address)
    out = RunDir.create(args.results_dir, "bench_signsgd_accuracy")
    rows = []
    plan = [p for p in PLAN if args.plan == "full" or p in SHORT]
    for aggregator, attack, adversaries in plan:
        config = SignSGDConfig(aggregator=aggregator, attack=attack, num_byzantine=adversaries,
                               lr=LR[aggregator], epochs=args.epochs, seed=args.seed,
                               num_workers=args.num_workers, results_dir=str(out.path),
                               name=f"{aggregator}-{attack}-{adversaries}")
        trainer = SignSGDTrainer(config, progress=True)
        try:
            summary = trainer.run()
        finally:
            trainer.shutdown()
        row = {"aggregator": aggregator, "attack": attack if adversaries else "none",
               "adversaries": adversaries, "fraction": adversaries / args.num_workers,
               "test_accuracy": summary.test_accuracy, "steps": summary.steps,
               "lr": config.lr, "epochs": args.epochs,
               "bytes_per_worker_step": summary.bytes_sent_per_worker_per_step,
               "compression_ratio": summary.compression_ratio,
               "replicas_identical": summary.replicas_identical,
               "wall_seconds": summary.wall_seconds}
        rows.append(row)
        out.write_csv("accuracy.csv", rows)
        print(f"{aggregator:5s} {row['attack']:14s} {adversaries}/{args.num_workers}: "
              f"test accuracy {summary.test_accuracy:.4f}", flush=True)

    fig, ax = plt.subplots(figsize=(6, 4))
    clean = {r["aggregator"]: r["test_accuracy"] for r in rows if r["adversaries"] == 0}
    for aggregator, attack, style in (("vote", "negate", "o-"), ("vote", "scaled_negate", "s--"),
                                      ("mean", "scaled_negate", "x-")):
        pts = [(0.0, clean[aggregator])] if aggregator in clean else []
        pts += [
            (r["fraction"], r["test_accuracy"]) for r in rows
            if r["aggregator"] == aggregator and r["attack"] == attack]
        xs, ys = zip(*pts, strict=True)
        ax.plot([100 * x for x in xs], ys, style, label=f"{aggregator}, {attack}")
    ax.set(xlabel="adversarial workers (%)", ylabel="test accuracy",
           title=f"Fashion-MNIST, {args.num_workers} workers, {args.epochs:g} epochs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.file("accuracy_vs_adversaries.png"), dpi=120)
    print(f"results: {out.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
