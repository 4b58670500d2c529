"""Side by side with crowd-kit (the ``bench`` extra) in one run.

1. Accuracy against the ground truth on the real sets bluebirds, RTE and TEMP: majority vote,
   one-coin and full Dawid-Skene, ours and crowd-kit's (crowd-kit's ``Wawa`` is tried too).
2. Time of Dawid-Skene EM on a synthetic set of ``--items`` x ``--redundancy`` annotations
   (default 100,000 x 10 = 1M), ``--classes`` classes (default 10), ``--workers`` workers whose
   accuracies are uniform in [0.3, 0.9] with uniform mistakes: both run exactly ``--iters``
   EM iterations (crowd-kit with ``tol=-inf``), best of ``--repeats``; the ratio is crowd-kit's
   time over ours. Ours is also run to its own convergence test.

    pip install crowd-kit  (with --no-deps if pip would replace torch; then add nltk, attrs)
    python scripts/bench_crowd.py
    python scripts/bench_crowd.py --items 20000 --iters 5     # quick

Writes ``runs/bench-crowd/<timestamp>/{config.json,accuracy.csv,timing.csv}``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from raysign.crowd.aggregate import (
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
)
from raysign.crowd.annotations import Annotations, load_crowd
from raysign.crowd.simulate import simulate_annotations
from raysign.results import RunDir


def crowdkit_labels(model, annotations: Annotations) -> np.ndarray:
    """crowd-kit's labels as item codes [N] (-1 where it gives none)."""
    series = model.fit_predict(annotations.to_dataframe())
    return series.reindex(range(annotations.n_items)).fillna(-1).astype(np.int64).to_numpy()


def accuracy_table(data_dir: str | None) -> list[dict]:
    from crowdkit import aggregation as ck

    rows = []
    ours = {"mv": MajorityVote, "wawa": WeightedMajorityVote, "one_coin": OneCoinDawidSkene,
            "ds": DawidSkene}
    theirs = {"mv": ck.MajorityVote, "wawa": ck.Wawa, "one_coin": ck.OneCoinDawidSkene,
              "ds": ck.DawidSkene}
    for name in ("bluebirds", "rte", "temp"):
        dataset = load_crowd(name, data_dir)
        for method, make in ours.items():
            start = time.perf_counter()
            labels = make().fit_predict(dataset.annotations)
            rows.append({"dataset": name, "library": "raysign", "method": method,
                         "accuracy": dataset.accuracy(labels),
                         "seconds": time.perf_counter() - start})
        for method, make in theirs.items():
            start = time.perf_counter()
            try:
                labels = crowdkit_labels(make(), dataset.annotations)
                accuracy = dataset.accuracy(labels)
            except Exception as err:  # report a peer's failure in the table, keep going
                print(f"crowd-kit {method} on {name} failed: {type(err).__name__}: {err}"[:200])
                accuracy = float("nan")
            rows.append({"dataset": name, "library": "crowd-kit", "method": method,
                         "accuracy": accuracy, "seconds": time.perf_counter() - start})
    return rows


def synthetic(items: int, redundancy: int, classes: int, workers: int,
              seed: int) -> tuple[Annotations, np.ndarray]:
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(0.3, 0.9, workers)
    off = (1 - accuracy) / (classes - 1)
    eye = np.eye(classes)[None]
    confusions = eye * accuracy[:, None, None] + (1 - eye) * off[:, None, None]
    truth = rng.integers(0, classes, items)
    return simulate_annotations(truth, redundancy, confusions, rng), truth


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--redundancy", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=10, help="EM iterations timed for both")
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results-dir", default="runs")
    args = parser.parse_args()
    import crowdkit
    from crowdkit.aggregation import DawidSkene as CKDawidSkene

    run_dir = RunDir.create(args.results_dir, "bench-crowd")
    run_dir.write_json("config.json", {**vars(args), "crowdkit": crowdkit.__version__})

    print("== accuracy on the real sets (ground truth) ==")
    rows = accuracy_table(args.data_dir)
    run_dir.write_csv("accuracy.csv", rows)
    print(f"{'dataset':10s} {'method':9s} {'raysign':>8s} {'crowd-kit':>9s}")
    for name in ("bluebirds", "rte", "temp"):
        for method in ("mv", "wawa", "one_coin", "ds"):
            get = {r["library"]: r["accuracy"] for r in rows
                   if r["dataset"] == name and r["method"] == method}
            ours = get.get("raysign", float("nan"))
            print(f"{name:10s} {method:9s} {ours:8.4f} {get.get('crowd-kit', float('nan')):9.4f}")

    annotations, truth = synthetic(args.items, args.redundancy, args.classes, args.workers,
                                   args.seed)
    print(f"== Dawid-Skene time: {len(annotations):,} annotations, {args.classes} classes, "
          f"{args.workers} workers, {args.iters} EM iterations ==")
    frame = annotations.to_dataframe()
    ours_s, ours = best_time(lambda: DawidSkene(n_iter=args.iters, tol=0.0).fit(annotations),
                             args.repeats)
    ck_s, ck_labels = best_time(
        lambda: CKDawidSkene(n_iter=args.iters, tol=-math.inf).fit_predict(frame), args.repeats)
    ck_labels = ck_labels.reindex(range(annotations.n_items)).to_numpy()
    conv_s, conv = best_time(lambda: DawidSkene().fit(annotations), args.repeats)
    timing = [
        {"library": "raysign", "setting": f"{args.iters} iterations", "seconds": ours_s,
         "iterations": ours.n_iter_, "accuracy": float(np.mean(ours.labels_ == truth))},
        {"library": "crowd-kit", "setting": f"{args.iters} iterations", "seconds": ck_s,
         "iterations": args.iters, "accuracy": float(np.mean(ck_labels == truth))},
        {"library": "raysign", "setting": "to convergence (tol 1e-6)", "seconds": conv_s,
         "iterations": conv.n_iter_, "accuracy": float(np.mean(conv.labels_ == truth))},
    ]
    run_dir.write_csv("timing.csv", timing)
    for row in timing:
        print(f"{row['library']:10s} {row['setting']:26s} {row['seconds']:8.2f} s  "
              f"{row['iterations']:3d} it  accuracy {row['accuracy']:.4f}")
    print(f"speed-up (crowd-kit / raysign, same {args.iters} iterations): {ck_s / ours_s:.1f}x; "
          f"label agreement {np.mean(ck_labels == ours.labels_):.4f}")
    print(f"results: {run_dir.path}")


if __name__ == "__main__":
    main()
