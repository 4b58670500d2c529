"""Seeded episodes of the Neural Lander tasks on the 3-D point-mass environment
(``raysign.lander.env3d``): the 1-D tasks with a lateral offset (``tasks.task_setup_3d``).

Ground effect acts on the vertical force only and is the same function ``f_z(z, v_z, F_z)`` as in
the 1-D environment, so the residual network trained on 1-D flights is the vertical residual
here (``tests/test_lander_3d.py`` checks it). Controllers (``make_controllers_3d``):
``baseline`` (no residual), ``neural`` (the learned vertical residual, fixed-point solve for
``F_z``), ``nosn`` (the unnormalised network) and ``oracle`` (the true vertical residual and the
lateral drag).

Metrics per episode: those of the 1-D episodes (``raysign.lander.episodes``: final-window
mean/max ``|z - z_d|``, touchdown speed and time, fixed-point iterations and contraction,
descent metrics) plus the final-window mean and max lateral error ``||(x, y) - (x_d, y_d)||``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from raysign.lander import ENV_3D_ID
from raysign.lander.config import LanderConfig
from raysign.lander.controllers import TrackingController3D
from raysign.lander.env import GroundEffectModel
from raysign.lander.episodes import FINAL_WINDOW_S, descent_metrics
from raysign.lander.residual import NumpyResidual
from raysign.lander.tasks import descent_duration, task_setup_3d

CONTROLLERS_3D = ("baseline", "neural", "nosn", "oracle")


def run_episode_3d(controller: TrackingController3D, task: str, seed: int,
                   steps: int = 1000) -> dict[str, Any]:
    """One seeded 3-D episode of ``task``; the 1-D metrics plus the lateral error."""
    rng = np.random.default_rng(seed)
    start, reference, target = task_setup_3d(task, rng)
    env = gym.make(ENV_3D_ID, max_episode_steps=steps, target_height=target)
    base = env.unwrapped
    env.reset(seed=seed, options={"position": start})
    controller.reset()
    z_errors, lateral_errors, iterations, heights, speeds = [], [], [], [], []
    contraction, converged = 0.0, True
    touchdown_speed = touchdown_time = touchdown_reference = math.nan
    for k in range(steps):
        command, info = controller(base.position, base.velocity, reference(k * base.dt))
        iterations.append(info.iterations)
        contraction = max(contraction, info.contraction)
        converged = converged and info.converged
        _, _, terminated, truncated, step_info = env.step(command.astype(np.float32))
        p_d = reference((k + 1) * base.dt)[0]
        if step_info["touchdown"] and math.isnan(touchdown_time):
            touchdown_speed, touchdown_time = step_info["touchdown_speed"], step_info["time"]
            touchdown_reference = float(p_d[2])
        z_errors.append(abs(base.position[2] - p_d[2]))
        lateral_errors.append(float(np.linalg.norm(base.position[:2] - p_d[:2])))
        heights.append(float(base.position[2]))
        speeds.append(float(base.velocity[2]))
        if terminated or truncated:
            break
    env.close()
    window = int(round(FINAL_WINDOW_S / base.dt))
    final_z, final_xy = np.asarray(z_errors[-window:]), np.asarray(lateral_errors[-window:])
    return {"task": task, "controller": controller.name, "seed": seed,
            "final_mean_abs_z_error": float(final_z.mean()),
            "final_max_abs_z_error": float(final_z.max()),
            "final_mean_lateral_error": float(final_xy.mean()),
            "final_max_lateral_error": float(final_xy.max()),
            "touchdown_speed": touchdown_speed, "time_to_touchdown": touchdown_time,
            "touchdown_reference_height": touchdown_reference,
            "fp_iterations_mean": float(np.mean(iterations)),
            "fp_iterations_max": int(np.max(iterations)),
            "fp_max_contraction": contraction, "fp_all_converged": converged,
            **descent_metrics(np.asarray(heights), np.asarray(speeds), base.dt,
                              descent_duration(task), touchdown_time)}


def make_controllers_3d(residuals: dict[str, NumpyResidual | None],
                        config: LanderConfig) -> dict[str, TrackingController3D]:
    """One ``TrackingController3D`` per name; ``oracle`` gets the true vertical residual and the
    lateral drag of the environment, the others only their (learned or no) vertical residual."""
    truth = GroundEffectModel()
    out = {}
    for name, residual in residuals.items():
        if name == "oracle":
            def drag(v_xy: np.ndarray) -> np.ndarray:
                return -truth.drag_coefficient * v_xy * np.abs(v_xy)

            out[name] = TrackingController3D(truth, drag, kp=config.kp, kd=config.kd, name=name)
        else:
            out[name] = TrackingController3D(residual, kp=config.kp, kd=config.kd, name=name)
    return out


def evaluate_3d(controller: TrackingController3D, task: str,
                seeds: list[int]) -> list[dict[str, Any]]:
    """``run_episode_3d`` for each seed."""
    return [run_episode_3d(controller, task, s) for s in seeds]
