"""``raysign crowd``: aggregate real crowd labels, or train on simulated crowd labels.

    raysign crowd aggregate                         # MV, WMV, one-coin, DS on bluebirds/RTE/TEMP
    raysign crowd aggregate --input answers.csv [--truth truth.csv] [--method ds]
    raysign crowd mbem --features X.npz --annotations answers.csv [--truth truth.csv]
    raysign crowd train --redundancy 1 --quality 0.2 --methods mv,ds,mbem,oracle --seeds 3
    raysign crowd budget [--quick]                  # the crowd sweep, table and figure
    raysign crowd report runs/sweeps/crowd/<timestamp>/results.csv
    ray job submit --working-dir . -- python scripts/run_crowd.py train --seeds 3

``train`` runs one Ray task (one CPU, one GPU when the cluster has them) per (method, seed):
``raysign.crowd.experiment.run_crowd_trial`` of a ``raysign.crowd.config.CrowdConfig``
(Khetan, Lipton & Anandkumar, ICLR 2018, sec. 5). Results land in
``runs/<name>/<timestamp>/``: ``config.json``, ``metrics.jsonl`` (one record per trial),
``summary.csv`` (mean and standard deviation of test accuracy per method) and
``test_accuracy.png``; ``aggregate`` writes ``accuracy.csv`` (with ``--input``: the user's
table, ``labels.csv``, ``posteriors.csv``, ``workers.csv``; ``raysign.crowd.tables``), ``mbem``
``predictions.csv`` and ``posteriors.csv``; ``budget`` runs
``tune_configs/crowd.py`` and writes ``budget_table.csv`` and ``accuracy_vs_redundancy.png``
beside the sweep's ``results.csv`` (``report`` redoes that for an existing sweep).
``train`` and ``budget`` start (or join) Ray; ``aggregate``, ``mbem`` and ``report`` run in this
process and never import ``ray``.

``--results-dir`` and ``--data-dir`` take a path or a URI (``raysign.storage``). ``train``'s
tasks read the images themselves: a data URI is copied once into each node's cache by the
task, and a path is checked on every node before the tasks start.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from raysign.config import (
    ConfigError,
    add_config_arguments,
    check_choice,
    config_from_args,
    to_dict,
)
from raysign.crowd.config import METHODS, CrowdConfig
from raysign.crowd.mbem import ClassifierTraining
from raysign.data import data_location, local_data_dir
from raysign.storage import check_location, exists, is_uri, join

_HELP = {
    "dataset": "image data set labelled by the simulated crowd",
    "budget": "total labels B (n = B // r items get r labels each)",
    "redundancy": "labels per item r",
    "n_workers": "simulated workers m",
    "worker_model": "hammer_spammer or classwise_hammer_spammer",
    "quality": "probability of a hammer (per worker, or per worker and class)",
    "method": "method of a single trial (use --methods for a comparison)",
    "rounds": "MBEM rounds T",
    "model": "classifier: mlp or cnn",
    "hidden": "hidden units of the classifier",
    "epochs": "training epochs (best epoch chosen on crowd-labelled validation items)",
    "batch_size": "mini-batch size",
    "lr": "Adam learning rate",
    "val_fraction": "share of the labelled items held out for model selection",
    "test_size": "evaluate on the first N test images (0 = all)",
    "seed": "first seed (annotations and training)",
    "data_dir": "folder holding mnist/ and fashion-mnist/, a path or a URI such as "
                "s3://bucket/data (default: $RAYSIGN_DATA, else ../shared/data)",
}


RESULTS_HELP = ("root folder for results: a path, or a URI such as s3://bucket/runs (in a Ray "
                "job: storage every node reaches)")


_CLASSIFIER_HELP = {
    "model": "classifier: mlp (any features) or cnn (images [N, H, W] or [N, C, H, W])",
    "hidden": "hidden units of the classifier",
    "epochs": "training epochs per MBEM round (best epoch chosen on crowd-labelled items)",
    "batch_size": "mini-batch size",
    "lr": "Adam learning rate",
    "weight_decay": "Adam weight decay",
}


def _add_table_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", default=None,
                        help="CSV / TSV of true labels (task and label columns)")
    parser.add_argument("--task-col", default="task", help="task id column of the answers")
    parser.add_argument("--worker-col", default="worker", help="worker id column")
    parser.add_argument("--label-col", default="label", help="label column")
    parser.add_argument("--truth-task-col", default="task", help="task id column of --truth")
    parser.add_argument("--truth-label-col", default="label", help="label column of --truth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    agg = modes.add_parser("aggregate", help="aggregate a table of answers (--input), or "
                           "every aggregator on the real sets with ground truth (--datasets)")
    agg.add_argument("--input", default=None,
                     help="CSV / TSV of answers, one row per (task, worker, label)")
    agg.add_argument("--method", default="ds", help="with --input: mv, wmv, one-coin or ds")
    agg.add_argument("--seed", type=int, default=0, help="seed of the random tie-breaking")
    _add_table_columns(agg)
    agg.add_argument("--name", default="crowd-aggregate", help="run name")
    agg.add_argument("--datasets", default="bluebirds,rte,temp",
                     help="without --input: comma-separated real sets")
    agg.add_argument("--data-dir", default="", help="folder holding crowd/ (a path or a URI)")
    agg.add_argument("--results-dir", default="runs", help=RESULTS_HELP)
    user_mbem = modes.add_parser("mbem", help="MBEM on your features and answers")
    user_mbem.add_argument("--features", required=True,
                           help=".npy, .npz (features or X, optional ids) or a folder of images")
    user_mbem.add_argument("--annotations", required=True, help="CSV / TSV of answers")
    _add_table_columns(user_mbem)
    add_config_arguments(user_mbem, ClassifierTraining, _CLASSIFIER_HELP)
    user_mbem.add_argument("--rounds", type=int, default=2, help="MBEM rounds T")
    user_mbem.add_argument("--val-fraction", type=float, default=0.1,
                           help="share of the annotated tasks held out for model selection")
    user_mbem.add_argument("--seed", type=int, default=0, help="split and training seed")
    user_mbem.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    user_mbem.add_argument("--name", default="crowd-mbem", help="run name")
    user_mbem.add_argument("--results-dir", default="runs", help=RESULTS_HELP)
    budget = modes.add_parser("budget", help="fixed-budget Ray Tune sweep, table and figure")
    budget.add_argument("--quick", action="store_true", help="a small search space")
    budget.add_argument("--results-dir", default="runs", help=RESULTS_HELP)
    budget.add_argument("--address", default=None, help="Ray cluster address")
    budget.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")
    report = modes.add_parser("report", help="table and figure of a finished budget sweep")
    report.add_argument("results_csv", help="results.csv written by the crowd sweep")
    train = modes.add_parser("train", help="train on simulated crowd labels (Ray tasks)")
    add_config_arguments(train, CrowdConfig, _HELP)
    train.add_argument("--methods", default="mv,ds,mbem,oracle",
                       help=f"comma-separated methods out of {list(METHODS)}")
    train.add_argument("--seeds", type=int, default=1, help="seeds per method")
    train.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    train.add_argument("--results-dir", default="runs", help=RESULTS_HELP)
    train.add_argument("--name", default="crowd", help="run name (runs/<name>/<timestamp>/)")
    train.add_argument("--address", default=None,
                       help="join: auto or host:port (default: $RAY_ADDRESS, else a private Ray)")
    train.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")


def aggregate_real_sets(datasets: list[str], data_dir: str | None,
                        results_dir: str) -> list[dict[str, Any]]:
    """Accuracy of every aggregator on each real set; written to ``accuracy.csv``."""
    from raysign.crowd.aggregate import AGGREGATORS
    from raysign.crowd.annotations import load_crowd
    from raysign.results import RunDir

    rows = []
    root = local_data_dir(data_dir, ["crowd"])
    for name in datasets:
        dataset = load_crowd(name, root)
        for method, make in AGGREGATORS.items():
            labels = make().fit_predict(dataset.annotations)
            rows.append({"dataset": name, "method": method,
                         "accuracy": dataset.accuracy(labels)})
    run_dir = RunDir.create(results_dir, "crowd-aggregate")
    run_dir.write_json("config.json", {"datasets": datasets})
    run_dir.write_csv("accuracy.csv", rows)
    print(f"{'dataset':10s} " + " ".join(f"{m:>9s}" for m in AGGREGATORS))
    for name in datasets:
        cells = [r["accuracy"] for r in rows if r["dataset"] == name]
        print(f"{name:10s} " + " ".join(f"{a:9.4f}" for a in cells))
    run_dir.close()
    print(f"results: {run_dir.location}")
    return rows


def _table_columns(args: argparse.Namespace) -> dict[str, str]:
    return {"task_col": args.task_col, "worker_col": args.worker_col,
            "label_col": args.label_col, "truth_task_col": args.truth_task_col,
            "truth_label_col": args.truth_label_col}


def aggregate_user_table(args: argparse.Namespace) -> dict[str, Any]:
    """``raysign crowd aggregate --input``: ``labels.csv``, ``posteriors.csv``,
    ``workers.csv``, and the accuracy (printed, in ``metrics.jsonl``) with ``--truth``."""
    from raysign.crowd.tables import aggregate_table
    from raysign.results import RunDir

    result = aggregate_table(args.input, args.method, args.truth, seed=args.seed,
                             **_table_columns(args))
    run_dir = RunDir.create(args.results_dir, args.name)
    run_dir.write_json("config.json", {"input": args.input, "truth": args.truth,
                                       "method": result.method, "seed": args.seed,
                                       **_table_columns(args)})
    for name, frame in (("labels.csv", result.labels), ("posteriors.csv", result.posteriors),
                        ("workers.csv", result.workers)):
        frame.to_csv(run_dir.file(name), index=False)
    metrics = {"method": result.method, "tasks": len(result.labels),
               "workers": len(result.workers), "answers": int(result.workers["n_labels"].sum()),
               "accuracy": result.accuracy, "truth_tasks": result.n_truth}
    run_dir.log(metrics)
    print(f"{result.method}: {metrics['tasks']} tasks, {metrics['workers']} workers, "
          f"{metrics['answers']} answers")
    if result.accuracy is not None:
        print(f"accuracy {result.accuracy:.4f} on {result.n_truth} truth tasks")
    run_dir.close()
    print(f"results: {run_dir.location}")
    return {"run_dir": run_dir.location, **metrics}


def mbem_user_data(args: argparse.Namespace) -> dict[str, Any]:
    """``raysign crowd mbem``: ``predictions.csv`` (every feature row), ``posteriors.csv``
    (annotated tasks), ``metrics.jsonl`` (one record per round, then the accuracies)."""
    import torch

    from raysign.crowd.tables import load_features, mbem_table
    from raysign.results import RunDir

    settings = config_from_args(ClassifierTraining, args)
    features, ids = load_features(args.features)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = mbem_table(features, args.annotations, args.truth, ids=ids, settings=settings,
                        rounds=args.rounds, val_fraction=args.val_fraction, seed=args.seed,
                        source=f"features {args.features!r}", **_table_columns(args))
    run_dir = RunDir.create(args.results_dir, args.name)
    run_dir.write_json("config.json", {"features": args.features,
                                       "annotations": args.annotations, "truth": args.truth,
                                       **to_dict(settings), "rounds": args.rounds,
                                       "val_fraction": args.val_fraction, "seed": args.seed,
                                       **_table_columns(args)})
    result.predictions.to_csv(run_dir.file("predictions.csv"), index=False)
    result.posteriors.to_csv(run_dir.file("posteriors.csv"), index=False)
    for record in result.rounds:
        run_dir.log(record)
    run_dir.log(result.metrics)
    m = result.metrics
    print(f"MBEM ({settings.model}, T={args.rounds}): {m['rows']} rows, {m['annotated']} "
          f"annotated tasks, {m['answers']} answers, {m['classes']} classes")
    for key in ("accuracy", "accuracy_annotated", "accuracy_unannotated", "mv_accuracy"):
        if key in m:
            print(f"{key} {m[key]:.4f}")
    run_dir.close()
    print(f"results: {run_dir.location}")
    return {"run_dir": run_dir.location, **m}


def _one_trial(config: CrowdConfig, threads: int) -> dict[str, Any]:
    import torch

    from raysign.crowd.experiment import run_crowd_trial

    torch.set_num_threads(threads)
    return run_crowd_trial(config)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of test accuracy per method, in ``METHODS`` order."""
    import numpy as np

    table = []
    for method in METHODS:
        acc = [r["test_accuracy"] for r in results if r["method"] == method]
        if acc:
            table.append({"method": method, "trials": len(acc),
                          "test_accuracy_mean": float(np.mean(acc)),
                          "test_accuracy_std": float(np.std(acc)),
                          "label_accuracy_mean": float(np.mean(
                              [r["label_accuracy"] for r in results if r["method"] == method]))})
    return table


def compare(base: CrowdConfig, methods: list[str], seeds: int, *, threads: int = 1,
            results_dir: str = "runs", name: str = "crowd", address: str | None = None,
            num_cpus: int | None = None) -> dict[str, Any]:
    """Every (method, seed) as a Ray task; tables and a figure in a RunDir. The tasks read
    the images: a data URI must exist (each task copies it into its node's cache), a path
    must exist on every node (checked before the tasks start); ConfigError otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import ray
    from tqdm import tqdm

    from raysign.actors.cluster import connect, require_path_on_nodes
    from raysign.results import RunDir

    check_location("results_dir", results_dir)
    # Every node reads the folder the driver names (the default resolved here, once).
    base = dataclasses.replace(base, data_dir=data_location(base.data_dir))
    images = join(base.data_dir, base.dataset)
    if is_uri(images) and not exists(images):
        raise ConfigError(f"data_dir={base.data_dir!r} has no {base.dataset}/ ({images!r} does "
                          "not exist)")
    connect(address, num_cpus)
    if not is_uri(images):
        require_path_on_nodes(images, "data_dir")
    gpus = ray.cluster_resources().get("GPU", 0.0)
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus >= 1 else 0)(_one_trial)
    run_dir = RunDir.create(results_dir, name)
    run_dir.write_json("config.json", {**to_dict(base), "methods": methods, "seeds": seeds})
    configs = [dataclasses.replace(base, method=m, seed=base.seed + k)
               for m in methods for k in range(seeds)]
    pending = {task.remote(c, threads): c for c in configs}
    results = []
    with tqdm(total=len(pending), desc="crowd trials") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            result = ray.get(done[0])
            run_dir.log(result)
            results.append(result)
            bar.update(1)
    table = summarise(results)
    run_dir.write_csv("summary.csv", table)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([r["method"] for r in table], [r["test_accuracy_mean"] for r in table],
           yerr=[r["test_accuracy_std"] for r in table], color="tab:blue")
    low = min(r["test_accuracy_mean"] for r in table)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{base.dataset}, B={base.budget}, r={base.redundancy}, "
                 f"{base.worker_model} q={base.quality}", fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir.file("test_accuracy.png"), dpi=120)
    plt.close(fig)
    run_dir.close()
    return {"run_dir": run_dir.location, "table": table, "results": results}


def budget_report(results_csv: str) -> dict[str, Any]:
    """``budget_table.csv`` and ``accuracy_vs_redundancy.png`` next to ``results_csv``; prints
    the best redundancy per (quality, method)."""
    import pandas as pd

    from raysign.crowd.report import budget_table, plot_budget_sweep

    folder = Path(results_csv).parent
    table = budget_table(pd.read_csv(results_csv))
    table.to_csv(folder / "budget_table.csv", index=False)
    figure = plot_budget_sweep(table, folder / "accuracy_vs_redundancy.png")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"table: {folder / 'budget_table.csv'}\nfigure: {figure}")
    return {"table": table, "figure": str(figure)}


def run(args: argparse.Namespace) -> int:
    if args.mode == "report":
        budget_report(args.results_csv)
        return 0
    if args.mode == "budget":
        from raysign.actors.sweep import run_sweep
        from raysign.results import RunDir

        try:
            check_location("results_dir", args.results_dir)
        except ConfigError as err:  # fails before Ray starts
            raise SystemExit(f"raysign crowd: invalid configuration: {err}") from None
        summary = run_sweep("crowd", quick=args.quick, results_root=args.results_dir,
                            address=args.address, num_cpus=args.num_cpus)
        folder = RunDir.open(summary["run_dir"])  # a URI's folder: downloaded, then synced
        budget_report(str(folder.file("results.csv")))
        folder.close()
        print(f"results: {folder.location}")
        return 1 if summary["errors"] else 0
    if args.mode in ("aggregate", "mbem") and (args.mode == "mbem" or args.input):
        try:
            check_location("results_dir", args.results_dir)
            if args.mode == "mbem":
                mbem_user_data(args)
            else:
                aggregate_user_table(args)
        except ConfigError as err:  # bad input: one line, before any work
            raise SystemExit(f"raysign crowd {args.mode}: {err}") from None
        return 0
    if args.mode == "aggregate":
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
        try:
            check_location("results_dir", args.results_dir)
            if args.data_dir:
                check_location("data_dir", args.data_dir)
        except ConfigError as err:
            raise SystemExit(f"raysign crowd: invalid configuration: {err}") from None
        aggregate_real_sets(names, args.data_dir, args.results_dir)
        return 0
    try:
        config = config_from_args(CrowdConfig, args)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        for method in methods:
            check_choice("methods", method, METHODS)
        check_location("results_dir", args.results_dir)
    except ConfigError as err:  # fails before Ray starts
        raise SystemExit(f"raysign crowd: invalid configuration: {err}") from None
    try:
        out = compare(config, methods, args.seeds, threads=args.threads,
                      results_dir=args.results_dir, name=args.name, address=args.address,
                      num_cpus=args.num_cpus)
    except ConfigError as err:  # the data folder is missing (on some node)
        raise SystemExit(f"raysign crowd: {err}") from None
    print(f"{'method':8s} {'trials':>6s} {'test acc':>16s} {'label acc':>9s}")
    for row in out["table"]:
        print(f"{row['method']:8s} {row['trials']:6d} {row['test_accuracy_mean']:8.4f}"
              f"+-{row['test_accuracy_std']:.4f} {row['label_accuracy_mean']:9.4f}")
    print(f"results: {out['run_dir']}")
    return 0
