"""Fixed-budget sweep of Khetan, Lipton & Anandkumar, ICLR 2018 (sec. 4-5): with B labels, label
``n = B // r`` Fashion-MNIST images ``r`` times each (r = 1, 3, 5, 7), by simulated
hammer-spammer workers of several qualities, aggregate with majority vote, Dawid-Skene or MBEM,
train a classifier and report its test accuracy. The theory predicts that r = 1 (more items,
one label each) is optimal when workers are good enough, and redundancy pays when they are poor.

Every trial uses one CPU (one GPU when the cluster has as many GPUs as CPUs). A grid, so trials
of the same (B, r, quality, seed) see the same annotations across methods.

    raysign sweep crowd            # B = 12,000, r in 1,3,5,7, quality 0.05-0.6, 2 seeds
    raysign sweep crowd --quick    # B = 600, r in 1,3, one quality, 1 epoch (tests)
    raysign crowd budget                  # the same sweep, then the table and the figure
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raysign.config import config_from_mapping
from raysign.tune_configs import one_device_per_trial as trial_resources  # noqa: F401

DESCRIPTION = "crowd labels at fixed budget: redundancy x worker quality x aggregation method"
METRIC = "test_accuracy"
MODE = "max"
REDUNDANCIES = [1, 3, 5, 7]


def param_space(quick: bool) -> dict[str, Any]:
    if quick:
        return {"budget": 600, "redundancy": tune.grid_search([1, 3]), "quality": 0.3,
                "method": tune.grid_search(["mv", "mbem"]), "epochs": 1, "rounds": 1,
                "hidden": 32, "test_size": 500, "n_workers": 20, "seed": 0}
    return {
        "budget": 12000,
        "redundancy": tune.grid_search(REDUNDANCIES),
        "quality": tune.grid_search([0.05, 0.1, 0.3, 0.6]),
        "method": tune.grid_search(["mv", "ds", "mbem"]),
        "seed": tune.grid_search([0, 1]),
        "epochs": 12,
        "rounds": 2,
        "n_workers": 100,
        "worker_model": "hammer_spammer",
    }


def trainable(config: dict[str, Any]) -> None:
    import torch

    from raysign.crowd.config import CrowdConfig
    from raysign.crowd.experiment import run_crowd_trial

    torch.set_num_threads(1)
    result = run_crowd_trial(config_from_mapping(CrowdConfig, config))
    tune.report({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
