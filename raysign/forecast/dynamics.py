"""Synthetic dynamics for long-term forecasting (Yu et al., arXiv:1711.00073, sec. 4.1).

- Genz dynamics: the iterated map ``x_{t+1} = g(x_t)`` of a Genz test function (Genz 1984,
  "Testing multidimensional integration routines"), from random initial points in
  ``[-0.1, 0.1]``. The paper gives the family but not parameters we could check. With
  ``c = 2, w = 0.5`` (measured with ``lyapunov_exponent``) the product-peak and corner-peak
  maps converge to a fixed point and the Gaussian map to a stable cycle (negative exponents),
  while the oscillatory and continuous maps are chaotic. The default is the oscillatory map
  ``cos(2 pi w + c x)`` with ``w = 0.5, c = 2``: a bounded orbit that alternates in sign and is
  weakly chaotic (exponent about 0.16 per step: 1e-8 grows to ~1e-5 in 50 steps).
- Lorenz: the Lorenz-63 system (sigma 10, rho 28, beta 8/3), 4th-order Runge-Kutta with step
  ``dt``, sampled every ``every`` steps, started on the attractor after a transient.

Both return float32 arrays [num_sequences, length, dim]. ``lyapunov_exponent`` measures how fast
a one-dimensional map (a Genz map) separates nearby orbits, i.e. how hard it is to forecast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

GENZ: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "oscillatory": lambda x, c, w: np.cos(2 * np.pi * w + c * x),
    "product_peak": lambda x, c, w: 1.0 / (c ** -2 + (x + w) ** 2),
    "corner_peak": lambda x, c, w: (1.0 + c * x) ** -2.0,
    "gaussian": lambda x, c, w: np.exp(-(c ** 2) * (x - w) ** 2),
    "continuous": lambda x, c, w: np.exp(-c * np.abs(x - w)),
}


def genz_dynamics(num_sequences: int, length: int, *, kind: str = "oscillatory",
                  c: float = 2.0, w: float = 0.5, seed: int = 0) -> np.ndarray:
    """Iterates of a Genz map from initial points uniform in [-0.1, 0.1]:
    float32 [num_sequences, length, 1]."""
    if kind not in GENZ:
        raise ValueError(f"kind={kind!r} is not one of {sorted(GENZ)}")
    if num_sequences < 1 or length < 1:
        raise ValueError(f"num_sequences={num_sequences} and length={length} must be >= 1")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.1, 0.1, size=num_sequences)
    out = np.empty((num_sequences, length), dtype=np.float64)
    for t in range(length):
        out[:, t] = x
        x = GENZ[kind](x, c, w)
    return out[:, :, None].astype(np.float32)


def lorenz_rhs(state: np.ndarray, sigma: float = 10.0, rho: float = 28.0,
               beta: float = 8.0 / 3.0) -> np.ndarray:
    """Time derivative of Lorenz-63 for states [..., 3]."""
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def lorenz_dynamics(num_sequences: int, length: int, *, dt: float = 0.01, every: int = 5,
                    transient: int = 1000, seed: int = 0) -> np.ndarray:
    """Lorenz-63 trajectories sampled every ``every * dt`` time units: float32
    [num_sequences, length, 3], each from a random start run ``transient`` steps first."""
    if num_sequences < 1 or length < 1 or every < 1:
        raise ValueError(f"num_sequences={num_sequences}, length={length} and every={every} "
                         "must be >= 1")
    rng = np.random.default_rng(seed)
    state = rng.normal(0.0, 1.0, size=(num_sequences, 3)) + np.array([0.0, 0.0, 25.0])

    def step(s: np.ndarray) -> np.ndarray:
        k1 = lorenz_rhs(s)
        k2 = lorenz_rhs(s + 0.5 * dt * k1)
        k3 = lorenz_rhs(s + 0.5 * dt * k2)
        k4 = lorenz_rhs(s + dt * k3)
        return s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    for _ in range(transient):
        state = step(state)
    out = np.empty((num_sequences, length, 3), dtype=np.float64)
    for t in range(length):
        out[:, t] = state
        for _ in range(every):
            state = step(state)
    return out.astype(np.float32)


def lyapunov_exponent(step: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, *,
                      steps: int = 2000, burn_in: int = 200, delta: float = 1e-7) -> np.ndarray:
    """Largest Lyapunov exponent per step of the 1-D map ``x -> step(x)``, one per start
    [n]: the orbit mean of ``log |step'(x_t)|`` over ``steps`` iterates after ``burn_in``
    (derivative by central differences of width ``delta``). Positive: nearby orbits separate
    by a factor ``exp(exponent)`` per step (chaos); negative: the orbit settles on a stable
    fixed point or cycle."""
    if steps < 1 or burn_in < 0:
        raise ValueError(f"steps={steps} must be >= 1 and burn_in={burn_in} >= 0")
    x = np.asarray(starts, dtype=np.float64).copy()
    for _ in range(burn_in):
        x = step(x)
    total = np.zeros_like(x)
    for _ in range(steps):
        slope = (step(x + delta) - step(x - delta)) / (2 * delta)
        total += np.log(np.maximum(np.abs(slope), 1e-300))
        x = step(x)
    return total / steps
