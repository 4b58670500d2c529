"""The Neural Lander tasks (Shi et al., ICRA 2019, sec. VI): the task-name grammar and each
task's start, target and height reference.

Tasks (1-D environment, 10 s = 1000 steps each):

- ``landing``: from ``z0 ~ U(1, 2)`` m down a minimum-jerk reference to ``z = 0`` in 5 s,
  then holding ``z_d = 0``;
- ``hover_5cm`` / ``hover_10cm`` / ``hover_20cm``: from 0.5 m down a minimum-jerk reference to
  the hover height in 3 s, then hovering (``hover_<N>cm`` for any 0 < N < 50);
- ``landing_descend``: the ``landing`` reference, and from 5 s on the reference keeps descending
  below the ground, its speed rising smoothly (minimum-jerk profile, 1 s) to the land speed
  ``LAND_SPEED`` = 0.3 m/s, as an autopilot's land mode descends until it detects ground contact
  (PX4's Land mode: descend at ``MPC_LAND_SPEED`` until the vehicle hits the ground);
  ``landing_descend_<N>cms`` at N cm/s. In ``landing`` a controller that does not cancel the
  ground effect never touches down, so its touchdown speed is undefined; here every controller
  touches down and the touchdown speeds can be compared (``raysign.lander.stats``). Its final
  window error is not a target: the reference is below the ground by then.

The 3-D tasks (``task_setup_3d``) are the same with a lateral offset: ``x0, y0 ~ U(-0.5, 0.5)``
m, brought to ``(0, 0)`` by a minimum-jerk reference on each horizontal axis over the same
duration as the vertical one.
"""

from __future__ import annotations

import re

import numpy as np

from raysign.config import ConfigError
from raysign.lander.controllers import min_jerk

TASKS = ("landing", "hover_5cm", "hover_10cm", "hover_20cm", "landing_descend")
DESCEND_TASK = "landing_descend"
LAND_SPEED = 0.3  # m/s, the speed the landing_descend reference keeps below the ground
LAND_SPEED_RAMP_S = 1.0


def _task_number(task: str, prefix: str, unit: str) -> float | None:
    """N of ``<prefix>_<N><unit>`` (N a plain decimal number > 0), else None."""
    match = re.fullmatch(rf"{prefix}_(\d+(?:\.\d+)?){unit}", task)
    return float(match.group(1)) if match and float(match.group(1)) > 0 else None


def land_speed(task: str) -> float:
    """The speed (m/s) at which the reference of a ``landing_descend[_<N>cms]`` task keeps
    descending below the ground."""
    if task == DESCEND_TASK:
        return LAND_SPEED
    speed = _task_number(task, DESCEND_TASK, "cms")
    if speed is None:
        raise ValueError(f"task={task!r} is not {DESCEND_TASK!r} or {DESCEND_TASK}_<N>cms, "
                         "N > 0")
    return speed / 100.0


def hover_height(task: str) -> float:
    """The height (m) of a ``hover_<N>cm`` task, 0 < N < 50 (the hovers start at 0.5 m)."""
    height = _task_number(task, "hover", "cm")
    if height is None or height >= 50:
        raise ValueError(f"task={task!r} is not hover_<N>cm with 0 < N < 50")
    return height / 100.0


def is_descend_task(task: str) -> bool:
    """Whether ``task`` is ``landing_descend`` or ``landing_descend_<N>cms``."""
    return task == DESCEND_TASK or task.startswith(DESCEND_TASK + "_")


def check_task(task: str) -> str:
    """``task`` if it names a task (one of ``TASKS``, ``hover_<N>cm`` or
    ``landing_descend_<N>cms``), else ConfigError naming the valid forms."""
    try:
        start_and_target(task, np.random.default_rng(0))
    except ValueError as error:
        raise ConfigError(f"task={task!r} is not one of {list(TASKS)}, hover_<N>cm "
                          f"(0 < N < 50) or {DESCEND_TASK}_<N>cms (N > 0)") from error
    return task


def descent_duration(task: str) -> float:
    """Seconds the reference of ``task`` takes to reach its final height (for
    ``landing_descend``: to reach the ground)."""
    if task == "landing":
        return 5.0
    if is_descend_task(task):
        land_speed(task)  # names the valid forms in its error
        return 5.0
    if task.startswith("hover_"):
        hover_height(task)  # names the valid form in its error
        return 3.0
    raise ValueError(f"task={task!r} is not one of {TASKS} (or hover_<N>cm)")


def start_and_target(task: str, rng: np.random.Generator) -> tuple[float, float]:
    """Start and final height of ``task`` (m): landing from a height drawn in [1, 2] m to 0,
    hover from 0.5 m to N cm."""
    descent_duration(task)  # names the tasks in its error
    if task == "landing" or is_descend_task(task):
        return float(rng.uniform(1.0, 2.0)), 0.0
    return 0.5, hover_height(task)


def descend_below_ground(z0: float, duration: float, speed: float,
                         ramp_s: float = LAND_SPEED_RAMP_S):
    """The landing reference (minimum jerk from ``z0`` to 0 in ``duration`` s), then a descent
    below the ground whose speed rises from 0 to ``speed`` over ``ramp_s`` s with the
    minimum-jerk profile ``sigma(s) = 10 s^3 - 15 s^4 + 6 s^5`` and stays there:
    ``t -> (z_d, v_d, a_d)``, continuous in position, velocity and acceleration."""
    landing = min_jerk(z0, 0.0, duration)

    def reference(t: float) -> tuple[float, float, float]:
        if t <= duration:
            return landing(t)
        s = min((t - duration) / ramp_s, 1.0)
        if s < 1.0:
            # Integral of sigma from 0 to s: 2.5 s^4 - 3 s^5 + s^6 (0.5 at s = 1).
            pos = -speed * ramp_s * (2.5 * s**4 - 3 * s**5 + s**6)
            return (pos, -speed * (10 * s**3 - 15 * s**4 + 6 * s**5),
                    -speed * (30 * s**2 - 60 * s**3 + 30 * s**4) / ramp_s)
        return -speed * (0.5 * ramp_s + (t - duration - ramp_s)), -speed, 0.0

    return reference


def vertical_reference(task: str, z0: float, height: float):
    """The height reference ``t -> (z_d, v_d, a_d)`` of ``task`` from ``z0`` to ``height``."""
    if is_descend_task(task):
        return descend_below_ground(z0, descent_duration(task), land_speed(task))
    return min_jerk(z0, height, descent_duration(task))


def task_setup(task: str, rng: np.random.Generator):
    """``(z0, reference, target)`` of one episode of ``task``."""
    z0, height = start_and_target(task, rng)
    return z0, vertical_reference(task, z0, height), height


def task_setup_3d(task: str, rng: np.random.Generator):
    """``(start position (3,), reference t -> (p_d, v_d, a_d), target height)`` of ``task``."""
    duration = descent_duration(task)
    x0, y0 = rng.uniform(-0.5, 0.5, size=2)
    z0, height = start_and_target(task, rng)
    start = np.array([x0, y0, z0])
    axes = [min_jerk(x0, 0.0, duration), min_jerk(y0, 0.0, duration),
            vertical_reference(task, z0, height)]

    def reference(t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos, vel, acc = zip(*(axis(t) for axis in axes), strict=True)
        return np.array(pos), np.array(vel), np.array(acc)

    return start, reference, height
