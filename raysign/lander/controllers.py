"""Height tracking controllers for the 1-D lander (Shi et al., ICRA 2019, sec. V, eq. (8)-(10)).

All controllers ask for the total force of a critically damped PD loop on the tracking error
``e = z - z_d``,

    F = m * (g + a_d - k_p e - k_d de/dt),

and then differ in what they subtract for the residual:

- ``baseline``: nothing (``T = F``): the nominal nonlinear tracking controller;
- ``neural``: a learned residual ``f_hat(z, v, T)``. Since ``f_hat`` depends on the control,
  ``T`` solves ``T = F - f_hat(z, v, T)`` by fixed-point iteration (eq. (10)); the iteration is a
  contraction when ``|d f_hat / d T| < 1``, which spectral normalisation certifies
  (``ResidualNet.thrust_lipschitz_bound``); the empirical contraction ratio of each solve is
  reported as well;
- ``oracle``: the environment's true residual, solved the same way (a lower bound on error).

With the residual cancelled exactly, ``e`` obeys ``e'' + k_d e' + k_p e = w`` and converges
exponentially to a ball set by the noise and the residual's approximation error (Theorem 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from raysign.lander.env import GRAVITY

Residual = Callable[[float, float, float], float]


@dataclass
class SolveInfo:
    """One fixed-point solve: iterations used, converged or not, and the largest observed ratio
    ``|T_{k+1} - T_k| / |T_k - T_{k-1}|`` (0 when fewer than two steps were needed)."""

    iterations: int = 0
    converged: bool = True
    contraction: float = 0.0


class TrackingController:
    """PD tracking with optional residual cancellation; ``residual=None`` is the baseline.

    ``__call__(z, v, ref)`` with ``ref = (z_d, v_d, a_d)`` returns the commanded thrust (N) and
    a ``SolveInfo``.
    """

    def __init__(self, residual: Residual | None = None, mass: float = 1.47, kp: float = 4.0,
                 kd: float = 4.0, max_thrust: float = 2.0 * 1.47 * GRAVITY,
                 tol: float = 1e-6, max_iter: int = 50, name: str = "baseline"):
        self.residual, self.mass, self.kp, self.kd = residual, mass, kp, kd
        self.max_thrust, self.tol, self.max_iter, self.name = max_thrust, tol, max_iter, name
        self.last_thrust = mass * GRAVITY

    def reset(self) -> None:
        self.last_thrust = self.mass * GRAVITY

    def nominal_force(self, z: float, v: float, ref: tuple[float, float, float]) -> float:
        z_d, v_d, a_d = ref
        return self.mass * (GRAVITY + a_d - self.kp * (z - z_d) - self.kd * (v - v_d))

    def __call__(self, z: float, v: float,
                 ref: tuple[float, float, float]) -> tuple[float, SolveInfo]:
        force = self.nominal_force(z, v, ref)
        if self.residual is None:
            thrust = float(np.clip(force, 0.0, self.max_thrust))
            self.last_thrust = thrust
            return thrust, SolveInfo()
        thrust, info = solve_fixed_point(lambda t: force - self.residual(z, v, t),
                                         self.last_thrust, 0.0, self.max_thrust, self.tol,
                                         self.max_iter)
        self.last_thrust = thrust
        return thrust, info


def solve_fixed_point(update: Callable[[float], float], start: float, low: float, high: float,
                      tol: float = 1e-6, max_iter: int = 50) -> tuple[float, SolveInfo]:
    """Iterate ``T <- clip(update(T), low, high)`` from ``start`` until ``|dT| < tol``."""
    info = SolveInfo(converged=False)
    thrust, previous_step = start, math.nan
    for k in range(1, max_iter + 1):
        new = min(max(update(thrust), low), high)
        step = abs(new - thrust)
        if previous_step > 0.0:
            info.contraction = max(info.contraction, step / previous_step)
        thrust, previous_step = new, step
        info.iterations = k
        if step < tol:
            info.converged = True
            break
    return thrust, info


def min_jerk(z0: float, z1: float, duration: float) -> Callable[[float], tuple[float, float,
                                                                             float]]:
    """Minimum-jerk reference from ``z0`` to ``z1`` in ``duration`` s, then holding ``z1``:
    ``t -> (z_d, v_d, a_d)``."""

    def reference(t: float) -> tuple[float, float, float]:
        s = min(max(t / duration, 0.0), 1.0)
        dz = z1 - z0
        pos = z0 + dz * (10 * s**3 - 15 * s**4 + 6 * s**5)
        if s >= 1.0:
            return z1, 0.0, 0.0
        vel = dz * (30 * s**2 - 60 * s**3 + 30 * s**4) / duration
        acc = dz * (60 * s - 180 * s**2 + 120 * s**3) / duration**2
        return pos, vel, acc

    return reference


LateralResidual = Callable[[np.ndarray], np.ndarray]


class TrackingController3D:
    """Position tracking for the 3-D point mass (``raysign.lander.env3d``), same PD law per axis:
    ``F = m (g e_z + a_d - k_p e - k_d e')``.

    Ground effect acts on the vertical force only, so the vertical residual is the 1-D one,
    ``f_z(z, v_z, F_z)``, and ``F_z`` solves ``F_z = F_z,d - f_z(z, v_z, F_z)`` by the same
    fixed-point iteration; ``vertical=None`` is the baseline. ``lateral(v_xy)`` (N, shape (2,))
    is subtracted from the horizontal force when given (the oracle knows the lateral drag; the
    learned controllers do not). ``__call__(p, v, ref)`` with ``ref = (p_d, v_d, a_d)`` (arrays
    of shape (3,)) returns the commanded force ``float64 (3,)`` and a ``SolveInfo``.
    """

    def __init__(self, vertical: Residual | None = None, lateral: LateralResidual | None = None,
                 mass: float = 1.47, kp: float = 4.0, kd: float = 4.0,
                 max_lateral: float = 0.5 * 1.47 * GRAVITY,
                 max_thrust: float = 2.0 * 1.47 * GRAVITY, tol: float = 1e-6,
                 max_iter: int = 50, name: str = "baseline"):
        self.vertical, self.lateral, self.mass, self.kp, self.kd = vertical, lateral, mass, kp, kd
        self.max_lateral, self.max_thrust = max_lateral, max_thrust
        self.tol, self.max_iter, self.name = tol, max_iter, name
        self.last_thrust = mass * GRAVITY

    def reset(self) -> None:
        self.last_thrust = self.mass * GRAVITY

    def __call__(self, position: np.ndarray, velocity: np.ndarray,
                 ref: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, SolveInfo]:
        p_d, v_d, a_d = ref
        force = self.mass * (np.array([0.0, 0.0, GRAVITY]) + a_d - self.kp * (position - p_d)
                             - self.kd * (velocity - v_d))
        if self.lateral is not None:
            force[:2] -= self.lateral(velocity[:2])
        force[:2] = np.clip(force[:2], -self.max_lateral, self.max_lateral)
        if self.vertical is None:
            force[2] = min(max(force[2], 0.0), self.max_thrust)
            self.last_thrust = force[2]
            return force, SolveInfo()
        z, v_z, desired = float(position[2]), float(velocity[2]), float(force[2])
        force[2], info = solve_fixed_point(lambda t: desired - self.vertical(z, v_z, t),
                                           self.last_thrust, 0.0, self.max_thrust, self.tol,
                                           self.max_iter)
        self.last_thrust = force[2]
        return force, info
