"""Forecasting on a series raysign has never used: the weekly Mauna Loa CO2 record
(1958-2001, 2284 weeks) that ships inside statsmodels (``statsmodels.datasets.co2``), through
the command line and through Python, with DLinear and persistence in the same run.

    pip install statsmodels     # for this measurement only; raysign does not depend on it
    python scripts/bench_forecast_user_data.py --out runs/bench_forecast_user_data

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
