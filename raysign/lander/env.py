"""A 1-D vertical drone landing environment with ground effect (Shi et al., "Neural Lander",
ICRA 2019, sec. II-III).

The vehicle is a point mass ``m`` moving along the vertical axis. Its dynamics are the nominal
physics of eq. (1) of the paper plus an unknown residual force ``f_a``:

    m * dv/dt = T + f_a(z, v, T) - m * g + m * w,       w ~ N(0, sigma_a^2)   (acceleration noise)

``T`` is the collective thrust, which follows the commanded thrust through a first-order motor
lag ``tau * dT/dt = T_cmd - T`` (discretised exactly) and is limited to ``[0, T_max]``.
The true residual (never seen by a controller) is the Cheeseman-Bennett ground effect,

    T_IGE / T_OGE = 1 / (1 - (R / 4z)^2)                      (Cheeseman & Bennett 1955)

clamped at ``z_clamp = R / (4 * ground_effect_clamp)`` (the formula diverges at ``z = R/4``) and
scaled by a gain chosen so that the extra lift is ``touchdown_lift_fraction`` (12%) of the weight
at touchdown when hovering, plus a small quadratic aerodynamic drag aloft:

    f_a = k_ge * (ratio(z) - 1) * T - c_d * v * |v|.

The ground is inelastic: at ``z <= 0`` the height is clamped to 0 and a downward velocity is
set to 0. Integration is semi-implicit Euler with ``dt = 0.01`` s.

## Action space

``Box([0], [T_max], (1,), float32)``: the commanded collective thrust in newtons.

## Observation space

``Box(float32, (3,))``: ``[z, v, T]``, the height above ground (m, in ``[0, z_max]``), the
vertical velocity (m/s, in ``[-v_max, v_max]``) and the measured thrust (N, in ``[0, T_max]``),
i.e. what the paper measures with its motion-capture system and rotor-speed sensors.

## Reward

``-|z - target_height|`` per step (a landing task has ``target_height = 0``).

## Starting state

``z ~ U(z0_low, z0_high)`` (1 m to 2 m by default), ``v = 0`` and the hover thrust ``T = m g``.
``reset(options={"z0": h, "v0": v, "thrust0": T})`` starts from a chosen state instead.

## Episode end

Terminated when the vehicle climbs above ``z_max`` (it flew away); truncated by the
``TimeLimit`` of the registration (``max_episode_steps=1000``, 10 s).

## Info

``acceleration`` (the measured acceleration ``(v' - v)/dt`` of the step, m/s^2), ``contact``
(on the ground after the step), ``touchdown`` (the vehicle hit the ground during this step),
``touchdown_speed`` (its speed at that impact, else 0) and ``time`` (s).

## Arguments

``gymnasium.make("raysign/GroundEffectLander-v0", render_mode="rgb_array", target_height=0.0,
accel_noise_std=0.05)``; every physics constant below is a constructor argument.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from raysign.config import check_range

GRAVITY = 9.81


def ground_effect_ratio(z: np.ndarray | float, rotor_radius: float,
                        clamp: float) -> np.ndarray | float:
    """Cheeseman-Bennett thrust ratio ``1 / (1 - (R / 4z)^2)`` with ``R/4z`` clamped at
    ``clamp < 1`` (i.e. height clamped at ``z >= R / (4 clamp)``). Any shape of ``z`` (m)."""
    z_min = rotor_radius / (4.0 * clamp)
    x = rotor_radius / (4.0 * np.maximum(z, z_min))
    return 1.0 / (1.0 - x * x)


class GroundEffectModel:
    """The true residual ``f_a(z, v, T)`` (N) of the environment: ground effect plus drag."""

    def __init__(self, mass: float = 1.47, rotor_radius: float = 0.3,
                 ground_effect_clamp: float = 0.8, touchdown_lift_fraction: float = 0.12,
                 drag_coefficient: float = 0.05):
        self.mass = mass
        self.rotor_radius = rotor_radius
        self.clamp = ground_effect_clamp
        self.drag_coefficient = drag_coefficient
        # Gain k_ge such that at touchdown, hovering (T = m g), the extra lift is the fraction
        # of the weight: k_ge * (ratio(0) - 1) * m g = fraction * m g.
        self.gain = touchdown_lift_fraction / (float(ground_effect_ratio(0.0, rotor_radius,
                                                                         self.clamp)) - 1.0)

    def __call__(self, z: np.ndarray | float, v: np.ndarray | float,
                 thrust: np.ndarray | float) -> np.ndarray | float:
        ratio = ground_effect_ratio(z, self.rotor_radius, self.clamp)
        return self.gain * (ratio - 1.0) * thrust - self.drag_coefficient * v * np.abs(v)


class GroundEffectLanderEnv(gym.Env):
    """1-D vertical landing with ground effect; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, render_mode: str | None = None, mass: float = 1.47, dt: float = 0.01,
                 motor_time_constant: float = 0.05, max_thrust_to_weight: float = 2.0,
                 accel_noise_std: float = 0.05, rotor_radius: float = 0.3,
                 ground_effect_clamp: float = 0.8, touchdown_lift_fraction: float = 0.12,
                 drag_coefficient: float = 0.05, target_height: float = 0.0,
                 z0_low: float = 1.0, z0_high: float = 2.0, z_max: float = 10.0,
                 v_max: float = 20.0):
        check_range("mass", mass, 0.0, None, low_open=True)
        check_range("dt", dt, 0.0, 0.1, low_open=True)
        check_range("motor_time_constant", motor_time_constant, 0.0, None, low_open=True)
        check_range("max_thrust_to_weight", max_thrust_to_weight, 1.0, None, low_open=True)
        check_range("accel_noise_std", accel_noise_std, 0.0, None)
        check_range("ground_effect_clamp", ground_effect_clamp, 0.0, 1.0, low_open=True,
                    high_open=True)
        check_range("z0_low", z0_low, 0.0, z0_high)
        check_range("z0_high", z0_high, z0_low, z_max, high_open=True)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not one of "
                             f"{self.metadata['render_modes'] + [None]}")
        self.render_mode = render_mode
        self.mass = mass
        self.gravity = GRAVITY
        self.dt = dt
        self.motor_time_constant = motor_time_constant
        self.motor_alpha = 1.0 - math.exp(-dt / motor_time_constant)
        self.max_thrust = max_thrust_to_weight * mass * GRAVITY
        self.accel_noise_std = accel_noise_std
        self.target_height = target_height
        self.z0_low, self.z0_high = z0_low, z0_high
        self.z_max, self.v_max = z_max, v_max
        self.residual = GroundEffectModel(mass, rotor_radius, ground_effect_clamp,
                                          touchdown_lift_fraction, drag_coefficient)
        self.action_space = spaces.Box(0.0, self.max_thrust, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Box(
            low=np.array([0.0, -v_max, 0.0], dtype=np.float32),
            high=np.array([z_max, v_max, self.max_thrust], dtype=np.float32), dtype=np.float32)
        self.state: np.ndarray | None = None
        self.time = 0.0
        self.history: list[tuple[float, float, float]] = []

    @property
    def hover_thrust(self) -> float:
        return self.mass * self.gravity

    def _obs(self) -> np.ndarray:
        z, v, thrust = self.state
        return np.array([z, np.clip(v, -self.v_max, self.v_max), thrust], dtype=np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        z0 = options.get("z0")
        if z0 is None:
            z0 = float(self.np_random.uniform(self.z0_low, self.z0_high))
        self.state = np.array([z0, options.get("v0", 0.0),
                               options.get("thrust0", self.hover_thrust)], dtype=np.float64)
        self.time = 0.0
        self.history = [(0.0, float(z0), float(self.state[2]))]
        return self._obs(), {"time": 0.0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        command = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], 0.0,
                                self.max_thrust))
        z, v, thrust = self.state
        # 1. Motor lag (exact discretisation of tau dT/dt = T_cmd - T).
        thrust = thrust + self.motor_alpha * (command - thrust)
        # 2. Nominal physics + true residual + acceleration noise.
        noise = self.accel_noise_std * self.np_random.standard_normal()
        accel = (thrust + self.residual(z, v, thrust)) / self.mass - self.gravity + noise
        v_new = v + accel * self.dt
        z_new = z + v_new * self.dt
        # 3. Inelastic ground.
        touchdown = False
        touchdown_speed = 0.0
        if z_new <= 0.0:
            if z > 0.0:
                touchdown = True
                touchdown_speed = abs(v_new)
            z_new = 0.0
            v_new = max(v_new, 0.0)
        measured_accel = (v_new - v) / self.dt
        self.state = np.array([z_new, v_new, thrust], dtype=np.float64)
        self.time += self.dt
        self.history.append((self.time, z_new, thrust))
        terminated = bool(z_new > self.z_max)
        reward = -abs(z_new - self.target_height)
        info = {"acceleration": measured_accel, "contact": z_new <= 0.0,
                "touchdown": touchdown,
                "touchdown_speed": touchdown_speed, "time": self.time}
        return self._obs(), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        from raysign.lander.report import plot_history

        return plot_history(np.asarray(self.history), self.hover_thrust, self.target_height)
