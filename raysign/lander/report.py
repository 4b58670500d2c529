"""Tables and figures of the Neural Lander experiments (Shi et al., ICRA 2019, sec. VI).

Summary tables per (task, controller) of the 1-D and 3-D episodes (``summarise``,
``summarise_3d``); figures of the trajectories, the touchdown speeds, the extrapolation suite
and the ground-effect curve learned from flight logs; and the environments' ``rgb_array``
frames (``plot_history``). Figures use matplotlib's Agg backend, imported when a figure is
drawn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raysign.lander.config import CONTROLLERS
from raysign.lander.env import GRAVITY, GroundEffectModel
from raysign.lander.extrapolation import CURVE_HEIGHTS, MASS
from raysign.lander.stats import finite_mean
from raysign.lander.tasks import TASKS, is_descend_task, land_speed


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
            "touchdown_reference_mean": finite_mean([r.get("touchdown_reference_height",
                                                           math.nan) for r in sel]),
            "fp_iterations_mean": float(np.mean([r["fp_iterations_mean"] for r in sel])),
            "fp_iterations_max": int(np.max([r["fp_iterations_max"] for r in sel])),
            "fp_max_contraction": float(np.max([r["fp_max_contraction"] for r in sel])),
            "fp_all_converged": all(r["fp_all_converged"] for r in sel),
            **_descent_summary(sel)})
    return table


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


def summarise_3d(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summarise`` of 3-D episodes plus the mean and max final lateral error."""
    table = summarise(rows)
    for row in table:
        sel = [r for r in rows if r["task"] == row["task"]
               and r["controller"] == row["controller"]]
        row["final_mean_lateral_error"] = float(np.mean([r["final_mean_lateral_error"]
                                                         for r in sel]))
        row["final_max_lateral_error"] = float(np.max([r["final_max_lateral_error"]
                                                       for r in sel]))
    return table


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


def plot_extrapolation(rows: list[dict[str, Any]], min_height: float, path: str,
                       mass: float = MASS) -> None:
    """Left: every replicate's learned residual ``f_hat / m`` against height (hover thrust,
    rest; the rows' ``curve``), SN and no SN, with the true ground effect and the training
    range shaded. Right: the hover error of the two networks of each replicate at 5 and 10 cm
    (paired; below the diagonal SN is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = np.asarray(CURVE_HEIGHTS)
    truth = GroundEffectModel(mass)
    hover = mass * GRAVITY
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = {"sn": "tab:blue", "nosn": "tab:red"}
    labels = {"sn": "SN (gamma 4)", "nosn": "no normalisation"}
    for network in ("nosn", "sn"):
        curves = [r["curve"] for r in rows if r["network"] == network and "curve" in r]
        for k, curve in enumerate(curves):
            left.plot(heights * 100, curve, color=colours[network], lw=0.7, alpha=0.45,
                      label=f"{labels[network]} ({len(curves)} replicates)" if k == 0 else None)
    left.plot(heights * 100, [truth(h, 0.0, hover) / mass for h in heights], "k", lw=2,
              label="true ground effect")
    left.axvspan(min_height * 100, heights[-1] * 100, color="0.9", zorder=0,
                 label="training range")
    for h in (5, 10, 20):
        left.axvline(h, color="0.5", ls=":", lw=0.8)
    left.set_xlabel("height z (cm)")
    left.set_ylabel("residual f_a / m at hover thrust, v = 0 (m/s^2)")
    every = np.array([r["curve"] for r in rows if "curve" in r] or [[0.0]])
    left.set_ylim(min(-0.5, every.min() - 0.2), max(2.0, every.max() + 0.2))
    left.legend(fontsize=7, loc="upper right")
    by = {(r["network"], r["replicate"]): r for r in rows}
    replicates = sorted(k for k in {r["replicate"] for r in rows}
                        if ("sn", k) in by and ("nosn", k) in by)
    top = 0.0
    for task, marker in (("hover_5cm", "o"), ("hover_10cm", "s")):
        sn = np.array([by[("sn", k)][f"{task}_error"] for k in replicates]) * 100
        free = np.array([by[("nosn", k)][f"{task}_error"] for k in replicates]) * 100
        right.scatter(free, sn, marker=marker, s=22, label=task.replace("_", " "))
        top = max(top, sn.max(), free.max())
    right.plot([0, top * 1.05], [0, top * 1.05], "k--", lw=0.8)
    right.set_xlabel("no normalisation: final mean |z error| (cm)")
    right.set_ylabel("SN: final mean |z error| (cm)")
    right.set_title("paired by replicate (below the line: SN better)", fontsize=9)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ground_effect_curve(curve: Any, path: str, near_ground_height: float) -> None:
    """The learned residual ``f_hat / m`` against height (``curve``: a DataFrame with columns
    ``height`` m and ``residual`` m/s^2, and ``true`` when known), at rest and hover thrust, with
    the near-ground band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    heights = np.asarray(curve["height"]) * 100
    ax.plot(heights, curve["residual"], color="tab:blue", lw=2, label="learned (SN residual)")
    if "true" in curve:
        ax.plot(heights, curve["true"], "k--", lw=1.5, label="true")
    ax.axvspan(0, near_ground_height * 100, color="0.92", zorder=0, label="near the ground")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("height z (cm)")
    ax.set_ylabel("residual f_a / m at hover thrust, v = 0 (m/s^2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: np.ndarray, hover_thrust: float, target_height: float,
                 size: tuple[float, float] = (4.0, 3.0), dpi: int = 80) -> np.ndarray:
    """An RGB image ``uint8 [H, W, 3]`` of ``history`` (``[N, 3]``: time, height, thrust)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(history[:, 0], history[:, 1], color="tab:blue")
    top.axhline(target_height, color="gray", lw=0.8, ls="--")
    top.set_ylabel("z (m)")
    bottom.plot(history[:, 0], history[:, 2] / hover_thrust, color="tab:red")
    bottom.axhline(1.0, color="gray", lw=0.8, ls="--")
    bottom.set_ylabel("T / mg")
    bottom.set_xlabel("t (s)")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
