"""``raysign sweep <name>``: run a sweep from ``tune_configs/`` with Ray Tune.

Trials are sized from the CPUs and GPUs the cluster has (``trial_resources`` of the sweep
module), at most as many run at once as fit, and the results table (CSV) and the best
configuration (JSON) land in ``runs/sweeps/<name>/<timestamp>/``, Tune's own files in its
``tune/``. ``--results-dir`` is a path or a URI (``s3://bucket/runs``; Tune writes to the URI
itself, the table and best configuration are uploaded at the end); in a Ray job a path must
lie outside the job's temporary working directory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

import ray
from ray import tune

from raysign import tune_configs
from raysign.actors.cluster import connect
from raysign.config import ConfigError
from raysign.results import RunDir
from raysign.storage import check_location, is_uri, join

REQUIRED = ("DESCRIPTION", "METRIC", "MODE", "param_space", "trainable", "trial_resources")
# Tune checkpoints kept per trial (sweeps that report them): the latest, which a restored or
# a PBT-cloning trial starts from, and a few before it (Tune warns that PBT may fail to restore
# with 2 or fewer).
CHECKPOINTS_KEPT = 4


def available_sweeps() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(tune_configs.__path__))


def load_sweep(name: str) -> ModuleType:
    """The sweep module ``raysign.tune_configs.<name>``, checked to define the sweep protocol."""
    if name not in available_sweeps():
        raise ValueError(f"sweep={name!r} is not one of {available_sweeps()}")
    module = importlib.import_module(f"raysign.tune_configs.{name}")
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"tune_configs/{name}.py lacks {missing}")
    return module


def _concurrency(module: ModuleType, resources: Any, cpus: float, gpus: float) -> int:
    if hasattr(module, "max_concurrent_trials"):
        return module.max_concurrent_trials(cpus, gpus)
    if callable(resources):
        return 1
    if isinstance(resources, tune.PlacementGroupFactory):
        need = resources.required_resources
    else:
        need = {"CPU": resources.get("cpu", resources.get("CPU", 1)),
                "GPU": resources.get("gpu", resources.get("GPU", 0))}
    fits = [int(cpus // need["CPU"])] if need.get("CPU") else []
    if need.get("GPU"):
        fits.append(int(gpus // need["GPU"]))
    return max(1, min(fits) if fits else 1)


def fixed_entries(pairs: list[str], path_fields: tuple[str, ...] = ("data_dir",)
                  ) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs as trial config entries: a value is read as JSON when it
    parses (``k=5``), else kept as a string. The value of a field in ``path_fields`` (a sweep's
    ``PATH_FIELDS``) that names an existing file or folder is made absolute, since every trial
    runs in its own folder; any other value is kept as typed (``target=co2`` stays ``co2``
    even where a folder ``co2/`` exists)."""
    fixed = {}
    for pair in pairs:
        field, sep, text = pair.partition("=")
        if not sep or not field:
            raise ConfigError(f"--set {pair!r} is not FIELD=VALUE (e.g. input=corpus.csv)")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if field in path_fields and isinstance(value, str) and Path(value).exists():
            value = str(Path(value).resolve())
        fixed[field] = value
    return fixed


def sweep_fixed_entries(module: ModuleType, pairs: list[str]) -> dict[str, Any]:
    """``fixed_entries`` with the sweep's ``PATH_FIELDS``, checked by its ``check_fixed``
    (when it has one) before Ray starts: a bad file fails in one line, not in every trial."""
    fixed = fixed_entries(pairs, getattr(module, "PATH_FIELDS", ("data_dir",)))
    if fixed and hasattr(module, "check_fixed"):
        module.check_fixed(fixed)
    return fixed


def check_scheduler(module: ModuleType, name: str, scheduler: str | None) -> None:
    """``scheduler`` must be None (the sweep's default) or one of its ``SCHEDULERS``."""
    names = sorted(getattr(module, "SCHEDULERS", {}))
    if scheduler is not None and scheduler not in names:
        raise ConfigError(f"scheduler={scheduler!r} is not offered by tune_configs/{name}.py; "
                          f"valid: {names or 'none (leave --scheduler out)'}")


def run_sweep(name: str, *, num_samples: int | None = None, quick: bool = False,
              results_root: str | Path = "runs", address: str | None = None,
              num_cpus: int | None = None, fixed: dict[str, Any] | None = None,
              scheduler: str | None = None, max_failures: int | None = None
              ) -> dict[str, Any]:
    """Run sweep ``name``; returns ``{"best_config", "best_result", "run_dir"}`` (``run_dir``:
    where the results are, a path or a URI). ``fixed`` entries are added to every trial's config
    (the user's data, e.g. ``{"input": "/data/corpus.csv"}``). ``scheduler``: one of the
    module's ``SCHEDULERS`` (e.g. ``"pbt"``), which brings its own search space;
    ``max_failures``: how often a failed trial is restarted from its last checkpoint (default:
    the module's ``MAX_FAILURES``, else 0)."""
    module = load_sweep(name)
    check_scheduler(module, name, scheduler)
    check_location("results_dir", str(results_root))
    connect(address, num_cpus)
    cluster = ray.cluster_resources()
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    resources = module.trial_resources(cpus, gpus)
    root = (join(str(results_root), "sweeps") if is_uri(str(results_root))
            else Path(results_root).resolve() / "sweeps")
    run_dir = RunDir.create(root, name)
    if scheduler is not None:
        trial_scheduler, space = module.SCHEDULERS[scheduler](quick)
    else:
        trial_scheduler = module.scheduler() if hasattr(module, "scheduler") else None
        space = module.param_space(quick)
    if max_failures is None:
        max_failures = getattr(module, "MAX_FAILURES", 0)
    tuner = tune.Tuner(
        tune.with_resources(module.trainable, resources),
        param_space={**space, **(fixed or {})},
        tune_config=tune.TuneConfig(
            metric=module.METRIC,
            mode=module.MODE,
            num_samples=num_samples or getattr(module, "NUM_SAMPLES", 1),
            # PBT time-slices its population itself (pausing trials at each perturbation when
            # not all fit): a concurrency limit would hide the waiting trials from it.
            max_concurrent_trials=(None if scheduler is not None
                                   else _concurrency(module, resources, cpus, gpus)),
            scheduler=trial_scheduler,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=join(run_dir.location, "tune"), verbose=1,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)),
    )
    results = tuner.fit()
    errors = [str(r.error) for r in results if r.error]
    table = results.get_dataframe()
    table.to_csv(run_dir.file("results.csv"), index=False)
    best = results.get_best_result(metric=module.METRIC, mode=module.MODE)
    summary = {
        "sweep": name,
        "scheduler": scheduler,
        "metric": module.METRIC,
        "mode": module.MODE,
        "best_config": best.config,
        "best_result": {k: v for k, v in best.metrics.items() if isinstance(v, (int, float, str))},
        "num_trials": len(table),
        "errors": errors,
    }
    run_dir.write_json("best.json", summary)
    run_dir.close()
    print(f"[raysign sweep] {name}: best {module.METRIC}={best.metrics.get(module.METRIC)} "
          f"with {best.config}")
    print(f"results: {run_dir.location}")
    summary["run_dir"] = run_dir.location
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=available_sweeps(), help="sweep in tune_configs/")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="samples of the search space (default: the sweep's NUM_SAMPLES)")
    parser.add_argument("--quick", action="store_true", help="a small search space")
    parser.add_argument("--scheduler", default=None,
                        help="a trial scheduler the sweep offers, with its own search space "
                             "(signsgd: pbt, Population Based Training over lr and momentum)")
    parser.add_argument("--max-failures", type=int, default=None,
                        help="restarts of a failed trial from its last checkpoint (default: "
                             "the sweep's MAX_FAILURES, else 0; -1: no limit)")
    parser.add_argument("--results-dir", default="runs",
                        help="root folder for results: a path, or a URI such as "
                             "s3://bucket/runs (in a Ray job: storage every node reaches)")
    parser.add_argument("--address", default=None, help="Ray cluster (default: $RAY_ADDRESS "
                        "or a private local instance; auto or host:port joins one)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="an entry of every trial's config, e.g. input=corpus.csv (repeat)")


def run(args: argparse.Namespace) -> int:
    try:  # fails before Ray starts
        check_location("results_dir", args.results_dir)
        module = load_sweep(args.name)
        fixed = sweep_fixed_entries(module, args.set)
        check_scheduler(module, args.name, args.scheduler)
        if args.max_failures is not None and args.max_failures < -1:
            raise ConfigError(f"max_failures={args.max_failures}; valid: -1 (no limit), 0 or "
                              "more")
    except ValueError as err:  # ConfigError, and a sweep's check of the user's files
        raise SystemExit(f"raysign sweep: invalid configuration: {err}") from None
    summary = run_sweep(args.name, num_samples=args.num_samples, quick=args.quick,
                        results_root=args.results_dir, address=args.address,
                        num_cpus=args.num_cpus, fixed=fixed, scheduler=args.scheduler,
                        max_failures=args.max_failures)
    return 1 if summary["errors"] else 0
