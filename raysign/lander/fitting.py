"""Fitting the learned residual to flight data, and how well a residual cancels the ground
effect (Shi et al., ICRA 2019, sec. IV-V).

``fit_residual`` trains one ``ResidualNet`` (spectrally normalised or not) on collected samples
and reports its Lipschitz product against ``gamma`` and the certified thrust contraction of the
controller's fixed-point solve. ``residual_error`` and ``ground_effect_cancellation`` compare a
residual with the environment's true ``GroundEffectModel`` at hover; ``noise_floor_error``
predicts the hover error a PD loop keeps with what the residual leaves uncancelled.
``fit_residual_from_logs`` does the same from a user's own flight logs (``raysign.lander.logs``)
and reports the learned ground-effect curve, ``f_hat / m`` against height at rest and hover
thrust.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raysign.lander.config import LanderConfig
from raysign.lander.env import GRAVITY, GroundEffectModel
from raysign.lander.logs import FlightLogConfig, residual_samples
from raysign.lander.residual import (
    FeatureScales,
    NumpyResidual,
    ResidualNet,
    ResidualTraining,
    train_residual,
)


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


@dataclass
class LogFit:
    """The result of ``fit_residual_from_logs``: the trained ``net``, the ``report`` (samples,
    final loss, Lipschitz product against gamma, certified thrust contraction, curve RMSE when a
    true curve was given) and the learned ``curve`` (columns ``height`` m and ``residual``
    m/s^2, plus ``true`` when known)."""

    net: ResidualNet
    report: dict[str, Any]
    curve: pd.DataFrame


def ground_effect_curve(net: ResidualNet, heights: np.ndarray) -> np.ndarray:
    """The learned residual ``f_hat / m`` (m/s^2) at rest (``v = 0``) and the nominal hover
    thrust ``m g``, at each height (m); ``float64 [len(heights)]``."""
    import torch

    heights = np.asarray(heights, dtype=np.float64)
    scales = net.scales
    features = scales.features(heights, np.zeros_like(heights),
                               np.full_like(heights, scales.thrust_scale))
    with torch.no_grad():
        return net(torch.as_tensor(features)).double().numpy()


def fit_residual_from_logs(logs: pd.DataFrame, config: FlightLogConfig | None = None, *,
                           source: str = "flight logs",
                           true_curve: Callable[[np.ndarray], np.ndarray] | None = None,
                           **fields: Any) -> LogFit:
    """Fit the spectrally normalised residual to a user's flight logs (``logs`` as described
    in ``raysign.lander.logs``; it is not modified). ``config`` (else the defaults), with any
    ``FlightLogConfig`` field overridden by keyword (``mass=0.8, steps=500``), names the columns
    and sets the nominal model and the network. Every check runs before training. The learned
    curve spans 0 m to the lower of the highest logged height and 2.5 * near_ground_height, in
    1 cm steps; ``true_curve(heights) -> f_a / m`` adds the truth and its RMSE."""
    import torch

    config = dataclasses.replace(config or FlightLogConfig(), **fields)
    data = residual_samples(logs, config, source)
    torch.manual_seed(config.seed)  # the initial weights; the batches use their own generator
    net = ResidualNet(width=config.width, depth=config.depth, gamma=config.gamma,
                      scales=FeatureScales(mass=config.mass))
    features = net.scales.features(data["z"], data["v"], data["thrust"])
    settings = ResidualTraining(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                seed=config.seed)
    start = time.perf_counter()
    losses = train_residual(net, features, data["residual"], settings)
    lipschitz = net.lipschitz_product()
    top = min(float(data["z"].max()), 2.5 * config.near_ground_height)
    heights = np.round(np.arange(0.0, top + 1e-9, 0.01), 6)
    curve = pd.DataFrame({"height": heights, "residual": ground_effect_curve(net, heights)})
    report = {"source": source, "rows": len(logs), "samples": len(data["z"]),
              "near_ground_samples": int(np.sum(data["z"] < config.near_ground_height)),
              "final_loss": losses[-1], "train_seconds": time.perf_counter() - start,
              "gamma": config.gamma, "lipschitz_product": lipschitz,
              # float32 rounding of W / sigma may exceed gamma by ~1e-7 relative.
              "lipschitz_within_gamma": lipschitz <= config.gamma * (1 + 1e-6),
              "thrust_lipschitz_bound": net.thrust_lipschitz_bound(),
              "touchdown_lift_fraction": float(curve["residual"].iloc[0] / config.gravity)}
    if true_curve is not None:
        curve["true"] = np.asarray(true_curve(heights), dtype=np.float64)
        report["curve_rmse"] = float(np.sqrt(np.mean((curve["residual"] - curve["true"])**2)))
    return LogFit(net, report, curve)
