"""Forecasting on series raysign has never used, shipped inside statsmodels: the weekly Mauna
Loa CO2 record (``co2``, 1958-2001, 2284 weeks, univariate) and the US quarterly macro data
(``macrodata``, 1959-2009, 203 quarters, 12 variables), through the command line and through
Python, with DLinear and persistence in the same run.

    pip install statsmodels     # for this measurement only; raysign does not depend on it
    python scripts/bench_forecast_user_data.py --out runs/bench_forecast_user_data
    python scripts/bench_forecast_user_data.py --series macrodata --out runs/bench_macro

``--series macrodata`` forecasts unemployment and inflation (two targets) from them and three
more variables (``--features``), input 8 quarters, horizon 4, split by dates (validation from
1995, test from 2002), and writes the time column itself from year and quarter.

1. The raw table (59 missing weeks) is written to ``co2_raw.csv``; reading it stops with the
   NaN message. The gaps are filled by linear interpolation into ``co2.csv``.
2. ``raysign forecast --csv co2.csv --target co2 --time-col date ...`` (a subprocess, so the
   command line is exercised as a user runs it) with ``--models``.
3. The same series from Python: the DataFrame with its DatetimeIndex (no time column) through
   ``series_from_frame`` and ``run_forecast`` for DLinear and persistence, printing the RMSE per
   step ahead (normalised units) and the MAE per step ahead in ppm from the forecast table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def load_co2():
    try:
        from statsmodels.datasets import co2
    except ImportError:
        raise SystemExit("this measurement reads statsmodels.datasets.co2: pip install "
                         "statsmodels") from None
    return co2.load_pandas().data


def load_macrodata():
    import pandas as pd

    try:
        from statsmodels.datasets import macrodata
    except ImportError:
        raise SystemExit("this measurement reads statsmodels.datasets.macrodata: pip install "
                         "statsmodels") from None
    frame = macrodata.load_pandas().data
    start = pd.PeriodIndex.from_fields(year=frame["year"].astype(int),
                                       quarter=frame["quarter"].astype(int), freq="Q")
    return frame.assign(date=start.to_timestamp().strftime("%Y-%m-%d"))


def macro(args: argparse.Namespace, out: Path) -> int:
    """The macro data through the command line and Python: two targets, five inputs."""
    import torch

    from raysign.forecast.config import ForecastConfig
    from raysign.forecast.datasets import series_from_frame
    from raysign.forecast.train import run_forecast

    frame = load_macrodata()
    frame.to_csv(out / "macro.csv", index=False)
    target, features, split = "unemp,infl", "realgdp,cpi,tbilrate", "1995-01-01,2002-01-01"
    command = ["raysign", "forecast", "--csv", str(out / "macro.csv"), "--target", target,
               "--features", features, "--time-col", "date", "--split", split,
               "--input-len", "8", "--horizon", "4", "--models", args.models, "--seeds", "3",
               "--epochs", str(args.epochs), "--results-dir", str(out),
               "--num-cpus", str(args.num_cpus)]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    torch.set_num_threads(1)
    data = series_from_frame(frame, target=target, features=features, time_col="date",
                             split=split, input_len=8, horizon=4)
    print(f"python: columns {data.columns}, targets {[data.columns[c] for c in data.targets]}; "
          f"{len(data.train)} / {len(data.val)} / {len(data.test)} windows")
    for model in ("dlinear", "persistence"):
        summary = run_forecast(ForecastConfig(model=model, input_len=8, horizon=4,
                                              epochs=args.epochs), data=data, write=False)
        table = summary["forecasts"]
        mae = (table["forecast"] - table["truth"]).abs().groupby(
            [table["target"], table["horizon"]]).mean()
        print(f"{model:12s} RMSE (normalised) per step: "
              + " ".join(f"{v:.4f}" for v in summary["test_rmse_per_horizon"]))
        for name in target.split(","):
            print(f"{model:12s} MAE {name} (points) per step: "
                  + " ".join(f"{mae[name][h]:.3f}" for h in range(1, 5)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", choices=("co2", "macrodata"), default="co2")
    parser.add_argument("--out", default="runs/bench_forecast_user_data")
    parser.add_argument("--input-len", type=int, default=52)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--models", default="ttlstm,lstm,dlinear,persistence")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    import torch

    from raysign.forecast.config import ForecastConfig
    from raysign.forecast.datasets import read_series_csv, series_from_frame
    from raysign.forecast.train import run_forecast

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.series == "macrodata":
        return macro(args, out)
    frame = load_co2()  # DatetimeIndex (weekly, Saturdays), one column "co2" in ppm
    raw = frame.rename_axis("date").reset_index()
    raw.to_csv(out / "co2_raw.csv", index=False)
    print(f"co2: {len(frame)} weeks {frame.index[0].date()} .. {frame.index[-1].date()}, "
          f"{int(frame['co2'].isna().sum())} missing")
    try:
        read_series_csv(out / "co2_raw.csv", "co2", time_col="date")
    except ValueError as err:
        print(f"raw file refused: {err}")
    filled = frame.interpolate()
    filled.rename_axis("date").reset_index().to_csv(out / "co2.csv", index=False)

    shape = ["--input-len", str(args.input_len), "--horizon", str(args.horizon)]
    command = ["raysign", "forecast", "--csv", str(out / "co2.csv"), "--target", "co2",
               "--time-col", "date", "--split", "0.7,0.1,0.2", *shape,
               "--models", args.models, "--seeds", "1", "--epochs", str(args.epochs),
               "--results-dir", str(out), "--num-cpus", str(args.num_cpus)]
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"command line: {time.perf_counter() - start:.0f} s", flush=True)

    torch.set_num_threads(1)
    data = series_from_frame(filled, target="co2", split=(0.7, 0.1, 0.2),
                             input_len=args.input_len, horizon=args.horizon)
    print(f"python: {len(data.train)} train / {len(data.val)} validation / {len(data.test)} "
          f"test windows; train mean {data.mean[0]:.2f} ppm, std {data.std[0]:.2f} ppm")
    steps = list(range(1, args.horizon + 1))
    print(f"{'model':12s} {'metric':16s} " + " ".join(f"{'h=' + str(s):>7s}" for s in steps))
    for model in ("dlinear", "persistence"):
        config = ForecastConfig(model=model, input_len=args.input_len, horizon=args.horizon,
                                epochs=args.epochs)
        summary = run_forecast(config, data=data, write=False)
        table = summary["forecasts"]
        mae = (table["forecast"] - table["truth"]).abs().groupby(table["horizon"]).mean()
        print(f"{model:12s} {'RMSE (normalised)':16s} "
              + " ".join(f"{v:7.4f}" for v in summary["test_rmse_per_horizon"]))
        print(f"{model:12s} {'MAE (ppm)':16s} " + " ".join(f"{mae[s]:7.3f}" for s in steps))
        table.to_csv(out / f"python_forecasts_{model}.csv", index=False)
    print(f"persistence MAE over all steps (ppm): "
          f"{float(np.mean(np.abs(table['forecast'] - table['truth']))):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
