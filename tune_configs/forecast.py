"""Sweep of the TT-LSTM forecaster (Yu et al., arXiv:1711.00073, sec. 4.3): tensor-train rank,
lags, polynomial order, hidden size and learning rate, with ASHA early stopping.

Each trial trains one TT-LSTM with one CPU (one GPU when the cluster has as many GPUs as
concurrent trials) and reports the free-running validation RMSE after every epoch; ASHA stops
trials whose validation error lags behind at its rungs. As many trials run at once as CPUs.

    raysign sweep forecast            # Lorenz, 27 grid points x 2 samples, up to 30 epochs each
    raysign sweep forecast --quick    # Genz, 2 tiny trials (tests, laptops)
    raysign sweep forecast --set csv=my_series.csv --set target=OT --set time_col=date \
        --set horizon=24                # the user's series (the fields of raysign forecast)
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raysign.config import config_from_mapping
from raysign.tune_configs import one_device_per_trial as trial_resources  # noqa: F401

DESCRIPTION = "TT-LSTM forecaster: rank x lags x order x hidden size x learning rate (ASHA)"
METRIC = "val_rmse"
MODE = "min"
NUM_SAMPLES = 2
MAX_EPOCHS = 30

# The Lorenz task of scripts/bench_forecast.py (burn-in 24, horizon 40, 600 sequences), so the
# best configuration can be compared with the bench's TT-LSTM.
_BASE: dict[str, Any] = dict(dataset="lorenz", model="ttlstm", input_len=24, horizon=40,
                             num_sequences=600, epochs=MAX_EPOCHS)
_QUICK: dict[str, Any] = dict(dataset="genz", model="ttlstm", input_len=8, horizon=8,
                              num_sequences=120, epochs=2, batch_size=32)


def param_space(quick: bool) -> dict[str, Any]:
    """A grid over rank x order x lags (27 points); hidden size and learning rate are drawn
    once per grid point and sample (``NUM_SAMPLES`` trials per point)."""
    if quick:
        return {**_QUICK, "rank": tune.grid_search([2, 4]), "lags": 2, "order": 2,
                "hidden_size": 8, "lr": 3e-3}
    return {
        **_BASE,
        "rank": tune.grid_search([2, 4, 8]),
        "order": tune.grid_search([1, 2, 3]),
        "lags": tune.grid_search([2, 3, 4]),
        "hidden_size": tune.choice([8, 16, 32]),
        "lr": tune.loguniform(1e-3, 2e-2),
    }


def scheduler():
    from ray.tune.schedulers import ASHAScheduler

    # Rungs at 3, 9 and 27 epochs. max_t is one more than the epochs so that a trial which
    # trains all of them still delivers its final report (the test RMSE) before ASHA ends it.
    return ASHAScheduler(time_attr="training_iteration", max_t=MAX_EPOCHS + 1, grace_period=3,
                         reduction_factor=3)


USER_FIELDS = ("csv", "target", "time_col", "features", "split")
PATH_FIELDS = ("csv", "data_dir")


def check_fixed(fixed: dict[str, Any]) -> None:
    """``raysign sweep forecast --set csv=...``: the user's series is read and checked once on
    the driver (missing file or column, NaNs, too short), before any trial starts."""
    if fixed.get("csv"):
        from raysign.forecast.config import ForecastConfig
        from raysign.forecast.train import load_data

        load_data(config_from_mapping(ForecastConfig, user_series(fixed), name="sweep-forecast"))


def user_series(config: dict[str, Any]) -> dict[str, Any]:
    """A trial config given ``--set csv=...``: the user's series replaces the search space's
    data set, and its fields are strings as on the command line (``--set target=0`` arrives
    from ``raysign sweep`` as the number 0)."""
    if not config.get("csv"):
        return config
    return {**config, "dataset": "csv",
            **{k: str(config[k]) for k in USER_FIELDS if k in config}}


def trainable(config: dict[str, Any]) -> None:
    import torch

    from raysign.forecast.config import ForecastConfig
    from raysign.forecast.train import run_forecast

    torch.set_num_threads(1)
    config = user_series(config)
    forecast_config = config_from_mapping(ForecastConfig, config, name="sweep-forecast")

    def report(record: dict[str, float]) -> None:
        tune.report({"val_rmse": record["val_rmse"], "train_mse": record["train_mse"],
                     "epoch": record["epoch"]})

    summary = run_forecast(forecast_config, on_epoch=report, write=False)
    tune.report({"val_rmse": summary["best_val_rmse"], "test_rmse": summary["test_rmse"],
                 "test_rmse_last": summary["test_rmse_last"],
                 "parameters": summary["parameters"], "epoch": summary["epochs_run"]})
