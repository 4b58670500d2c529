"""Seeded episodes of the Neural Lander tasks on the 1-D environment (Shi et al., ICRA 2019,
sec. VI): the controllers and the per-episode metrics.

Metrics per episode: mean and max ``|z - z_d|`` over the final window (the last
``FINAL_WINDOW_S`` = 2 s), ``touchdown_speed`` and ``time_to_touchdown`` at the first ground
contact (NaN if none), and the fixed-point iterations per control step (mean and max) with the
largest observed contraction ratio. For a controller that never touches down, the descent
metrics (``descent_metrics``) say how it ends its descent: the downward speed when the
reference reaches its final height, the lowest height reached and the time spent airborne.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from raysign.lander import ENV_ID
from raysign.lander.config import LanderConfig
from raysign.lander.controllers import TrackingController
from raysign.lander.env import GroundEffectModel
from raysign.lander.residual import NumpyResidual
from raysign.lander.tasks import descent_duration, task_setup

FINAL_WINDOW_S = 2.0


def descent_metrics(heights: np.ndarray, velocities: np.ndarray, dt: float,
                    descent_s: float, touchdown_time: float) -> dict[str, float]:
    """How an episode ends its descent, from the state after each step (``heights`` and
    ``velocities``, float arrays of shape (steps,), m and m/s): the downward speed ``-v`` when
    the reference reaches its final height (``descent_s``; NaN if the episode ended before),
    the lowest height reached, and the time airborne (until the first touchdown, or the whole
    episode without one), in seconds."""
    step = int(round(descent_s / dt)) - 1
    return {"descent_end_speed": float(-velocities[step]) if step < len(velocities)
            else math.nan,
            "min_height": float(np.min(heights)),
            "airborne_s": touchdown_time if not math.isnan(touchdown_time)
            else len(heights) * dt}


def run_episode(controller: TrackingController, task: str, seed: int,
                steps: int = 1000, record: bool = False) -> dict[str, Any]:
    """One seeded episode of ``task``; metrics (and the trajectory when ``record``)."""
    rng = np.random.default_rng(seed)
    z0, reference, target = task_setup(task, rng)
    env = gym.make(ENV_ID, max_episode_steps=steps, target_height=target)
    base = env.unwrapped
    env.reset(seed=seed, options={"z0": z0})
    controller.reset()
    errors, zs, vs, thrusts, iterations = [], [], [], [], []
    contraction, converged = 0.0, True
    touchdown_speed = touchdown_time = touchdown_reference = math.nan
    for k in range(steps):
        z, v, _ = base.state
        ref = reference(k * base.dt)
        command, info = controller(float(z), float(v), ref)
        iterations.append(info.iterations)
        contraction = max(contraction, info.contraction)
        converged = converged and info.converged
        _, _, terminated, truncated, step_info = env.step(np.array([command], dtype=np.float32))
        z_ref = reference((k + 1) * base.dt)[0]
        if step_info["touchdown"] and math.isnan(touchdown_time):
            touchdown_speed, touchdown_time = step_info["touchdown_speed"], step_info["time"]
            touchdown_reference = z_ref
        errors.append(abs(base.state[0] - z_ref))
        zs.append(base.state[0])
        vs.append(base.state[1])
        thrusts.append(base.state[2])
        if terminated or truncated:
            break
    env.close()
    window = int(round(FINAL_WINDOW_S / base.dt))
    final = np.asarray(errors[-window:])
    out = {"task": task, "controller": controller.name, "seed": seed,
           "final_mean_abs_z_error": float(final.mean()),
           "final_max_abs_z_error": float(final.max()),
           "touchdown_speed": touchdown_speed, "time_to_touchdown": touchdown_time,
           "touchdown_reference_height": touchdown_reference,
           "fp_iterations_mean": float(np.mean(iterations)),
           "fp_iterations_max": int(np.max(iterations)),
           "fp_max_contraction": contraction, "fp_all_converged": converged,
           **descent_metrics(np.asarray(zs), np.asarray(vs), base.dt, descent_duration(task),
                             touchdown_time)}
    if record:
        times = base.dt * np.arange(1, len(zs) + 1)
        out["trajectory"] = {"t": times, "z": np.asarray(zs), "thrust": np.asarray(thrusts),
                             "z_ref": np.array([reference(t)[0] for t in times])}
    return out


def evaluate(controller: TrackingController, task: str, seeds: list[int],
             record_first: bool = True) -> list[dict[str, Any]]:
    """``run_episode`` for each seed; the first keeps its trajectory when ``record_first``."""
    return [run_episode(controller, task, s, record=record_first and k == 0)
            for k, s in enumerate(seeds)]


def make_controllers(residuals: dict[str, NumpyResidual | None],
                     config: LanderConfig) -> dict[str, TrackingController]:
    """One ``TrackingController`` per name; ``oracle`` gets the environment's true residual."""
    out = {}
    for name, residual in residuals.items():
        fn = GroundEffectModel() if name == "oracle" else residual
        out[name] = TrackingController(fn, kp=config.kp, kd=config.kd, name=name)
    return out
