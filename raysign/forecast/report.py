"""Tables and figures of forecasting comparisons: RMSE against horizon (mean and spread over
seeds) and example rollouts, from the summaries that ``train.run_forecast`` returns; a user's
series' test forecasts as a table with their times and as a figure against the truth; and the
trials of a ``raysign sweep forecast`` read back from its Ray Tune folder (ASHA statistics)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _by_model(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[r["model"]].append(r)
    return dict(groups)


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: parameters, seconds per epoch, overall and per-step RMSE mean and
    standard deviation over seeds (``rmse_h{k}_mean`` / ``rmse_h{k}_std`` for k = 1..H)."""
    rows = []
    for model, runs in _by_model(results).items():
        curves = np.array([r["test_rmse_per_horizon"] for r in runs])
        row: dict[str, Any] = {
            "model": model, "seeds": len(runs), "parameters": int(runs[0]["parameters"]),
            "hidden_size": runs[0].get("hidden_size"),
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
            "epochs_run": float(np.mean([r["epochs_run"] for r in runs])),
            "test_rmse_mean": float(np.mean([r["test_rmse"] for r in runs])),
            "test_rmse_std": float(np.std([r["test_rmse"] for r in runs])),
        }
        for k in range(curves.shape[1]):
            row[f"rmse_h{k + 1}_mean"] = float(curves[:, k].mean())
            row[f"rmse_h{k + 1}_std"] = float(curves[:, k].std())
        rows.append(row)
    return rows


def relative_gain(table: list[dict[str, Any]], model: str, baseline: str, step: int) -> float:
    """``1 - RMSE(model) / RMSE(baseline)`` at ``step`` ahead (mean over seeds)."""
    rows = {r["model"]: r for r in table}
    return 1.0 - rows[model][f"rmse_h{step}_mean"] / rows[baseline][f"rmse_h{step}_mean"]


def write_figures(results: list[dict[str, Any]], folder: str | Path, title: str = "") -> None:
    """``rmse_vs_horizon.png`` (mean with a +-1 std band) and ``rollouts.png`` (first seed of
    every model on the first test windows, first channel; left out when no run kept its
    rollout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    groups = _by_model(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, runs in groups.items():
        curves = np.array([r["test_rmse_per_horizon"] for r in runs])
        steps = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(steps, mean, label=f"{model} ({runs[0]['parameters']:,} params)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("test RMSE (normalised)")
    ax.set_title(f"{title}: RMSE vs horizon, mean +- std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "rmse_vs_horizon.png", dpi=120)
    plt.close(fig)

    # Summaries read back from a log (e.g. an interrupted ETTh1 bench) may lack the rollouts.
    groups = {m: [r for r in runs if "rollout" in r] for m, runs in groups.items()}
    groups = {m: runs for m, runs in groups.items() if runs}
    if not groups:
        return
    first = next(iter(groups.values()))[0]["rollout"]
    windows = len(first["truth"])
    fig, axes = plt.subplots(windows, 1, figsize=(8, 2.4 * windows), squeeze=False)
    for w in range(windows):
        ax = axes[w, 0]
        hist = np.array(first["history"][w])
        truth = np.array(first["truth"][w])
        t_hist = np.arange(-len(hist) + 1, 1)
        t_future = np.arange(1, len(truth) + 1)
        ax.plot(t_hist, hist, color="black", lw=1)
        ax.plot(t_future, truth, color="black", lw=1, ls="--", label="truth")
        for model, runs in groups.items():
            seed0 = min(runs, key=lambda r: r["seed"])
            ax.plot(t_future, seed0["rollout"]["forecast"][w], lw=1, label=model)
        if w == 0:
            ax.legend(fontsize=7, ncol=4)
    axes[0, 0].set_title(f"{title}: example rollouts (channel 0)")
    fig.tight_layout()
    fig.savefig(folder / "rollouts.png", dpi=120)
    plt.close(fig)


def write_horizon_figure(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """MSE over steps 1..H against the horizon H, one line per model with +-1 std error bars
    over seeds; ``rows`` hold ``model``, ``horizon``, ``mse_mean`` and ``mse_std`` (the
    ETTh1 rows of ``scripts/bench_forecast.py``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        picked = sorted((r for r in rows if r["model"] == model), key=lambda r: r["horizon"])
        ax.errorbar([r["horizon"] for r in picked], [r["mse_mean"] for r in picked],
                    yerr=[r["mse_std"] for r in picked], marker="o", capsize=3,
                    label=f"{model} ({picked[0]['parameters']:,} params)")
    ax.set_xlabel("horizon H (steps)")
    ax.set_ylabel("test MSE over steps 1..H (normalised)")
    ax.set_title(f"{title}: MSE vs horizon, mean +- std over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_trials(tune_dir: str | Path) -> list[dict[str, Any]]:
    """One row per trial of a Ray Tune experiment folder (``<trial>/result.json``, read
    without Ray, so a sweep stopped midway can be read too), best validation RMSE first.

    ``status`` is ``completed`` when the trial sent its final report (trained until early
    stopping or the last epoch; it carries ``test_rmse``), ``stopped`` when ASHA ended it at
    a rung and ``running`` when the sweep ended first. ``epochs`` counts the epochs trained.
    """
    rows = []
    for result in sorted(Path(tune_dir).glob("*/result.json")):
        records = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not records:
            continue
        final = records[-1]
        completed = "test_rmse" in final
        status = "completed" if completed else "stopped" if final.get("done") else "running"
        rows.append({**final["config"], "trial_id": final["trial_id"], "status": status,
                     "epochs": len(records) - completed,
                     "best_val_rmse": min(r["val_rmse"] for r in records),
                     "test_rmse": final.get("test_rmse"),
                     "test_rmse_last": final.get("test_rmse_last"),
                     "parameters": final.get("parameters"),
                     "seconds": final.get("time_total_s")})
    return sorted(rows, key=lambda r: r["best_val_rmse"])


def asha_statistics(trials: list[dict[str, Any]], max_epochs: int) -> dict[str, Any]:
    """Counts of ``sweep_trials`` rows: trials per status, ASHA stops per epoch reached, and
    the epochs trained against ``max_epochs`` for every trial (the cost without ASHA and
    without early stopping)."""
    return {
        "trials": len(trials),
        "by_status": dict(Counter(t["status"] for t in trials)),
        "stopped_after_epochs": dict(sorted(Counter(
            t["epochs"] for t in trials if t["status"] == "stopped").items())),
        "completed_after_epochs": dict(sorted(Counter(
            t["epochs"] for t in trials if t["status"] == "completed").items())),
        "epochs_trained": sum(t["epochs"] for t in trials),
        "epochs_without_stopping": max_epochs * len(trials),
    }


def forecast_table(data: Any, forecast: np.ndarray) -> Any:
    """Every test forecast of a user's series as a DataFrame with the columns ``time`` (of the
    forecast value), ``horizon`` (steps ahead, 1..H), ``target`` (column name), ``forecast``
    and ``truth`` (both in the series' own units: the training normalisation undone), window
    by window. ``data``: a ``ForecastData`` with ``test_times``; ``forecast`` [N, H, d]
    (normalised, all channels)."""
    import pandas as pd

    windows, horizon, _ = forecast.shape
    truth = data.test.targets.numpy()
    parts = []
    for c in data.target_channels:
        scale, shift = data.std[c], data.mean[c]
        parts.append(pd.DataFrame({
            "time": data.test_times.reshape(-1),
            "horizon": np.tile(np.arange(1, horizon + 1), windows),
            "target": data.columns[c] if data.columns else str(c),
            "forecast": forecast[:, :, c].reshape(-1) * scale + shift,
            "truth": truth[:, :, c].reshape(-1) * scale + shift}))
    return pd.concat(parts, ignore_index=True)


def write_forecast_figure(tables: dict[str, Any], path: str | Path, title: str = "",
                          horizons: Sequence[int] = ()) -> None:
    """``forecast_vs_truth.png``: one panel per (target, steps ahead) - by default 1, H/2 and H
    - with the truth and each model's forecast at that many steps ahead over the test period.
    ``tables``: model -> ``forecast_table`` DataFrame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(tables.values()))
    horizon = int(first["horizon"].max())
    steps = sorted(set(horizons or (1, max(1, horizon // 2), horizon)))
    targets = list(dict.fromkeys(first["target"]))
    fig, axes = plt.subplots(len(targets) * len(steps), 1, squeeze=False,
                             figsize=(8, 2.4 * len(targets) * len(steps)))
    for i, (target, step) in enumerate((t, s) for t in targets for s in steps):
        ax = axes[i, 0]
        rows = first[(first["target"] == target) & (first["horizon"] == step)]
        ax.plot(rows["time"], rows["truth"], color="black", lw=1, label="truth")
        for model, table in tables.items():
            rows = table[(table["target"] == target) & (table["horizon"] == step)]
            ax.plot(rows["time"], rows["forecast"], lw=1, label=model)
        ax.set_ylabel(f"{target}\n{step} step{'s' * (step > 1)} ahead", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7, ncol=4)
    axes[0, 0].set_title(f"{title}: test forecasts against truth")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
