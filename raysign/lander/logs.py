"""A user's own flight logs: the CSV format, its checks, and the residual target the Neural
Lander learns from them (Shi et al., ICRA 2019, sec. III eq. (1) and sec. IV).

A log is a table with one row per sample and four columns (names configurable):

==============  =======  ====================================================================
column          unit     meaning
==============  =======  ====================================================================
``height``      m        height above the ground, ``>= 0``
``velocity``    m/s      vertical velocity, up positive
``thrust``      N        collective thrust acting during the sample (commanded, or measured
                         from the rotor speeds), ``>= 0``
``acceleration`` m/s^2   measured vertical acceleration, up positive, 0 in a steady hover
==============  =======  ====================================================================

The nominal model is the rigid body of eq. (1) without the residual, with mass ``m`` and
gravity ``g`` (defaults: raysign's environment, 1.47 kg and 9.81 m/s^2):

    a_nom = T / m - g,

and the residual target is what it misses, ``a_measured - a_nom = f_a / m`` (m/s^2), paired
with the features ``(z, v, T)``. Rows at or below ``ground_height`` are left out: on the ground
the contact force, not ``f_a``, balances the thrust.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raysign.config import ConfigError, check_range
from raysign.lander.env import GRAVITY, GroundEffectModel

# role -> (config field naming its column, unit, what valid values are)
ROLES = {
    "height": ("height_col", "m", "heights above the ground (m), >= 0"),
    "velocity": ("velocity_col", "m/s", "vertical velocities (m/s, up positive)"),
    "thrust": ("thrust_col", "N", "collective thrusts (N), >= 0"),
    "acceleration": ("accel_col", "m/s^2", "vertical accelerations (m/s^2, up positive)"),
}


@dataclass(frozen=True)
class FlightLogConfig:
    """How ``fit_residual_from_logs`` and ``raysign lander fit`` read a user's flight logs and
    fit the residual: the column names, the nominal model (``mass`` kg, ``gravity`` m/s^2), the
    rows treated as on the ground, how many rows below ``near_ground_height`` (m) a fit needs,
    and the residual network and its training (as in ``LanderConfig``)."""

    height_col: str = "height"
    velocity_col: str = "velocity"
    thrust_col: str = "thrust"
    accel_col: str = "acceleration"
    mass: float = 1.47
    gravity: float = GRAVITY
    ground_height: float = 0.0
    near_ground_height: float = 0.2
    min_near_ground: int = 200
    gamma: float = 4.0
    width: int = 64
    depth: int = 4
    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for role, (field, _, _) in ROLES.items():
            name = getattr(self, field)
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{field}={name!r} must name the {role} column")
        check_range("mass", self.mass, 0.0, None, low_open=True)
        check_range("gravity", self.gravity, 0.0, None, low_open=True)
        check_range("ground_height", self.ground_height, 0.0, self.near_ground_height,
                    high_open=True)
        check_range("near_ground_height", self.near_ground_height, 0.0, None, low_open=True)
        check_range("min_near_ground", self.min_near_ground, 1, None)
        check_range("gamma", self.gamma, 0.0, None, low_open=True)
        check_range("width", self.width, 1, 4096)
        check_range("depth", self.depth, 2, 16)
        check_range("steps", self.steps, 1, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("lr", self.lr, 0.0, 1.0, low_open=True)

    def columns(self) -> dict[str, str]:
        """role -> column name."""
        return {role: getattr(self, field) for role, (field, _, _) in ROLES.items()}

    def nominal_acceleration(self, thrust: np.ndarray) -> np.ndarray:
        """``a_nom = T / m - g`` (m/s^2) of thrusts ``T`` (N)."""
        return np.asarray(thrust) / self.mass - self.gravity


def read_flight_logs(path: str | Path, what: str = "flight logs",
                     expected: str = ", ".join(ROLES)) -> pd.DataFrame:
    """The CSV at ``path`` as a DataFrame; ConfigError (one line) if it cannot be read."""
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{what} {str(path)!r} cannot be read as CSV ({reason}); expected "
                          f"a CSV file with a header row and the columns {expected}") from None


def _column(logs: pd.DataFrame, role: str, config: FlightLogConfig, source: str) -> np.ndarray:
    """The role's column as float64 (a copy), or ConfigError naming the column and the fix."""
    field, unit, valid = ROLES[role]
    name = getattr(config, field)
    if name not in logs.columns:
        present = [str(c) for c in logs.columns]
        close = difflib.get_close_matches(name, present, n=1, cutoff=0.5)
        hint = (f"did you mean {close[0]!r} (--{field.replace('_', '-')} {close[0]})"
                if close else f"name it with --{field.replace('_', '-')}")
        raise ConfigError(f"{source}: no column {name!r} for the {role} ({unit}); {hint}; the "
                          f"columns are {present}")
    column = logs[name]
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    bad = np.isnan(values) & column.notna().to_numpy()
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{source}: column {name!r} holds a non-numeric value "
                          f"{column.iloc[at]!r} at row {logs.index[at]!r}; it must hold {valid}")
    missing = ~np.isfinite(values)
    if missing.any():
        at = int(np.flatnonzero(missing)[0])
        raise ConfigError(f"{source}: column {name!r} has {int(missing.sum())} NaN or infinite "
                          f"values (the first at row {logs.index[at]!r}); drop or fill those "
                          f"rows: it must hold finite {valid}")
    if role in ("height", "thrust") and (values < 0).any():
        negative = values < 0
        at = int(np.flatnonzero(negative)[0])
        raise ConfigError(f"{source}: column {name!r} has {int(negative.sum())} negative values "
                          f"(the first {float(values[at])!r} at row {logs.index[at]!r}); it must "
                          f"hold {valid}")
    return values


def residual_samples(logs: pd.DataFrame, config: FlightLogConfig,
                     source: str = "flight logs") -> dict[str, np.ndarray]:
    """Check ``logs`` and return the airborne samples: ``z``, ``v``, ``thrust`` and the target
    ``residual = a_measured - (T / m - g)`` (``float64 [N]`` each, copies; ``logs`` is left as
    it is). ConfigError (one line naming ``source``, the column and the value) on a missing or
    misspelled column, a non-numeric, NaN or infinite value, a negative height or thrust, or
    fewer than ``min_near_ground`` airborne rows below ``near_ground_height``."""
    columns = {role: _column(logs, role, config, source) for role in ROLES}
    z = columns["height"]
    airborne = z > config.ground_height
    near = int(np.sum(airborne & (z < config.near_ground_height)))
    if near < config.min_near_ground:
        raise ConfigError(
            f"{source}: only {near} of {len(z)} rows are airborne below "
            f"near_ground_height={config.near_ground_height} m (column {config.height_col!r}, "
            f"above ground_height={config.ground_height} m); the ground-effect fit needs at "
            f"least min_near_ground={config.min_near_ground}: log flights closer to the ground "
            f"or lower --min-near-ground")
    thrust = columns["thrust"][airborne]
    return {"z": z[airborne], "v": columns["velocity"][airborne], "thrust": thrust,
            "residual": columns["acceleration"][airborne] - config.nominal_acceleration(thrust)}


def simulator_curve(heights: np.ndarray, mass: float = 1.47) -> np.ndarray:
    """The true residual ``f_a / m`` (m/s^2) of raysign's environment at rest (``v = 0``) and
    the nominal hover thrust ``m g``, at each height (m)."""
    heights = np.asarray(heights, dtype=np.float64)
    return GroundEffectModel(mass)(heights, np.zeros_like(heights), mass * GRAVITY) / mass


def simulated_flight_logs(flights: int = 8, duration: float = 10.0, seed: int = 0,
                          accel_noise_std: float = 0.05) -> pd.DataFrame:
    """raysign's own simulated near-ground flights (``raysign.lander.collect``) as a log in the
    format above: ``height``, ``velocity``, ``thrust`` (the thrust that acted, after the motor
    lag) and ``acceleration`` (the environment's measured ``(v' - v) / dt``)."""
    from raysign.lander.collect import CollectConfig, collect_flights

    data = collect_flights(CollectConfig(flights=flights, duration=duration,
                                         accel_noise_std=accel_noise_std), seed)
    return pd.DataFrame({"height": data["z"], "velocity": data["v"], "thrust": data["thrust"],
                         "acceleration": data["acceleration"]})
