"""Training and evaluation of the forecasters (Yu et al., arXiv:1711.00073, sec. 4).

Every function takes a ``ForecastConfig`` (``raysign.forecast.config``). ``fit`` trains with
Adam, gradient-norm clipping, teacher forcing or scheduled sampling (Bengio et al. 2015; the
teacher probability decays linearly to 0 over the first half of the epochs) and early stopping
on the free-running validation RMSE, restoring the best weights. ``rmse_per_horizon`` is the
error of the free-running forecast at every step ahead.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from raysign.config import to_dict
from raysign.forecast.config import ForecastConfig
from raysign.forecast.datasets import ForecastData, Windows, etth1, read_series_csv, synthetic
from raysign.forecast.models import RECURRENT, build_model, count_parameters, matched_baseline


def load_data(config: ForecastConfig) -> ForecastData:
    """The windows of ``config``'s data set; ValueError (one line) on a bad user series."""
    if config.dataset == "csv":
        return read_series_csv(config.csv, config.target, time_col=config.time_col or None,
                               features=config.features or None, split=config.split,
                               input_len=config.input_len, horizon=config.horizon,
                               stride=config.stride)
    if config.dataset == "etth1":
        return etth1(config.etth1_path(), config.input_len, config.horizon, stride=config.stride)
    return synthetic(config.dataset, config.input_len, config.horizon,
                     num_sequences=config.num_sequences, seed=config.seed)


def make_model(config: ForecastConfig, dim: int) -> nn.Module:
    """The configured forecaster; LSTM / MLSTM get the hidden size whose parameter count is
    closest to the TT-LSTM of this config when ``match_params`` is set."""
    kwargs = dict(hidden_size=config.hidden_size, lags=config.lags, order=config.order,
                  rank=config.rank, input_len=config.input_len, horizon=config.horizon)
    if config.match_params and config.model in ("lstm", "mlstm"):
        target = count_parameters(build_model("ttlstm", dim, **kwargs))
        return matched_baseline(config.model, dim, target, lags=config.lags,
                                instance_norm=config.instance_norm)
    return build_model(config.model, dim, instance_norm=config.instance_norm, **kwargs)


@torch.no_grad()
def predict(model: nn.Module, windows: Windows, horizon: int, batch_size: int = 512,
            device: str = "cpu") -> torch.Tensor:
    """Free-running forecasts [N, horizon, d] (on CPU)."""
    model.eval()
    out = [model(windows.inputs[i:i + batch_size].to(device), horizon).cpu()
           for i in range(0, len(windows), batch_size)]
    return torch.cat(out)


def rmse_per_horizon(model: nn.Module, windows: Windows, horizon: int,
                     device: str = "cpu", channels: Sequence[int] | None = None) -> np.ndarray:
    """RMSE at each step ahead [horizon], over windows and ``channels`` (default: all;
    normalised units)."""
    err = predict(model, windows, horizon, device=device) - windows.targets[:, :horizon]
    if channels is not None:
        err = err[:, :, list(channels)]
    return err.pow(2).mean(dim=(0, 2)).sqrt().numpy()


def forecast_errors(forecast: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """MSE and MAE of ``forecast`` against ``targets`` (both [N, horizon, d]) over every window,
    step and channel: the metrics of the Informer / DLinear ETTh1 tables."""
    err = forecast - targets
    return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean())}


def errors_up_to(model: nn.Module, windows: Windows, horizon: int,
                 device: str = "cpu", channels: Sequence[int] | None = None) -> dict[str, float]:
    """MSE and MAE over steps 1..``horizon``, windows and ``channels`` (default: all;
    normalised units)."""
    forecast = predict(model, windows, horizon, device=device)
    targets = windows.targets[:, :horizon]
    if channels is not None:
        forecast, targets = forecast[:, :, list(channels)], targets[:, :, list(channels)]
    return forecast_errors(forecast, targets)


def horizon_metrics(model: nn.Module, config: ForecastConfig, horizons: Sequence[int],
                    device: str = "cpu") -> dict[int, dict[str, float]]:
    """MSE / MAE of ``model`` (trained for ``config.horizon``) at each shorter horizon ``h``, on
    the test windows of a horizon-``h`` task: for ETTh1 these are the standard (more numerous)
    windows of that horizon, not prefixes of the longer windows."""
    out = {}
    for h in horizons:
        if not 1 <= h <= config.horizon:
            raise ValueError(f"eval horizon {h} must lie in [1, {config.horizon}]")
        data = load_data(dataclasses.replace(config, horizon=h))
        out[h] = errors_up_to(model, data.test, h, device, data.target_channels)
    return out


def overall_rmse(per_horizon: np.ndarray) -> float:
    return float(np.sqrt(np.mean(per_horizon ** 2)))


def teacher_probability(config: ForecastConfig, epoch: int) -> float:
    if config.teacher == "forcing":
        return 1.0
    if config.teacher == "free":
        return 0.0
    return max(0.0, 1.0 - 2.0 * epoch / max(1, config.epochs))


@dataclass
class FitResult:
    best_val_rmse: float
    epochs_run: int
    seconds_per_epoch: float
    history: list[dict[str, float]]


def fit(model: nn.Module, data: ForecastData, config: ForecastConfig, *,
        device: str = "cpu", on_epoch: Callable[[dict[str, float]], None] | None = None,
        progress: bool = False) -> FitResult:
    """Train ``model`` in place; returns the history and keeps the best validation weights."""
    horizon, channels = config.horizon, data.target_channels
    if count_parameters(model) == 0 or config.epochs == 0:
        val = overall_rmse(rmse_per_horizon(model, data.val, horizon, device, channels))
        return FitResult(val, 0, 0.0, [])
    generator = torch.Generator().manual_seed(config.seed)
    inputs, targets = data.train.inputs, data.train.targets
    if config.max_train_windows and len(inputs) > config.max_train_windows:
        keep = torch.randperm(len(inputs), generator=generator)[:config.max_train_windows]
        inputs, targets = inputs[keep], targets[keep]
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_state, stale, history, seconds = float("inf"), None, 0, [], []
    epochs = range(config.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"{config.model} {config.dataset}", leave=False)
    for epoch in epochs:
        model.train()
        start = time.perf_counter()
        teacher = teacher_probability(config, epoch)
        order = torch.randperm(len(inputs), generator=generator)
        total, count = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            x, y = inputs[idx].to(device), targets[idx].to(device)
            pred = model(x, horizon, target=y, teacher_prob=teacher)
            loss = nn.functional.mse_loss(pred, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimiser.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        seconds.append(time.perf_counter() - start)
        val = overall_rmse(rmse_per_horizon(model, data.val, horizon, device, channels))
        record = {"epoch": epoch + 1, "train_mse": total / count, "val_rmse": val,
                  "teacher_prob": teacher, "epoch_seconds": seconds[-1]}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        # Validation is always free-running; patience only counts once training is too
        # (teacher probability 0), so scheduled sampling is not cut short.
        if val < best:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
        elif teacher == 0.0:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best, len(history), float(np.mean(seconds)), history)


def run_forecast(config: ForecastConfig, *, progress: bool = False,
                 on_epoch: Callable[[dict[str, float]], None] | None = None,
                 write: bool = True, threads: int | None = None,
                 eval_horizons: Sequence[int] = (),
                 data: ForecastData | None = None) -> dict[str, Any]:
    """Train and test one model (``threads``: torch threads, e.g. 1 on a shared machine) on
    ``data`` (default: ``load_data(config)``); writes ``runs/<name>/<timestamp>/``
    (config.json, metrics.jsonl, rmse_per_horizon.csv, and forecasts.csv for a series with
    times) when ``write``. Returns the summary, with MSE / MAE over steps 1..h for ``h`` in
    ``eval_horizons`` (default: the trained horizon) under ``test_by_horizon``; errors are
    over the target channels in normalised units. For a user's series (``data.test_times``)
    ``summary["forecasts"]`` is the table of ``report.forecast_table``: every test forecast
    of every target in the series' own units."""
    from raysign.results import RunDir

    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_data(config) if data is None else data
    if data.train.inputs.shape[1] != config.input_len or data.test.targets.shape[1] != \
            config.horizon:
        raise ValueError(f"data has windows of input_len={data.train.inputs.shape[1]}, horizon="
                         f"{data.test.targets.shape[1]}; the config says input_len="
                         f"{config.input_len}, horizon={config.horizon}: build both alike")
    channels = data.target_channels
    model = make_model(config, data.dim).to(device)
    run_dir = RunDir.create(config.results_dir, config.name) if write else None
    if run_dir is not None:
        run_dir.write_json("config.json", to_dict(config))

    def log(record: dict[str, float]) -> None:
        if run_dir is not None:
            run_dir.log(record)
        if on_epoch is not None:
            on_epoch(record)

    result = fit(model, data, config, device=device, on_epoch=log, progress=progress)
    # The test forecast of the trained horizon is computed once and scored both ways; shorter
    # evaluation horizons get their own test windows (``horizon_metrics``).
    test_forecast = predict(model, data.test, config.horizon, device=device)
    per_h = ((test_forecast - data.test.targets)[:, :, channels].pow(2).mean(dim=(0, 2))
             .sqrt().numpy())
    eval_horizons = list(eval_horizons or [config.horizon])
    by_horizon = horizon_metrics(model, config, [h for h in eval_horizons
                                                 if h != config.horizon], device)
    if config.horizon in eval_horizons:
        by_horizon[config.horizon] = forecast_errors(test_forecast[:, :, channels],
                                                     data.test.targets[:, :, channels])
    examples = Windows(data.test.inputs[:3], data.test.targets[:3])
    forecast = predict(model, examples, config.horizon, device=device)
    summary: dict[str, Any] = {
        "dataset": config.dataset, "model": config.model, "seed": config.seed,
        "parameters": count_parameters(model),
        "hidden_size": getattr(getattr(getattr(model, "model", model), "cell", None),
                               "hidden_size", None),
        "test_rmse": overall_rmse(per_h), "test_rmse_last": float(per_h[-1]),
        "test_rmse_per_horizon": per_h.tolist(), "best_val_rmse": result.best_val_rmse,
        "epochs_run": result.epochs_run, "seconds_per_epoch": result.seconds_per_epoch,
        "test_by_horizon": {str(h): by_horizon[h] for h in sorted(by_horizon)},
        "recurrent": config.model in RECURRENT,
        # First channel of three test windows, for figures of example rollouts.
        "rollout": {"history": examples.inputs[:, :, 0].tolist(),
                    "truth": examples.targets[:, :, 0].tolist(),
                    "forecast": forecast[:, :, 0].tolist()},
    }
    if data.test_times is not None:
        from raysign.forecast.report import forecast_table

        summary["forecasts"] = forecast_table(data, test_forecast.numpy())
    if run_dir is not None:
        run_dir.write_csv("rmse_per_horizon.csv", (
            {"step": k + 1, "rmse": float(v)} for k, v in enumerate(per_h)))
        run_dir.write_json("summary.json", {k: v for k, v in summary.items()
                                            if k != "forecasts"})
        if "forecasts" in summary:
            summary["forecasts"].to_csv(run_dir.file("forecasts.csv"), index=False)
        summary["run_dir"] = str(run_dir.path)
    return summary
