"""Fitting the learned residual to flight data, and how well a residual cancels the ground
effect (Shi et al., ICRA 2019, sec. IV-V).

``fit_residual`` trains one ``ResidualNet`` (spectrally normalised or not) on collected samples
and reports its Lipschitz product against ``gamma`` and the certified thrust contraction of the
controller's fixed-point solve. ``residual_error`` and ``ground_effect_cancellation`` compare a
residual with the environment's true ``GroundEffectModel`` at hover; ``noise_floor_error``
predicts the hover error a PD loop keeps with what the residual leaves uncancelled.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from raysign.lander.config import LanderConfig
from raysign.lander.env import GRAVITY, GroundEffectModel
from raysign.lander.residual import NumpyResidual, ResidualNet, train_residual


def fit_residual(data: dict[str, np.ndarray], config: LanderConfig, gamma: float | None,
                 min_height: float = 0.0) -> tuple[ResidualNet, dict[str, Any]]:
    """Train one residual network on the samples with ``z >= min_height``; returns the network
    and a report (samples, final loss, Lipschitz product, certified thrust contraction)."""
    import torch

    keep = data["z"] >= min_height
    torch.manual_seed(config.seed)  # the initial weights; the batches use their own generator
    net = ResidualNet(width=config.width, depth=config.depth, gamma=gamma)
    features = net.scales.features(data["z"][keep], data["v"][keep], data["thrust"][keep])
    start = time.perf_counter()
    losses = train_residual(net, features, data["residual"][keep], config.residual_training())
    lipschitz = net.lipschitz_product()
    report = {"gamma": gamma, "min_height": min_height, "samples": int(keep.sum()),
              "final_loss": losses[-1], "train_seconds": time.perf_counter() - start,
              "lipschitz_product": lipschitz,
              # float32 rounding of W / sigma may exceed gamma by ~1e-7 relative.
              "lipschitz_within_gamma": None if gamma is None else lipschitz <= gamma * (1 + 1e-6),
              "thrust_lipschitz_bound": net.thrust_lipschitz_bound()}
    return net, report


def residual_error(residual: NumpyResidual, heights: list[float], mass: float = 1.47) -> dict:
    """``|f_hat - f_a| / m`` (m/s^2) at hover thrust and zero velocity for each height."""
    truth = GroundEffectModel(mass)
    hover = mass * GRAVITY
    return {f"residual_err_{round(h * 100)}cm": abs(residual(h, 0.0, hover)
                                                    - truth(h, 0.0, hover)) / mass
            for h in heights}


def ground_effect_cancellation(residual: NumpyResidual, heights: list[float],
                               mass: float = 1.47, dz: float = 1e-3) -> list[dict[str, float]]:
    """How well ``residual`` cancels the true one while hovering at each height (v = 0, thrust
    ``T_h`` with ``T_h + f_a(h, 0, T_h) = m g``): the residual error ``(f_hat - f_a) / m``
    (m/s^2), the stiffness the true ground effect adds to an uncompensated PD loop,
    ``-(d f_a / dz) / m`` (1/s^2), and the part of it the residual leaves uncancelled,
    ``-(d (f_a - f_hat) / dz) / m`` (central differences with step ``dz``)."""
    truth = GroundEffectModel(mass)
    out = []
    for h in heights:
        thrust = mass * GRAVITY / (1.0 + truth(h, 0.0, 1.0))  # f_a is linear in T at v = 0

        def gap(z: float, thrust: float = thrust) -> float:
            return truth(z, 0.0, thrust) - residual(z, 0.0, thrust)

        out.append({"height": h, "hover_thrust": thrust,
                    "residual_error": -gap(h) / mass,
                    "true_stiffness": -(truth(h + dz, 0.0, thrust) - truth(h - dz, 0.0, thrust))
                    / (2 * dz * mass),
                    "leftover_stiffness": -(gap(h + dz) - gap(h - dz)) / (2 * dz * mass)})
    return out


def noise_floor_error(kp: float, kd: float, noise_std: float, dt: float,
                      stiffness: float = 0.0, residual_error: float = 0.0) -> float:
    """Stationary mean ``|e|`` (m) of ``e'' + kd e' + (kp + stiffness) e = -residual_error + w``
    with ``w`` the environment's acceleration noise (std ``noise_std`` per step of ``dt``, i.e.
    white noise of intensity ``noise_std^2 dt``): ``e`` is Gaussian with mean
    ``mu = -residual_error / (kp + stiffness)`` and variance ``noise_std^2 dt / (2 kd (kp +
    stiffness))``, and ``E|e|`` is the folded normal mean. Ignores the motor lag."""
    from scipy import stats

    k = kp + stiffness
    mu = -residual_error / k
    sigma = math.sqrt(noise_std**2 * dt / (2.0 * kd * k))
    return float(sigma * math.sqrt(2.0 / math.pi) * math.exp(-mu**2 / (2 * sigma**2))
                 + abs(mu) * (1.0 - 2.0 * stats.norm.cdf(-abs(mu) / sigma)))
