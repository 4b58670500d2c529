"""Sweep of distributed signSGD: learning rate, momentum, workers and adversaries.

Each trial is one ``SignSGDTrainer`` run with its own worker and vote actors, reserved with a
placement group (one bundle for the trial's driver, one per worker, one per vote shard) so
that trials never wait on each other's actors. Reports test accuracy at every evaluation,
with a ``ray.tune.Checkpoint`` holding the trainer's own checkpoint (``checkpoint.pt``, the
bit-identical one of ``raysign.signsgd.checkpoint``, and the run's ``metrics.jsonl``) whenever
the trainer writes one (every evaluation, unless ``checkpoint_every`` says otherwise).

A trial that starts with a Tune checkpoint (``ray.tune.get_checkpoint()``: a trial restored
after a failure, or one Population Based Training made clone another trial's checkpoint)
continues from it. Its configuration may differ from the checkpoint's only in ``lr`` and
``momentum`` (``PBT_MUTATIONS``): after a PBT exploit the trial takes its *new* values, so
``adopt_checkpoint`` rewrites them into the checkpoint (and the learning rate each worker's
schedule holds) before the trainer's own check of the configuration reads it.

    raysign sweep signsgd                    # the full grid (Fashion-MNIST, CNN, 1 epoch)
    raysign sweep signsgd --quick            # a 2-trial smoke sweep on an MNIST subset
    raysign sweep signsgd --scheduler pbt    # PBT over lr and momentum (--quick: 4 trials)

A trial config may hold ``kill_after_step: k`` (a drill for tests): at its first evaluation
after step k, before reporting it, the trial's process kills itself with SIGKILL (its worker
and vote actors die with it), once: not when it started from a checkpoint. Tune then restores
the trial from the last checkpoint it reported (``MAX_FAILURES``).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from raysign.actors.trainer import VOTE_CPUS, SignSGDTrainer
from raysign.config import config_from_mapping, to_dict
from raysign.signsgd.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.workload import config_lr_scheduler_fn, scheduled_lr

DESCRIPTION = "signSGD / Signum with majority vote: lr x momentum x workers x adversaries"
METRIC = "test_accuracy"
MODE = "max"
NUM_SAMPLES = 1
MAX_TRIAL_CPUS = 8.0
VOTE_SHARDS = 1
MAX_FAILURES = 2  # a failed trial restarts from its last checkpoint at most this often
PBT_MUTATIONS = ("lr", "momentum")
METRICS_FILE = "metrics.jsonl"

_BASE: dict[str, Any] = dict(dataset="fashion-mnist", model="cnn", epochs=1.0, batch_size=32)
_QUICK: dict[str, Any] = dict(dataset="mnist", model="mlp", train_subset=1200, test_subset=500,
                              max_steps=6, eval_every=3, batch_size=16)


def param_space(quick: bool) -> dict[str, Any]:
    if quick:
        return {**_QUICK, "lr": tune.grid_search([1e-3, 3e-3]), "momentum": 0.9,
                "num_workers": 3, "num_byzantine": 0}
    return {
        **_BASE,
        "lr": tune.grid_search([3e-4, 1e-3, 3e-3]),
        "momentum": tune.grid_search([0.0, 0.9]),
        "num_workers": tune.grid_search([3, 7]),
        "num_byzantine": tune.grid_search([0, 1]),
    }


def pbt(quick: bool) -> tuple[Any, dict[str, Any]]:
    """Population Based Training over ``lr`` and ``momentum`` and the population it starts
    from (one lr per trial; every other field the same for all, since a trial may clone any
    other's checkpoint). An exploited trial copies a better trial's checkpoint and perturbs
    its lr and momentum (x0.8 or x1.2, or resampled); Tune logs every exploit in
    ``pbt_global.txt`` and ``pbt_policy_<trial>.txt`` of the experiment folder."""
    from ray.tune.schedulers import PopulationBasedTraining

    if quick:
        # A quarter of 2 CPUs per trial: the population of 4 trains side by side on a laptop.
        # Synchronous: trials of a few seconds start seconds apart, so without waiting for
        # each other they would rarely overlap at a perturbation. Perturbations after the 2nd
        # and 4th of the 5 evaluations (none at the last, which would only restart trials).
        space = {**_QUICK, "max_steps": 10, "eval_every": 2, "num_workers": 2,
                 "num_byzantine": 0, "momentum": 0.9, "trial_cpus": 0.5,
                 "lr": tune.grid_search([3e-4, 1e-3, 3e-3, 1e-2])}
        interval, synch = 2, True
    else:
        # Asynchronous, a perturbation at every evaluation: long trials overlap anyway, and
        # no trial is stopped to wait for the others.
        space = {**_BASE, "epochs": 2.0, "eval_every": 100, "num_workers": 3,
                 "num_byzantine": 0, "momentum": 0.9,
                 "lr": tune.grid_search([1e-4, 3e-4, 1e-3, 3e-3])}
        interval, synch = 1, False
    # At a perturbation a trial in the bottom quarter clones the checkpoint of one in the top
    # quarter (asynchronous: one that was in the top quarter at its own last report).
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=interval, synch=synch,
        hyperparam_mutations={"lr": tune.loguniform(1e-4, 3e-2),
                              "momentum": [0.0, 0.5, 0.9, 0.95]})
    return scheduler, space


SCHEDULERS = {"pbt": pbt}


def _trial_cpus(cpus: float, config: dict[str, Any] | None = None) -> float:
    """The CPUs one trial reserves: the config's ``trial_cpus`` (a sweep-only key), else the
    cluster's, at most ``MAX_TRIAL_CPUS``."""
    wanted = (config or {}).get("trial_cpus")
    return min(cpus, MAX_TRIAL_CPUS) if wanted is None else float(wanted)


def _worker_share(budget: float, num_workers: int) -> tuple[float, float]:
    """(CPUs per worker, CPUs per vote actor) within a trial's budget."""
    vote = VOTE_CPUS
    share = math.floor(1000 * (budget - 0.05 - vote * VOTE_SHARDS) / num_workers) / 1000
    return share, vote


def trial_resources(cpus: float, gpus: float):
    def for_config(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        m = config.get("num_workers", 7)
        share, vote = _worker_share(_trial_cpus(cpus, config), m)
        gpu = 1.0 if gpus >= m else 0.0
        worker = {"CPU": share, "GPU": gpu} if gpu else {"CPU": share}
        return tune.PlacementGroupFactory(
            [{"CPU": 0.05}] + [dict(worker) for _ in range(m)] + [{"CPU": vote}] * VOTE_SHARDS)

    return for_config


def max_concurrent_trials(cpus: float, gpus: float) -> int:
    return max(1, int(cpus // _trial_cpus(cpus)))


def adopt_checkpoint(folder: str | Path, destination: str | Path,
                     config: dict[str, Any]) -> Path:
    """Copy a Tune checkpoint of this sweep (``folder``: ``checkpoint.pt`` and
    ``metrics.jsonl``) into the run folder ``destination`` for ``config`` (a
    ``SignSGDConfig`` as a dict), with ``config``'s ``PBT_MUTATIONS`` written into it: the
    checkpoint's configuration, and each worker's current learning rate and schedule, which
    the replicas restore (an exploited PBT trial must train on with its new lr, not the
    donor's). Other fields are left as saved, for the trainer's resume to check. Returns the
    copied checkpoint's path."""
    folder, destination = Path(folder), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    payload = load_checkpoint(folder / CHECKPOINT_NAME)
    saved = dict(payload["config"])
    saved.update({k: config[k] for k in PBT_MUTATIONS})
    schedule_fn = config_lr_scheduler_fn(config_from_mapping(SignSGDConfig, config))
    for state in payload["workers"]:
        held = state.get("schedule")
        if held is None:  # checkpoints before schedules: the constant config.lr throughout
            continue
        if schedule_fn is None:
            held["lr"] = float(config["lr"])
        else:  # raysign.signsgd.workload.ConfigSchedule's state: the schedule and its step
            schedule = dict(schedule_fn.keywords["schedule"])
            lr = scheduled_lr(int(held["scheduler"]["last_epoch"]), **schedule)
            held["scheduler"].update(schedule=schedule, base_lrs=[float(config["lr"])],
                                     _last_lr=[lr])
            held["lr"] = lr
    path = save_checkpoint(destination / CHECKPOINT_NAME, config=saved, step=payload["step"],
                           workers=payload["workers"], extra=payload["extra"])
    if (folder / METRICS_FILE).exists():
        shutil.copyfile(folder / METRICS_FILE, destination / METRICS_FILE)
    return path


class CheckpointingTrainer(SignSGDTrainer):
    """The trainer, remembering the step and file of the last checkpoint it wrote."""

    saved_step = 0
    checkpoint_path = Path(CHECKPOINT_NAME)

    def save_checkpoint(self, step: int, curve: list, identical: bool) -> Path:
        self.checkpoint_path = super().save_checkpoint(step, curve, identical)
        self.saved_step = step
        return self.checkpoint_path


def trainable(config: dict[str, Any]) -> None:
    import ray

    from raysign.actors.cluster import ActorResources

    # A report carries a checkpoint when the trainer wrote one at that step; by default at
    # every evaluation, so that PBT can clone any reported state.
    run_config = config_from_mapping(
        SignSGDConfig, config, vote_shards=VOTE_SHARDS, name="sweep-signsgd",
        results_dir=tune.get_context().get_trial_dir(),
        **({} if "checkpoint_every" in config else
           {"checkpoint_every": config.get("eval_every", 0)}))
    # The trial's placement group: bundle 0 is this driver, bundles 1..M the workers.
    worker_bundle = ray.util.get_current_placement_group().bundle_specs[1]
    trainer = CheckpointingTrainer(run_config, progress=False, worker_options=ActorResources(
        num_cpus=worker_bundle["CPU"], num_gpus=worker_bundle.get("GPU", 0.0)))
    restored = tune.get_checkpoint()
    resume = None
    if restored is not None:
        with restored.as_directory() as folder:
            resume = adopt_checkpoint(folder, trainer.run_dir.path, to_dict(run_config))
    kill_after = None if restored is not None else config.get("kill_after_step")

    def report(record: dict[str, Any]) -> None:
        if "test_accuracy" not in record:
            return
        if kill_after is not None and record["step"] > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        metrics = {"test_accuracy": record["test_accuracy"], "loss": record["loss"],
                   "step": record["step"], "lr": record["lr"]}
        if trainer.saved_step != record["step"]:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as staging:
            for name in (trainer.checkpoint_path.name, METRICS_FILE):
                shutil.copyfile(trainer.run_dir.file(name), Path(staging) / name)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(staging))

    try:
        trainer.run(on_record=report, resume=resume)
    finally:
        trainer.shutdown()
