"""Crowd labels on data raysign has never used, through the command line, through Python and
through crowd-kit, in one run (issue 19).

The data: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``, shipped inside the
scikit-learn package: 1,797 images of 8 x 8 pixels, 10 classes), labelled by a simulated crowd
that answers with the digits' English names (``"zero"`` .. ``"nine"``). The simulator (here, not
``raysign.crowd.simulate``): ``--workers`` workers, worker ``w`` is right with probability
``a_w ~ Uniform[0.2, 0.9]``; a wrong answer to a task of class ``c`` follows the worker's own
distribution over the nine other classes, drawn once per (worker, class) from
Dirichlet(0.3, ..., 0.3), so every worker has systematic confusions (a full confusion matrix,
the Dawid-Skene model, not raysign's hammer-spammer). ``--annotated`` tasks (a random subset)
get ``--redundancy`` answers each from distinct random workers; the other tasks have none and
are the held-out rows of MBEM.

Written to ``runs/bench-crowd-user/<timestamp>/data/``: ``answers.csv`` (``image, annotator,
answer``: non-default column names on purpose), ``truth_annotated.csv`` and ``truth.csv``
(``image, digit``), ``digits.npz`` (``features`` [N, 8, 8] float64, ``ids``). Then:

1. ``raysign crowd aggregate --input ... --method M`` for M in mv, wmv, one-coin, ds and
   ``raysign crowd mbem --features digits.npz ...`` as subprocesses (the printed accuracy);
2. ``raysign.crowd.tables.aggregate_table`` / ``mbem_table`` in this process (and MBEM with
   T = 0: the same classifier trained on the majority-vote posteriors; and Dawid-Skene without
   its pseudo-counts, ``alpha = prior_alpha = 0``, as crowd-kit has none);
3. crowd-kit's MajorityVote, Wawa, OneCoinDawidSkene, DawidSkene, GLAD on the same DataFrame.

    python scripts/bench_crowd_user_data.py [--seed 0] [--epochs 20] [--threads 1]

Writes ``accuracy.csv`` (one row per (route, method)) and prints the table, and the share of
tasks on which raysign's and crowd-kit's Dawid-Skene labels agree. ``--threads`` torch threads
(default 1: the small MLP ran 20x slower with two threads on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raysign.crowd.mbem import ClassifierTraining
from raysign.crowd.tables import aggregate_table, mbem_table
from raysign.results import RunDir

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                  "nine"])
ROOT = Path(__file__).resolve().parents[1]


def simulate_digit_crowd(workers: int, annotated: int, redundancy: int,
                         seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """(answers, truth of every task, features [N, 8, 8], ids) per the module docstring."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    n, k = len(digits.target), len(NAMES)
    ids = np.array([f"digit-{i:04d}" for i in range(n)])
    accuracy = rng.uniform(0.2, 0.9, workers)
    wrong = rng.dirichlet(np.full(k - 1, 0.3), size=(workers, k))  # [W, true, other class]
    tasks = np.sort(rng.choice(n, annotated, replace=False))
    rows = []
    for task in tasks:
        true = digits.target[task]
        others = np.delete(np.arange(k), true)
        for worker in rng.choice(workers, redundancy, replace=False):
            said = true if rng.random() < accuracy[worker] else \
                rng.choice(others, p=wrong[worker, true])
            rows.append((ids[task], f"worker-{worker:03d}", NAMES[said]))
    answers = pd.DataFrame(rows, columns=["image", "annotator", "answer"])
    truth = pd.DataFrame({"image": ids, "digit": NAMES[digits.target]})
    return answers, truth, digits.images, ids


def run_cli(arguments: list[str]) -> tuple[str, float]:
    """``raysign <arguments>`` as a subprocess of this tree; its output and seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "raysign.cli", *arguments], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"raysign {' '.join(arguments)} failed:\n{done.stderr}")
    return done.stdout, time.perf_counter() - start


def printed(output: str, key: str) -> float:
    """The figure printed after ``key`` (``accuracy 0.9123 ...``)."""
    match = re.search(rf"^{key} ([0-9.]+)", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {key!r} line in:\n{output}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--annotated", type=int, default=1200)
    parser.add_argument("--redundancy", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--results-dir", default="runs")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import crowdkit
    from crowdkit import aggregation as ck

    run_dir = RunDir.create(args.results_dir, "bench-crowd-user")
    run_dir.write_json("config.json", {**vars(args), "crowdkit": crowdkit.__version__})
    answers, truth, images, ids = simulate_digit_crowd(args.workers, args.annotated,
                                                       args.redundancy, args.seed)
    data = run_dir.path / "data"
    data.mkdir()
    answers.to_csv(data / "answers.csv", index=False)
    truth_annotated = truth[truth["image"].isin(answers["image"])]
    truth_annotated.to_csv(data / "truth_annotated.csv", index=False)
    truth.to_csv(data / "truth.csv", index=False)
    np.savez(data / "digits.npz", features=images, ids=ids)
    columns = ["--task-col", "image", "--worker-col", "annotator", "--label-col", "answer",
               "--truth-task-col", "image", "--truth-label-col", "digit"]
    kw = {"task_col": "image", "worker_col": "annotator", "label_col": "answer",
          "truth_task_col": "image", "truth_label_col": "digit"}
    print(f"sklearn digits: {len(ids)} images, {answers['image'].nunique()} annotated x "
          f"{args.redundancy} = {len(answers)} answers by {answers['annotator'].nunique()} "
          "workers")
    rows = []
    ours_ds, agreement = None, float("nan")
    runs = str(run_dir.path / "cli-runs")
    for method in ("mv", "wmv", "one-coin", "ds"):
        out, seconds = run_cli(["crowd", "aggregate", "--input", str(data / "answers.csv"),
                                "--truth", str(data / "truth_annotated.csv"), "--method",
                                method, "--results-dir", runs, *columns])
        rows.append({"route": "raysign CLI", "method": method,
                     "accuracy": printed(out, "accuracy"), "seconds": seconds})
        start = time.perf_counter()
        result = aggregate_table(answers, method, truth_annotated, **kw)
        if method == "ds":
            ours_ds = result.labels.set_index("image")["answer"]
            start = time.perf_counter()
            bare = aggregate_table(answers, "ds", truth_annotated,
                                   options={"alpha": 0.0, "prior_alpha": 0.0}, **kw)
            rows.append({"route": "raysign Python", "method": "ds alpha=0 prior_alpha=0",
                         "accuracy": bare.accuracy, "seconds": time.perf_counter() - start})
        rows.append({"route": "raysign Python", "method": method, "accuracy": result.accuracy,
                     "seconds": time.perf_counter() - start})
    theirs = {"mv": ck.MajorityVote, "wawa": ck.Wawa, "one-coin": ck.OneCoinDawidSkene,
              "ds": ck.DawidSkene, "glad": ck.GLAD}
    frame = answers.rename(columns={"image": "task", "annotator": "worker", "answer": "label"})
    gold = truth_annotated.set_index("image")["digit"]
    for method, make in theirs.items():
        start = time.perf_counter()
        try:
            predicted = make().fit_predict(frame)
            accuracy = float((predicted.reindex(gold.index) == gold).mean())
            if method == "ds":
                agreement = float((predicted.reindex(ours_ds.index) == ours_ds).mean())
        except Exception as err:  # report a peer's failure in the table, keep going
            print(f"crowd-kit {method} failed: {type(err).__name__}: {err}"[:200])
            accuracy = float("nan")
        rows.append({"route": "crowd-kit", "method": method, "accuracy": accuracy,
                     "seconds": time.perf_counter() - start})
    out, seconds = run_cli(["crowd", "mbem", "--features", str(data / "digits.npz"),
                            "--annotations", str(data / "answers.csv"), "--truth",
                            str(data / "truth.csv"), "--epochs", str(args.epochs),
                            "--rounds", str(args.rounds), "--seed", str(args.seed),
                            "--threads", str(args.threads), "--results-dir", runs, *columns])
    for key in ("accuracy_annotated", "accuracy_unannotated"):
        rows.append({"route": "raysign CLI", "method": f"mbem {key}",
                     "accuracy": printed(out, key), "seconds": seconds})
    settings = ClassifierTraining(epochs=args.epochs)
    for rounds, label in ((args.rounds, "mbem"), (0, "classifier on mv")):
        start = time.perf_counter()
        result = mbem_table(images, answers, truth, ids=ids, settings=settings, rounds=rounds,
                            seed=args.seed, **kw)
        for key in ("accuracy_annotated", "accuracy_unannotated"):
            rows.append({"route": "raysign Python", "method": f"{label} {key}",
                         "accuracy": result.metrics[key],
                         "seconds": time.perf_counter() - start})
    run_dir.write_csv("accuracy.csv", rows)
    run_dir.log({"ds_label_agreement_raysign_crowdkit": agreement})
    print(f"{'route':15s} {'method':38s} {'accuracy':>8s} {'seconds':>8s}")
    for row in rows:
        print(f"{row['route']:15s} {row['method']:38s} {row['accuracy']:8.4f} "
              f"{row['seconds']:8.2f}")
    print(f"Dawid-Skene labels, raysign vs crowd-kit: the same on {agreement:.4f} of the tasks")
    run_dir.close()
    print(f"results: {run_dir.location}")


if __name__ == "__main__":
    main()
