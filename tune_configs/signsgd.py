"""Sweep of distributed signSGD: learning rate, momentum, workers and adversaries.

Each trial is one ``SignSGDTrainer`` run with its own worker and vote actors, reserved with a
placement group (one bundle for the trial's driver, one per worker, one per vote shard) so
that trials never wait on each other's actors. Reports test accuracy at every evaluation.

    raysign sweep signsgd            # the full grid (Fashion-MNIST, CNN, 1 epoch per trial)
    raysign sweep signsgd --quick    # a 2-trial smoke sweep on an MNIST subset
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from raysign.config import config_from_mapping

DESCRIPTION = "signSGD / Signum with majority vote: lr x momentum x workers x adversaries"
METRIC = "test_accuracy"
MODE = "max"
NUM_SAMPLES = 1
MAX_TRIAL_CPUS = 8.0
VOTE_SHARDS = 1

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


def _trial_cpus(cpus: float) -> float:
    return min(cpus, MAX_TRIAL_CPUS)


def _worker_share(budget: float, num_workers: int) -> tuple[float, float]:
    """(CPUs per worker, CPUs per vote actor) within a trial's budget."""
    from raysign.actors.trainer import VOTE_CPUS

    vote = VOTE_CPUS
    share = math.floor(1000 * (budget - 0.05 - vote * VOTE_SHARDS) / num_workers) / 1000
    return share, vote


def trial_resources(cpus: float, gpus: float):
    budget = _trial_cpus(cpus)

    def for_config(config: dict[str, Any]) -> tune.PlacementGroupFactory:
        m = config.get("num_workers", 7)
        share, vote = _worker_share(budget, m)
        gpu = 1.0 if gpus >= m else 0.0
        worker = {"CPU": share, "GPU": gpu} if gpu else {"CPU": share}
        return tune.PlacementGroupFactory(
            [{"CPU": 0.05}] + [dict(worker) for _ in range(m)] + [{"CPU": vote}] * VOTE_SHARDS)

    return for_config


def max_concurrent_trials(cpus: float, gpus: float) -> int:
    return max(1, int(cpus // _trial_cpus(cpus)))


def trainable(config: dict[str, Any]) -> None:
    import ray

    from raysign.actors.cluster import ActorResources
    from raysign.actors.trainer import SignSGDTrainer
    from raysign.signsgd.config import SignSGDConfig

    run_config = config_from_mapping(SignSGDConfig, config, vote_shards=VOTE_SHARDS,
                                     name="sweep-signsgd",
                                     results_dir=tune.get_context().get_trial_dir())
    # The trial's placement group: bundle 0 is this driver, bundles 1..M the workers.
    worker_bundle = ray.util.get_current_placement_group().bundle_specs[1]
    trainer = SignSGDTrainer(run_config, progress=False, worker_options=ActorResources(
        num_cpus=worker_bundle["CPU"], num_gpus=worker_bundle.get("GPU", 0.0)))

    def report(record: dict[str, Any]) -> None:
        if "test_accuracy" in record:
            tune.report({"test_accuracy": record["test_accuracy"], "loss": record["loss"],
                         "step": record["step"]})

    try:
        trainer.run(on_record=report)
    finally:
        trainer.shutdown()
