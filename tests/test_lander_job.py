"""``raysign lander`` and the lander sweep: end to end on a tiny configuration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from raysign.results import read_jsonl


@pytest.mark.slow
@pytest.mark.ray
def test_land_collects_trains_and_evaluates_as_ray_tasks(ray_session, tmp_path):
    from raysign.actors.lander_job import run_land
    from raysign.lander.config import LanderConfig

    config = LanderConfig(collect_seeds=2, flights=1, duration=3.0, steps=100, width=16,
                          eval_seeds=1, gamma=2.0)
    out = run_land(config, ["hover_10cm"], ["baseline", "neural", "nosn", "oracle"],
                   results_dir=str(tmp_path), name="land")
    run_dir = Path(out["run_dir"])
    for name in ("config.json", "residuals.json", "metrics.jsonl", "summary.csv",
                 "claims.csv", "episodes.csv", "trajectories.png"):
        assert (run_dir / name).is_file(), name
    episodes = read_jsonl(run_dir / "metrics.jsonl")
    assert len(episodes) == 4
    residuals = json.loads((run_dir / "residuals.json").read_text())
    assert residuals["neural"]["lipschitz_product"] <= 2.0 * (1 + 1e-6)
    assert residuals["neural"]["samples"] == out["samples"] > 400
    with open(run_dir / "summary.csv") as fh:
        table = {row["controller"]: row for row in csv.DictReader(fh)}
    # The baseline sits centimetres above 10 cm in ground effect; the oracle cancels it.
    assert float(table["baseline"]["final_mean_abs_z_error"]) > 0.03
    assert float(table["oracle"]["final_mean_abs_z_error"]) < 0.005
    assert table["neural"]["fp_all_converged"] == "True"


def final_window_error(residual, config, z0: float, height: float, duration: float,
                       seed: int) -> float:
    """The Neural Lander's mean |z - z_d| over the last 2 s of one seeded 10 s episode down a
    minimum-jerk reference from ``z0`` to ``height``, flown here step by step with the
    environment and the controller (the reference the sweep's number is checked against)."""
    import gymnasium as gym

    from raysign.lander import ENV_ID
    from raysign.lander.controllers import TrackingController, min_jerk

    controller = TrackingController(residual, kp=config.kp, kd=config.kd)
    reference = min_jerk(z0, height, duration)
    env = gym.make(ENV_ID, max_episode_steps=1000, target_height=height)
    env.reset(seed=seed, options={"z0": z0})
    dt, errors = env.unwrapped.dt, []
    for k in range(1000):
        z, v, _ = env.unwrapped.state
        thrust, _ = controller(float(z), float(v), reference(k * dt))
        env.step(np.array([thrust], dtype=np.float32))
        errors.append(abs(env.unwrapped.state[0] - reference((k + 1) * dt)[0]))
    env.close()
    return float(np.mean(errors[-int(round(2.0 / dt)):]))


@pytest.mark.slow
@pytest.mark.ray
def test_lander_quick_sweep_reports_the_error_its_best_config_flies(ray_session, tmp_path):
    import torch

    from raysign.actors.sweep import run_sweep
    from raysign.lander.collect import collect_flights, merge
    from raysign.lander.config import LanderConfig
    from raysign.lander.fitting import fit_residual

    summary = run_sweep("lander", quick=True, results_root=tmp_path)
    assert summary["errors"] == [] and summary["num_trials"] == 2
    best, trial = summary["best_result"], summary["best_config"]
    assert best["lipschitz_product"] <= best["gamma"] * (1 + 1e-6)
    # Tune's best trial is the one with the smallest reported error.
    with open(Path(summary["run_dir"]) / "results.csv") as fh:
        errors = [float(row["neural_mean_error"]) for row in csv.DictReader(fh)]
    assert best["neural_mean_error"] == min(errors)
    # Rebuild the best trial from its config (the same data seeds, one torch thread as in the
    # trial) and fly its hover here: the sweep must report that episode's error.
    assert trial["tasks"] == ["hover_10cm"]
    config = LanderConfig(**{k: v for k, v in trial.items()
                             if k in LanderConfig.__dataclass_fields__})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = merge([collect_flights(config.collect_config(), config.seed + k)
                      for k in range(config.collect_seeds)])
        net, _ = fit_residual(data, config, config.gamma)
    finally:
        torch.set_num_threads(threads)
    expected = np.mean([final_window_error(net.to_numpy(), config, 0.5, 0.10, 3.0, seed)
                        for seed in config.evaluation_seeds()])
    assert best["error_hover_10cm"] == pytest.approx(expected, rel=1e-6)
    assert best["neural_mean_error"] == pytest.approx(expected, rel=1e-6)
