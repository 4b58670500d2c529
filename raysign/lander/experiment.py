"""The Neural Lander experiment (Shi et al., ICRA 2019, sec. VI): collect, train the residual
with and without spectral normalisation, and compare controllers on landing and hover tasks.

Tasks (1-D environment, 10 s = 1000 steps each):

- ``landing``: from ``z0 ~ U(1, 2)`` m down a minimum-jerk reference to ``z = 0`` in 5 s,
  then holding ``z_d = 0``;
- ``hover_5cm`` / ``hover_10cm`` / ``hover_20cm``: from 0.5 m down a minimum-jerk reference to
  the hover height in 3 s, then hovering;
- ``landing_descend``: the ``landing`` reference, and from 5 s on the reference keeps descending
  below the ground, its speed rising smoothly (minimum-jerk profile, 1 s) to the land speed
  ``LAND_SPEED`` = 0.3 m/s, as an autopilot's land mode descends until it detects ground contact
  (PX4's Land mode: descend at ``MPC_LAND_SPEED`` until the vehicle hits the ground);
  ``landing_descend_<N>cms`` at N cm/s. In ``landing`` a controller that does not cancel the
  ground effect never touches down, so its touchdown speed is undefined; here every controller
  touches down and the touchdown speeds can be compared (``touchdown_comparison``). Its final
  window error is not a target: the reference is below the ground by then.

Metrics per episode: mean and max ``|z - z_d|`` over the final window (the last 2 s),
``touchdown_speed`` and ``time_to_touchdown`` at the first ground contact (NaN if none),
and the fixed-point iterations per control step (mean and max) with the largest observed
contraction ratio. For a controller that never touches down, the descent metrics
(``descent_metrics``) say how it ends its descent: the downward speed when the reference
reaches its final height, the lowest height reached and the time spent airborne.

Controllers: ``baseline`` (no residual), ``neural`` (spectrally normalised residual),
``nosn`` (the same network without normalisation), ``oracle`` (the true residual); the
generalisation pair ``neural_gen`` / ``nosn_gen`` are trained only on data above
``gen_min_height`` so that the lower hover heights lie outside their training range.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from raysign.config import ConfigError, check_range
from raysign.lander import ENV_ID
from raysign.lander.collect import CollectConfig
from raysign.lander.controllers import TrackingController, min_jerk
from raysign.lander.env import GRAVITY
from raysign.lander.residual import NumpyResidual, ResidualNet, TrainSettings, train_residual

TASKS = ("landing", "hover_5cm", "hover_10cm", "hover_20cm", "landing_descend")
DESCEND_TASK = "landing_descend"
LAND_SPEED = 0.3  # m/s, the speed the landing_descend reference keeps below the ground
LAND_SPEED_RAMP_S = 1.0
TOUCHDOWN_MARGIN = 0.10  # non-inferiority margin of touchdown_comparison, x baseline mean
ORACLE_MARGIN = 1e-4  # m, non-inferiority margin of oracle_bound (14% of the PD noise floor)
CONTROLLERS = ("baseline", "neural", "nosn", "oracle", "neural_gen", "nosn_gen")
FINAL_WINDOW_S = 2.0


@dataclass(frozen=True)
class LanderConfig:
    """Data, network and evaluation settings shared by ``raysign land``, the sweep and the
    benchmark."""

    collect_seeds: int = 4
    flights: int = 8
    duration: float = 10.0
    gamma: float = 4.0
    width: int = 64
    depth: int = 4
    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    gen_min_height: float = 0.12
    eval_seeds: int = 10
    first_eval_seed: int = 1000
    kp: float = 4.0
    kd: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("collect_seeds", self.collect_seeds, 1, 1000)
        check_range("flights", self.flights, 1, 10_000)
        check_range("duration", self.duration, 0.1, 1000.0)
        check_range("gamma", self.gamma, 0.0, None, low_open=True)
        check_range("width", self.width, 1, 4096)
        check_range("depth", self.depth, 2, 16)
        check_range("steps", self.steps, 1, None)
        check_range("gen_min_height", self.gen_min_height, 0.0, 1.0)
        check_range("eval_seeds", self.eval_seeds, 1, 1000)
        # Evaluation seeds start past the collection seeds (seed + k, k < collect_seeds).
        check_range("first_eval_seed", self.first_eval_seed, self.collect_seeds, None)
        check_range("kp", self.kp, 0.0, None, low_open=True)
        check_range("kd", self.kd, 0.0, None, low_open=True)

    def collect_config(self) -> CollectConfig:
        return CollectConfig(flights=self.flights, duration=self.duration)

    def train_settings(self) -> TrainSettings:
        return TrainSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                             seed=self.seed)

    def evaluation_seeds(self) -> list[int]:
        """The seeds of the evaluation episodes: ``seed + first_eval_seed + k``."""
        return [self.seed + self.first_eval_seed + k for k in range(self.eval_seeds)]


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
    losses = train_residual(net, features, data["residual"][keep], config.train_settings())
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
    from raysign.lander.env import GroundEffectModel

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
    from raysign.lander.env import GroundEffectModel

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


def make_controllers(residuals: dict[str, NumpyResidual | None],
                     config: LanderConfig) -> dict[str, TrackingController]:
    """One ``TrackingController`` per name; ``oracle`` gets the environment's true residual."""
    from raysign.lander.env import GroundEffectModel

    out = {}
    for name, residual in residuals.items():
        fn = GroundEffectModel() if name == "oracle" else residual
        out[name] = TrackingController(fn, kp=config.kp, kd=config.kd, name=name)
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, controller): means over seeds, max of maxima, touchdown counts."""
    table = []
    keys = sorted({(r["task"], r["controller"]) for r in rows},
                  key=lambda k: (TASKS.index(k[0]) if k[0] in TASKS else 99, k[0],
                                 CONTROLLERS.index(k[1]) if k[1] in CONTROLLERS else 99))
    for task, name in keys:
        sel = [r for r in rows if r["task"] == task and r["controller"] == name]
        speeds = [r["touchdown_speed"] for r in sel if not math.isnan(r["touchdown_speed"])]
        times = [r["time_to_touchdown"] for r in sel if not math.isnan(r["time_to_touchdown"])]
        # A landing_descend reference ends below the ground: its final window is no target.
        blank = is_descend_task(task)
        table.append({
            "task": task, "controller": name, "episodes": len(sel),
            "final_mean_abs_z_error": math.nan if blank
            else float(np.mean([r["final_mean_abs_z_error"] for r in sel])),
            "final_max_abs_z_error": math.nan if blank
            else float(np.max([r["final_max_abs_z_error"] for r in sel])),
            "touchdowns": len(speeds),
            "touchdown_speed_mean": float(np.mean(speeds)) if speeds else math.nan,
            "touchdown_speed_std": float(np.std(speeds, ddof=1)) if len(speeds) > 1
            else math.nan,
            "touchdown_speed_max": float(np.max(speeds)) if speeds else math.nan,
            "time_to_touchdown_mean": float(np.mean(times)) if times else math.nan,
            # Where the reference was at touchdown (below 0: it had to be driven underground).
            "touchdown_reference_mean": _nanmean([r.get("touchdown_reference_height", math.nan)
                                                  for r in sel]),
            "fp_iterations_mean": float(np.mean([r["fp_iterations_mean"] for r in sel])),
            "fp_iterations_max": int(np.max([r["fp_iterations_max"] for r in sel])),
            "fp_max_contraction": float(np.max([r["fp_max_contraction"] for r in sel])),
            "fp_all_converged": all(r["fp_all_converged"] for r in sel),
            **_descent_summary(sel)})
    return table


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanmax(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.max(finite)) if finite else math.nan


def _descent_summary(sel: list[dict[str, Any]]) -> dict[str, float]:
    """Mean, sample std and max of the descent-end speed, lowest height (mean and min) and
    mean time airborne over the episodes ``sel`` (NaN for rows without descent metrics)."""
    if not all("descent_end_speed" in r for r in sel):
        return {}
    speed = np.array([r["descent_end_speed"] for r in sel])
    low = np.array([r["min_height"] for r in sel])
    return {"descent_end_speed_mean": float(np.mean(speed)),
            "descent_end_speed_std": float(np.std(speed, ddof=1)) if len(sel) > 1 else math.nan,
            "descent_end_speed_max": float(np.max(speed)),
            "min_height_mean": float(np.mean(low)), "min_height_min": float(np.min(low)),
            "airborne_s_mean": float(np.mean([r["airborne_s"] for r in sel]))}


def plot_trajectories(episodes: list[dict[str, Any]], path: str, mass: float = 1.47) -> None:
    """Height and thrust of one recorded episode per (task, controller), one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(e["task"] == t for e in episodes)]
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 5.5), squeeze=False)
    for col, task in enumerate(tasks):
        for e in (e for e in episodes if e["task"] == task):
            tr = e["trajectory"]
            axes[0, col].plot(tr["t"], tr["z"], label=e["controller"], lw=1)
            axes[1, col].plot(tr["t"], tr["thrust"] / (mass * GRAVITY), lw=1)
        tr = next(e for e in episodes if e["task"] == task)["trajectory"]
        axes[0, col].plot(tr["t"], tr["z_ref"], "k--", lw=0.8, label="reference")
        axes[0, col].set_title(task)
        axes[0, col].set_ylim(bottom=-0.3 if is_descend_task(task) else -0.02,
                              top=0.5 if task.startswith("hover") else None)
        axes[1, col].set_xlabel("t (s)")
    axes[0, 0].set_ylabel("z (m)")
    axes[1, 0].set_ylabel("T / mg")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_touchdown(episodes: list[dict[str, Any]], path: str) -> None:
    """Touchdown speed of every episode of the landing tasks, one column per task and one
    colour per controller, with the count of episodes that touched down under each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({e["task"] for e in episodes if e["task"].startswith("landing")},
                   key=lambda t: (is_descend_task(t), land_speed(t) if is_descend_task(t)
                                  else 0.0))
    names = [c for c in CONTROLLERS if any(e["controller"] == c for e in episodes)]
    fig, ax = plt.subplots(figsize=(2.2 + 1.8 * len(tasks), 4.2))
    rng = np.random.default_rng(0)  # horizontal jitter only
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        for i, task in enumerate(tasks):
            sel = [e for e in episodes if e["task"] == task and e["controller"] == name]
            speeds = np.array([e["touchdown_speed"] for e in sel], dtype=float)
            down = speeds[~np.isnan(speeds)]
            x = i - 0.4 + width * (j + 0.5)
            ax.scatter(x + rng.uniform(-0.3, 0.3, len(down)) * width, down, s=8, alpha=0.6,
                       color=f"C{j}", label=name if i == 0 else None)
            ax.annotate(f"{len(down)}/{len(sel)}" + ("\n" + name if not len(down) else ""),
                        (x, down.max() if len(down) else 0.0), xytext=(0, 5),
                        textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlim(-0.5, len(tasks) - 0.5)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([t if not is_descend_task(t) else f"descend\n{land_speed(t):.1f} m/s"
                        for t in tasks])
    ax.set_ylabel("touchdown speed (m/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("touchdown speed per episode (n/N: episodes that touched down; landing holds "
                 "z_d = 0, descend keeps going below it)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(controller: TrackingController, task: str, seeds: list[int],
             record_first: bool = True) -> list[dict[str, Any]]:
    """``run_episode`` for each seed; the first keeps its trajectory when ``record_first``."""
    return [run_episode(controller, task, s, record=record_first and k == 0)
            for k, s in enumerate(seeds)]


def paired_difference(first: np.ndarray, second: np.ndarray,
                      level: float = 0.95) -> dict[str, float]:
    """Paired statistics of ``d = second - first`` (float arrays of shape (n,), one entry per
    pair, e.g. per replicate or per seed): mean, sample std, t statistic, two-sided ``level``
    confidence interval of the mean from the t distribution with ``n - 1`` degrees of freedom,
    the paired t test's and the Wilcoxon signed-rank test's two-sided p values, and the number
    of ``d > 0``. NaN where
    ``n < 2`` or every difference is zero."""
    from scipy import stats

    d = np.asarray(second, dtype=float) - np.asarray(first, dtype=float)
    n = len(d)
    out = {"diff_mean": float(d.mean()), "diff_std": math.nan, "diff_t": math.nan,
           "diff_ci_low": math.nan, "diff_ci_high": math.nan, "diff_p_t": math.nan,
           "diff_p_wilcoxon": math.nan, "diff_positive": int(np.sum(d > 0))}
    if n < 2 or not np.any(d != 0):
        return out
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    t = out["diff_mean"] / (std / math.sqrt(n)) if std > 0 else math.copysign(math.inf,
                                                                               out["diff_mean"])
    out.update(diff_std=std, diff_t=t, diff_ci_low=out["diff_mean"] - half,
               diff_ci_high=out["diff_mean"] + half,
               diff_p_t=float(2 * stats.t.sf(abs(t), n - 1)),
               diff_p_wilcoxon=float(stats.wilcoxon(d).pvalue))
    return out


def compare_by_seed(rows: list[dict[str, Any]], first: str, second: str,
                    metric: str = "final_mean_abs_z_error") -> list[dict[str, Any]]:
    """Per task, ``paired_difference`` of ``metric`` between the controllers ``first`` and
    ``second`` over the seeds both ran (the same seed gives both the same start and noise)."""
    out = []
    for task, seeds, a, b in _paired_by_seed(rows, first, second, metric):
        out.append({"task": task, "first": first, "second": second, "metric": metric,
                    "seeds": len(seeds), "first_mean": float(a.mean()),
                    "second_mean": float(b.mean()), **paired_difference(a, b)})
    return out


def _paired_by_seed(rows: list[dict[str, Any]], first: str, second: str, metric: str):
    """Per task (in order of appearance): the seeds both controllers ran and their ``metric``
    values on those seeds, ``(task, seeds, a, b)`` with float arrays ``a``, ``b`` of shape
    (seeds,); tasks without a common seed are left out."""
    for task in dict.fromkeys(r["task"] for r in rows):
        value = {(r["controller"], r["seed"]): r[metric] for r in rows if r["task"] == task}
        seeds = sorted(s for c, s in value if c == first and (second, s) in value)
        if seeds:
            yield (task, seeds, np.array([value[(first, s)] for s in seeds], dtype=float),
                   np.array([value[(second, s)] for s in seeds], dtype=float))


def oracle_bound(rows: list[dict[str, Any]], margin: float = ORACLE_MARGIN,
                 learned: str = "neural") -> list[dict[str, Any]]:
    """Does the oracle bound ``learned`` from below? Per task (``landing_descend`` tasks left
    out: their final window is not a target), ``compare_by_seed`` of the final mean |z error|,
    ``d = oracle - learned``, with the decision fixed before the confirmatory run: the bound
    holds (``oracle <= learned`` up to ``margin``, a non-inferiority test) if the upper end of
    the 95% interval of the mean of ``d`` is at most ``margin`` (m); ``strictly_below`` if it
    is below 0."""
    out = []
    for row in compare_by_seed([r for r in rows if not is_descend_task(r["task"])],
                               learned, "oracle"):
        row.update(margin=margin, bound_holds=_interval_ends_within(row, margin),
                   strictly_below=_interval_ends_within(row, 0.0, strict=True))
        out.append(row)
    return out


def _interval_ends_within(row: dict[str, Any], bound: float, strict: bool = False) -> bool | None:
    """Whether the upper end of a ``paired_difference`` row's 95% interval is ``<= bound``
    (``<`` when ``strict``). Every difference zero (``seeds >= 2``, interval NaN) is the
    interval [0, 0]; fewer than two seeds decide nothing (None)."""
    high = row["diff_ci_high"]
    if math.isnan(high):
        if row["seeds"] < 2:
            return None
        high = row["diff_mean"]
    return bool(high < bound) if strict else bool(high <= bound)


def touchdown_comparison(rows: list[dict[str, Any]], first: str = "baseline",
                         second: str = "neural",
                         margin: float = TOUCHDOWN_MARGIN) -> list[dict[str, Any]]:
    """Touchdown speed of ``second`` against ``first`` per task, paired by seed
    (``paired_difference`` of ``d = v_td(second) - v_td(first)``), with the non-inferiority
    decision fixed before the first ``landing_descend`` run: ``second`` lands no harder than
    ``first`` if every episode of both touched down and the upper end of the 95% interval of
    the mean of ``d`` is at most ``margin`` times ``first``'s mean touchdown speed. Tasks where
    ``first`` never touched down get ``no_worse = None`` (not evaluable); other tasks where
    some episode did not touch down get ``False``; the hover tasks are left out."""
    out = []
    landings = [r for r in rows if r["task"].startswith("landing")]
    for task, seeds, a, b in _paired_by_seed(landings, first, second, "touchdown_speed"):
        row = {"task": task, "first": first, "second": second, "seeds": len(seeds),
               "first_touchdowns": int(np.sum(~np.isnan(a))),
               "second_touchdowns": int(np.sum(~np.isnan(b))),
               "first_mean": _nanmean(list(a)), "second_mean": _nanmean(list(b)),
               "first_max": _nanmax(list(a)), "second_max": _nanmax(list(b)),
               "margin": margin}
        all_down = row["first_touchdowns"] == row["second_touchdowns"] == len(seeds)
        if all_down:
            row.update(paired_difference(a, b))
            row["no_worse"] = _interval_ends_within(row, margin * row["first_mean"])
        else:
            row["no_worse"] = None if row["first_touchdowns"] == 0 else False
        out.append(row)
    return out


def check_claims(table: list[dict[str, Any]],
                 episodes: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The issue's targets per task: Neural Lander's reduction of the baseline's final mean
    |z error| (>= 80%; not a target of ``landing_descend``, whose reference ends below the
    ground), touchdown speed no worse (``touchdown_comparison`` of the ``episodes`` when given,
    else the maxima of the ``table``; None where the baseline never touched down: not
    evaluable), the oracle below it (``oracle_bound`` of the ``episodes`` when given, else
    the means), and SN against no-SN (in and out of the training range); the error targets
    are None for ``landing_descend`` tasks."""
    cell = {(r["task"], r["controller"]): r for r in table}
    touchdown = {r["task"]: r for r in touchdown_comparison(episodes)} if episodes else {}
    bound = {r["task"]: r["bound_holds"] for r in oracle_bound(episodes)} if episodes else {}
    rows = []
    for task in dict.fromkeys(r["task"] for r in table):
        def err(name: str, task: str = task) -> float:
            row = cell.get((task, name))
            return row["final_mean_abs_z_error"] if row else math.nan

        base, neural = err("baseline"), err("neural")
        reduction = 1.0 - neural / base if base > 0 and not is_descend_task(task) else math.nan
        speed_b = cell.get((task, "baseline"), {}).get("touchdown_speed_max", math.nan)
        speed_n = cell.get((task, "neural"), {}).get("touchdown_speed_max", math.nan)
        if task in touchdown:
            speed_ok = touchdown[task]["no_worse"]
        elif math.isnan(speed_b):
            speed_ok = None  # the baseline never touched down: nothing to compare against
        else:
            speed_ok = not math.isnan(speed_n) and speed_n <= speed_b
        rows.append({"task": task, "baseline_error": base, "neural_error": neural,
                     "oracle_error": err("oracle"), "nosn_error": err("nosn"),
                     "neural_gen_error": err("neural_gen"), "nosn_gen_error": err("nosn_gen"),
                     "neural_reduction": reduction,
                     "reduction_ge_80pct": None if math.isnan(reduction) else reduction >= 0.8,
                     "neural_touchdown_speed_max": speed_n,
                     "baseline_touchdown_speed_max": speed_b,
                     "touchdown_speed_no_worse": speed_ok,
                     "oracle_le_neural": None if is_descend_task(task)
                     else bound[task] if task in bound else err("oracle") <= neural,
                     "sn_beats_nosn": None if is_descend_task(task) else neural < err("nosn"),
                     "sn_beats_nosn_outside_range": None if is_descend_task(task)
                     else err("neural_gen") < err("nosn_gen")})
    return rows
