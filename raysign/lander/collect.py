"""Training data for the residual: random near-ground flights (Shi et al., ICRA 2019, sec. VI-A).

Each flight tracks a random smooth height reference (a sum of three sinusoids between
``z_low - 0.1`` and ``z_high``, so that the vehicle is pushed into ground effect and onto the
ground) with the baseline controller plus a random thrust excitation (an Ornstein-Uhlenbeck
process), so that the data covers the thrust axis too. As in the paper, the label is computed
from the measured acceleration and the measured thrust:

    f_a / m = a_measured - (T - m g) / m,        a_measured = (v_{t+1} - v_t) / dt,

paired with the features ``(z_t, v_t, T_{t+1})`` (``T_{t+1}`` is the thrust that acted during
the step). Steps that start or end on the ground are dropped: there the contact force, not the
residual, balances the thrust.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from raysign.config import check_range
from raysign.lander import ENV_ID
from raysign.lander.controllers import TrackingController


@dataclass(frozen=True)
class CollectConfig:
    """Flights per seed, their length, the height band and the thrust excitation."""

    flights: int = 8
    duration: float = 10.0
    z_low: float = 0.0
    z_high: float = 1.0
    excitation: float = 0.08
    accel_noise_std: float = 0.05

    def __post_init__(self) -> None:
        check_range("flights", self.flights, 1, 10_000)
        check_range("duration", self.duration, 0.1, 1000.0)
        check_range("z_low", self.z_low, 0.0, self.z_high)
        check_range("z_high", self.z_high, self.z_low, 10.0, low_open=True)
        check_range("excitation", self.excitation, 0.0, 1.0)
        check_range("accel_noise_std", self.accel_noise_std, 0.0, None)


def random_reference(rng: np.random.Generator, low: float, high: float):
    """A smooth random height reference ``t -> (z_d, v_d, a_d)`` within ``[low, high]``."""
    freqs = rng.uniform(0.05, 0.4, size=3) * 2 * np.pi
    phases = rng.uniform(0, 2 * np.pi, size=3)
    weights = rng.dirichlet(np.ones(3))
    mid, half = 0.5 * (low + high), 0.5 * (high - low)

    def reference(t: float) -> tuple[float, float, float]:
        arg = freqs * t + phases
        return (mid + half * float(weights @ np.sin(arg)),
                half * float(weights @ (freqs * np.cos(arg))),
                -half * float(weights @ (freqs**2 * np.sin(arg))))

    return reference


def collect_flights(config: CollectConfig, seed: int) -> dict[str, np.ndarray]:
    """Fly ``config.flights`` random flights with seed ``seed``. Returns ``z``, ``v``,
    ``thrust`` (features, ``float64 [N]``), ``acceleration`` (the measured ``(v' - v) / dt``,
    m/s^2) and ``residual`` (measured ``f_a / m``, m/s^2)."""
    env = gym.make(ENV_ID, accel_noise_std=config.accel_noise_std,
                   max_episode_steps=int(round(config.duration / 0.01)))
    rng = np.random.default_rng(seed)
    base = env.unwrapped
    controller = TrackingController(mass=base.mass, max_thrust=base.max_thrust)
    columns: dict[str, list[float]] = {"z": [], "v": [], "thrust": [], "acceleration": [],
                                       "residual": []}
    for flight in range(config.flights):
        reference = random_reference(rng, config.z_low - 0.1, config.z_high)
        z0 = float(rng.uniform(config.z_low, config.z_high))
        obs, _ = env.reset(seed=seed * 100_003 + flight, options={"z0": z0})
        controller.reset()
        excitation, t, done = 0.0, 0.0, False
        z, v = float(obs[0]), float(obs[1])
        while not done:
            # Ornstein-Uhlenbeck thrust excitation with a 0.5 s correlation time.
            excitation += (-excitation * 0.02
                           + config.excitation * 0.2 * rng.standard_normal())
            thrust_cmd, _ = controller(z, v, reference(t))
            thrust_cmd *= 1.0 + excitation
            obs, _, terminated, truncated, info = env.step(np.array([thrust_cmd],
                                                                    dtype=np.float32))
            done = terminated or truncated
            z_new, v_new, thrust = (float(x) for x in base.state)
            if z > 0.0 and z_new > 0.0:
                columns["z"].append(z)
                columns["v"].append(v)
                columns["thrust"].append(thrust)
                columns["acceleration"].append(info["acceleration"])
                columns["residual"].append(info["acceleration"] - thrust / base.mass
                                           + base.gravity)
            z, v, t = z_new, v_new, t + base.dt
    env.close()
    return {k: np.asarray(c, dtype=np.float64) for k, c in columns.items()}


def merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate the outputs of several ``collect_flights`` calls."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
