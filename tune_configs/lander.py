"""Neural Lander sweep (Shi et al., ICRA 2019): the Lipschitz bound gamma of the spectrally
normalised residual, the network width and the amount of training data (flights per seed).

Each trial collects its data (``collect_seeds`` x ``flights`` random near-ground flights),
trains the residual network and flies the Neural Lander controller on the landing task and the
5/10/20 cm hovers, and reports the final mean |z error| averaged over tasks
(``neural_mean_error``, minimised), the error per task, the Lipschitz product and the certified
thrust contraction bound. One CPU per trial (one GPU when the cluster has one per CPU).

    raysign sweep lander            # gamma 1/2/4/8 x width 32/64 x flights 2/8, 3 eval seeds
    raysign sweep lander --quick    # 2 trials, tiny (tests)
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raysign.config import config_from_mapping
from raysign.tune_configs import one_device_per_trial as trial_resources  # noqa: F401

DESCRIPTION = "Neural Lander: Lipschitz bound gamma x width x training flights"
METRIC = "neural_mean_error"
MODE = "min"


def param_space(quick: bool) -> dict[str, Any]:
    if quick:
        return {"gamma": tune.grid_search([1.0, 4.0]), "width": 16, "flights": 1,
                "collect_seeds": 1, "duration": 3.0, "steps": 50, "eval_seeds": 1,
                "tasks": ["hover_10cm"]}
    return {"gamma": tune.grid_search([1.0, 2.0, 4.0, 8.0]),
            "width": tune.grid_search([32, 64]),
            "flights": tune.grid_search([2, 8]),
            "collect_seeds": 2, "steps": 2000, "eval_seeds": 3,
            "tasks": ["landing", "hover_5cm", "hover_10cm", "hover_20cm"]}


def trainable(config: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from raysign.lander.collect import collect_flights, merge
    from raysign.lander.config import LanderConfig
    from raysign.lander.episodes import evaluate, make_controllers
    from raysign.lander.fitting import fit_residual, residual_error

    torch.set_num_threads(1)
    cfg = config_from_mapping(LanderConfig, config)
    data = merge([collect_flights(cfg.collect_config(), cfg.seed + k)
                  for k in range(cfg.collect_seeds)])
    net, report = fit_residual(data, cfg, cfg.gamma)
    residual = net.to_numpy()
    controller = make_controllers({"neural": residual}, cfg)["neural"]
    seeds = cfg.evaluation_seeds()
    result: dict[str, Any] = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    errors = []
    for task in config["tasks"]:
        episodes = evaluate(controller, task, seeds, record_first=False)
        error = float(np.mean([e["final_mean_abs_z_error"] for e in episodes]))
        result[f"error_{task}"] = error
        result[f"fp_iterations_{task}"] = float(np.mean([e["fp_iterations_mean"]
                                                         for e in episodes]))
        errors.append(error)
    result.update(residual_error(residual, [0.05, 0.1, 0.2]))
    result[METRIC] = float(np.mean(errors))
    tune.report(result)
