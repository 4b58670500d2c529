"""A 3-D point-mass drone landing environment with ground effect (Shi et al., ICRA 2019).

The same physics as ``raysign.lander.env`` (read its docstring first) on a point mass in 3-D,
with the thrust as a vector: the vehicle's attitude loop is assumed fast, so the commanded
force ``F_cmd = (F_x, F_y, F_z)`` is what the rotors produce after the first-order motor lag.

    m * dp/dt^2 = F + f_a(p, v, F) - m g e_z + m w,        w ~ N(0, sigma_a^2 I)

The true residual is the Cheeseman-Bennett ground effect on the vertical thrust component,
``k_ge * (ratio(z) - 1) * F_z e_z``, plus quadratic drag ``-c_d * v * |v|`` on every axis.

## Action space

``Box([-F_lat, -F_lat, 0], [F_lat, F_lat, T_max], (3,), float32)`` (N), with
``F_lat = 0.5 m g`` and ``T_max = 2 m g``.

## Observation space

``Box(float32, (9,))``: position ``[x, y, z]`` (m, ``|x|, |y| <= xy_max``, ``0 <= z <= z_max``),
velocity (m/s, each in ``[-v_max, v_max]``) and the measured force (N).

## Reward

``-||p - (0, 0, target_height)||`` per step.

## Starting state

``x, y ~ U(-0.5, 0.5)``, ``z ~ U(z0_low, z0_high)`` (1-2 m), at rest, hover thrust; or the
``options`` ``{"position": (x, y, z), "velocity": ..., "force": ...}`` of ``reset``.

## Episode end

Terminated when the vehicle leaves the box ``|x|, |y| <= xy_max``, ``z <= z_max``; truncated
after 1000 steps (10 s).

## Info

``acceleration`` (measured, m/s^2, shape (3,)), ``contact``, ``touchdown`` (hit the ground
this step),
``touchdown_speed`` (vertical speed at that impact, else 0) and ``time``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from raysign.config import check_range
from raysign.lander.env import GRAVITY, GroundEffectModel


class GroundEffectLander3DEnv(gym.Env):
    """3-D point-mass landing with ground effect; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, render_mode: str | None = None, mass: float = 1.47, dt: float = 0.01,
                 motor_time_constant: float = 0.05, max_thrust_to_weight: float = 2.0,
                 max_lateral_to_weight: float = 0.5, accel_noise_std: float = 0.05,
                 rotor_radius: float = 0.3, ground_effect_clamp: float = 0.8,
                 touchdown_lift_fraction: float = 0.12, drag_coefficient: float = 0.05,
                 target_height: float = 0.0, z0_low: float = 1.0, z0_high: float = 2.0,
                 xy_max: float = 10.0, z_max: float = 10.0, v_max: float = 20.0):
        check_range("mass", mass, 0.0, None, low_open=True)
        check_range("dt", dt, 0.0, 0.1, low_open=True)
        check_range("motor_time_constant", motor_time_constant, 0.0, None, low_open=True)
        check_range("max_thrust_to_weight", max_thrust_to_weight, 1.0, None, low_open=True)
        check_range("max_lateral_to_weight", max_lateral_to_weight, 0.0, None, low_open=True)
        check_range("accel_noise_std", accel_noise_std, 0.0, None)
        check_range("z0_low", z0_low, 0.0, z0_high)
        check_range("z0_high", z0_high, z0_low, z_max, high_open=True)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.render_mode = render_mode
        self.mass, self.gravity, self.dt = mass, GRAVITY, dt
        self.motor_alpha = 1.0 - math.exp(-dt / motor_time_constant)
        weight = mass * GRAVITY
        self.max_force = np.array([max_lateral_to_weight * weight] * 2
                                  + [max_thrust_to_weight * weight])
        self.min_force = np.array([-max_lateral_to_weight * weight] * 2 + [0.0])
        self.accel_noise_std = accel_noise_std
        self.target_height = target_height
        self.z0_low, self.z0_high = z0_low, z0_high
        self.xy_max, self.z_max, self.v_max = xy_max, z_max, v_max
        self.residual = GroundEffectModel(mass, rotor_radius, ground_effect_clamp,
                                          touchdown_lift_fraction, drag_coefficient)
        self.action_space = spaces.Box(self.min_force.astype(np.float32),
                                       self.max_force.astype(np.float32), dtype=np.float32)
        low = np.concatenate([[-xy_max, -xy_max, 0.0], [-v_max] * 3, self.min_force])
        high = np.concatenate([[xy_max, xy_max, z_max], [v_max] * 3, self.max_force])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32),
                                            dtype=np.float32)
        self.position = self.velocity = self.force = None
        self.time = 0.0
        self.history: list[tuple[float, float, float]] = []

    def residual_force(self, position: np.ndarray, velocity: np.ndarray,
                       force: np.ndarray) -> np.ndarray:
        """The true residual ``f_a`` (N, shape (3,)): ground effect on F_z, drag on all axes."""
        drag = -self.residual.drag_coefficient * velocity * np.abs(velocity)
        lift = self.residual(position[2], 0.0, force[2])
        return drag + np.array([0.0, 0.0, lift])

    def _obs(self) -> np.ndarray:
        v = np.clip(self.velocity, -self.v_max, self.v_max)
        p = np.clip(self.position, self.observation_space.low[:3], self.observation_space.high[:3])
        return np.concatenate([p, v, self.force]).astype(np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "position" in options:
            self.position = np.asarray(options["position"], dtype=np.float64).copy()
        else:
            xy = self.np_random.uniform(-0.5, 0.5, size=2)
            z = self.np_random.uniform(self.z0_low, self.z0_high)
            self.position = np.array([xy[0], xy[1], z])
        self.velocity = np.asarray(options.get("velocity", np.zeros(3)), dtype=np.float64).copy()
        hover = np.array([0.0, 0.0, self.mass * self.gravity])
        self.force = np.asarray(options.get("force", hover), dtype=np.float64).copy()
        self.time = 0.0
        self.history = [(0.0, float(self.position[2]), float(self.force[2]))]
        return self._obs(), {"time": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.position is None:
            raise RuntimeError("call reset() before step()")
        command = np.clip(np.asarray(action, dtype=np.float64).reshape(3), self.min_force,
                          self.max_force)
        p, v = self.position, self.velocity
        force = self.force + self.motor_alpha * (command - self.force)
        noise = self.accel_noise_std * self.np_random.standard_normal(3)
        accel = ((force + self.residual_force(p, v, force)) / self.mass
                 - np.array([0.0, 0.0, self.gravity]) + noise)
        v_new = v + accel * self.dt
        p_new = p + v_new * self.dt
        touchdown = False
        touchdown_speed = 0.0
        if p_new[2] <= 0.0:
            if p[2] > 0.0:
                touchdown = True
                touchdown_speed = abs(v_new[2])
            p_new[2] = 0.0
            v_new[2] = max(v_new[2], 0.0)
            v_new[:2] = 0.0  # an inelastic landing with friction: no sliding
        measured = (v_new - v) / self.dt
        self.position, self.velocity, self.force = p_new, v_new, force
        self.time += self.dt
        self.history.append((self.time, float(p_new[2]), float(force[2])))
        terminated = bool(abs(p_new[0]) > self.xy_max or abs(p_new[1]) > self.xy_max
                          or p_new[2] > self.z_max)
        reward = -float(np.linalg.norm(p_new - np.array([0.0, 0.0, self.target_height])))
        info = {"acceleration": measured, "contact": bool(p_new[2] <= 0.0),
                "touchdown": touchdown,
                "touchdown_speed": touchdown_speed, "time": self.time}
        return self._obs(), reward, terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        from raysign.lander.report import plot_history

        return plot_history(np.asarray(self.history), self.mass * self.gravity,
                            self.target_height)
