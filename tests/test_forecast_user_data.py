"""Forecasting on a user's own series (issue 19, item 3): a CSV file or a DataFrame / array
read by ``raysign.forecast.datasets``, the same training and evaluation code as the built-in
data sets, forecasts written with their times, and one-line refusals of bad input.

References are plain numpy / Python over the raw table: the training rows' mean and
(population) standard deviation, the rows at given times, and the persistence forecast
(the last observed value) read off the table by position.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysign.config import ConfigError
from raysign.forecast.config import ForecastConfig
from raysign.forecast.datasets import read_series_csv, series_from_frame
from raysign.forecast.train import load_data, run_forecast

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "forecast.md"
ROWS = 120


def user_frame(rows: int = ROWS) -> pd.DataFrame:
    """Daily dates as text, two numeric columns on different scales, one text column."""
    rng = np.random.default_rng(3)
    t = np.arange(rows)
    return pd.DataFrame({
        "date": pd.date_range("2021-03-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
        "load": 50.0 + 10.0 * np.sin(t / 6.0) + rng.normal(0, 1, rows),
        "temp": 15.0 + 0.05 * t + rng.normal(0, 0.5, rows),
        "site": ["north"] * rows,
    })


def test_normalisation_uses_the_training_rows_only_and_windows_follow_the_table():
    frame = user_frame()
    data = series_from_frame(frame, target="temp", time_col="date", split=(0.6, 0.2, 0.2),
                             input_len=8, horizon=3)
    raw = frame[["temp", "load"]].to_numpy()  # the target first, then the other inputs
    train_rows = round(0.6 * ROWS)
    np.testing.assert_allclose(data.mean, raw[:train_rows].mean(axis=0))
    np.testing.assert_allclose(data.std, raw[:train_rows].std(axis=0))
    assert not np.allclose(data.mean, raw.mean(axis=0))  # the whole series would differ
    assert data.columns == ("temp", "load") and data.targets == (0,)
    # The first training window is rows 0..7 -> 8..10; the test targets start at row 96.
    norm = (raw - raw[:train_rows].mean(0)) / raw[:train_rows].std(0)
    np.testing.assert_allclose(data.train.inputs[0].numpy(), norm[:8], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.train.targets[0].numpy(), norm[8:11], rtol=1e-5, atol=1e-6)
    test_start = round(0.8 * ROWS)
    assert len(data.test) == ROWS - test_start - 3 + 1
    assert len(data.train) == train_rows - 11 + 1
    assert str(data.test_times[0, 0])[:10] == frame["date"][test_start]
    assert str(data.test_times[-1, -1])[:10] == frame["date"].iloc[-1]


def test_date_split_starts_validation_and_test_at_the_first_rows_on_those_dates():
    frame = user_frame()
    data = series_from_frame(frame, target="load", time_col="date",
                             split="2021-05-01,2021-06-01", input_len=5, horizon=2)
    dates = list(frame["date"])
    first_val = next(i for i, d in enumerate(dates) if d >= "2021-05-01")
    first_test = next(i for i, d in enumerate(dates) if d >= "2021-06-01")
    np.testing.assert_allclose(data.mean, frame[["load", "temp"]][:first_val].mean().to_numpy())
    assert str(data.test_times[0, 0])[:10] == "2021-06-01"
    assert len(data.val) == first_test - first_val - 2 + 1


def test_csv_array_and_frame_give_the_same_windows_and_the_frame_is_not_modified(tmp_path):
    frame = user_frame()
    before = frame.copy()
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    from_frame = series_from_frame(frame, target="load", time_col="date", input_len=6,
                                   horizon=2)
    from_csv = read_series_csv(path, "load", time_col="date", input_len=6, horizon=2)
    from_array = series_from_frame(frame[["load", "temp"]].to_numpy(), target=0, input_len=6,
                                   horizon=2)
    pd.testing.assert_frame_equal(frame, before)
    for other in (from_csv, from_array):
        np.testing.assert_array_equal(other.test.targets.numpy(), from_frame.test.targets.numpy())
        np.testing.assert_array_equal(other.train.inputs.numpy(), from_frame.train.inputs.numpy())
    # Without a time column the time is the row number, or the DatetimeIndex when there is one.
    assert from_array.test_times[0, 0] == round(0.8 * ROWS)
    indexed = frame.set_index(pd.to_datetime(frame["date"])).drop(columns="date")
    from_index = series_from_frame(indexed, target="load", input_len=6, horizon=2)
    np.testing.assert_array_equal(from_index.test_times, from_frame.test_times)


def test_a_numeric_time_column_is_kept_as_numbers_and_must_increase():
    frame = user_frame().assign(year=np.arange(1900.0, 1900.0 + ROWS))
    data = series_from_frame(frame, target="load", time_col="year", input_len=6, horizon=2)
    assert data.columns == ("load", "temp")  # the time column is no input
    np.testing.assert_array_equal(data.test_times[:, 0],
                                  frame["year"].to_numpy()[round(0.8 * ROWS):ROWS - 1])
    frame.loc[50, "year"] = 1949.0
    with pytest.raises(ValueError, match=r"time column 'year' is not strictly increasing at "
                                         r"row 50 \(1949.0 then 1949.0\)"):
        series_from_frame(frame, target="load", time_col="year", input_len=6, horizon=2)


def test_features_choose_the_inputs_and_targets_are_always_inputs():
    frame = user_frame()
    only = series_from_frame(frame, target="load,temp", features="temp", input_len=6,
                             horizon=2)
    assert only.columns == ("load", "temp") and only.targets == (0, 1)
    alone = series_from_frame(frame, target="load", features="load", input_len=6, horizon=2)
    assert alone.columns == ("load",)


def test_persistence_forecasts_and_truth_come_back_in_the_series_units_with_their_times():
    frame = user_frame()
    data = series_from_frame(frame, target="load", time_col="date", input_len=6, horizon=3)
    config = ForecastConfig(model="persistence", input_len=6, horizon=3, epochs=0)
    summary = run_forecast(config, data=data, write=False)
    table = summary["forecasts"]
    assert list(table.columns) == ["time", "horizon", "target", "forecast", "truth"]
    assert len(table) == len(data.test) * 3 and set(table["target"]) == {"load"}
    row_of = {d: i for i, d in enumerate(frame["date"])}
    rows = np.array([row_of[t.strftime("%Y-%m-%d")] for t in table["time"]])
    load = frame["load"].to_numpy()
    np.testing.assert_allclose(table["truth"], load[rows], rtol=1e-5)
    # Persistence repeats the last observed value: h steps before the forecast time.
    np.testing.assert_allclose(table["forecast"], load[rows - table["horizon"]], rtol=1e-5)
    # Its RMSE per step ahead, in normalised units, from the same raw rows.
    scale = load[:round(0.7 * ROWS)].std()
    for h in (1, 3):
        pick = table["horizon"].to_numpy() == h
        expected = np.sqrt(np.mean((load[rows[pick]] - load[rows[pick] - h]) ** 2)) / scale
        assert summary["test_rmse_per_horizon"][h - 1] == pytest.approx(expected, rel=1e-4)


def bad_inputs(tmp_path: Path) -> list[tuple[str, dict, str]]:
    """(what, series_from_frame / read_series_csv arguments, expected message pattern)."""
    frame = user_frame()
    with_nan = frame.copy()
    with_nan.loc[[17, 40], "temp"] = np.nan
    shuffled = frame.copy()
    shuffled.loc[[30, 31], "date"] = shuffled.loc[[31, 30], "date"].to_numpy()
    bad_date = frame.copy()
    bad_date.loc[9, "date"] = "31/31/2021"
    text_numbers = frame.copy()
    text_numbers["temp"] = text_numbers["temp"].astype(str)
    text_numbers.loc[5, "temp"] = "n/a"
    binary = tmp_path / "series.parquet"
    binary.write_bytes(b"PAR1\x00\xff\xfe\x80" * 64)
    return [
        ("missing file", dict(path=tmp_path / "nope.csv", target="load"),
         r"csv='.*nope\.csv' does not exist"),
        ("unreadable file", dict(path=binary, target="load"),
         r"csv='.*series\.parquet' is not a readable CSV file"),
        ("a folder", dict(path=tmp_path, target="load"), r"is not a readable CSV file"),
        ("misspelled target", dict(frame=frame, target="laod"),
         r"no column 'laod' \(did you mean 'load'\?\); columns are"),
        ("misspelled time column", dict(frame=frame, target="load", time_col="data"),
         r"no time column 'data' \(did you mean 'date'\?\)"),
        ("text target", dict(frame=frame, target="site"),
         r"column 'site' is not numeric \(row 0: 'north'\)"),
        ("text among numbers", dict(frame=text_numbers, target="temp"),
         r"column 'temp' is not numeric \(row 5: 'n/a'\)"),
        ("NaN", dict(frame=with_nan, target="load"),
         r"column 'temp' has 2 missing or infinite value\(s\), the first at row 17"),
        ("short series", dict(frame=frame.head(30), target="load", input_len=24, horizon=12),
         r"the series has 30 rows, shorter than one window of input_len \+ horizon = 24 \+ 12 "
         r"= 36 rows"),
        ("short split", dict(frame=frame, target="load", input_len=60, horizon=30),
         r"gives train 84, validation 12 and test 24 rows; training needs >= input_len \+ "
         r"horizon = 90 rows and validation and test >= horizon = 30"),
        ("unparseable time", dict(frame=bad_date, target="load", time_col="date"),
         r"time column 'date' has an unparseable value at row 9: '31/31/2021'"),
        ("unsorted time", dict(frame=shuffled, target="load", time_col="date"),
         r"time column 'date' is not strictly increasing at row 31 \(2021-04-01 00:00:00 then "
         r"2021-03-31 00:00:00\)"),
        ("split sum", dict(frame=frame, target="load", split="0.7,0.2,0.2"),
         r"split='0.7,0.2,0.2' sums to 1.1 .* give three fractions summing to 1"),
        ("dates without time", dict(frame=frame, target="load", split="2021-04-01,2021-05-01"),
         r"names dates but the series has no time column"),
    ]


def test_bad_input_stops_with_one_line_naming_the_source_and_what_is_valid(tmp_path):
    for what, kwargs, pattern in bad_inputs(tmp_path):
        frame = kwargs.pop("frame", None)
        before = None if frame is None else frame.copy()
        with pytest.raises(ValueError) as caught:
            if frame is None:
                read_series_csv(kwargs.pop("path"), input_len=8, horizon=4, **kwargs)
            else:
                kwargs.setdefault("input_len", 8)
                kwargs.setdefault("horizon", 4)
                series_from_frame(frame, **kwargs)
        message = str(caught.value)
        assert re.search(pattern, message), (what, message)
        assert "\n" not in message, what
        if frame is not None:
            pd.testing.assert_frame_equal(frame, before)


def test_config_refuses_a_csv_without_target_and_a_bad_split_before_reading_anything():
    with pytest.raises(ConfigError, match=r"csv='x.csv' needs target"):
        ForecastConfig(csv="x.csv")
    with pytest.raises(ConfigError, match=r"split='0.5,0.5': .*not dates"):
        ForecastConfig(csv="x.csv", target="y", split="0.5,0.5")
    with pytest.raises(ConfigError, match=r"csv='x.csv' and dataset='etth1'"):
        ForecastConfig(csv="x.csv", target="y", dataset="etth1")
    assert ForecastConfig(csv="x.csv", target="y").dataset == "csv"


def ray_must_not_start(monkeypatch) -> None:
    """Make starting or joining Ray fail the test (the session's own Ray may be up already)."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr(ray, "init", refuse)


def test_command_line_refuses_a_bad_series_before_ray_starts(tmp_path, capsys, monkeypatch):
    from raysign.cli import main

    path = tmp_path / "s.csv"
    user_frame().to_csv(path, index=False)
    ray_must_not_start(monkeypatch)
    with pytest.raises(SystemExit) as caught:
        main(["forecast", "--csv", str(path), "--target", "lod", "--num-cpus", "1"])
    assert re.fullmatch(r"raysign forecast: .*s\.csv: no column 'lod' \(did you mean 'load'\?\)"
                        r"; columns are .*", str(caught.value))


def test_sweep_trials_take_the_user_series_from_raysign_sweep_set(tmp_path):
    from raysign.tune_configs.forecast import _QUICK, user_series

    path = tmp_path / "s.csv"
    frame = user_frame()
    frame.to_csv(path, index=False)
    # What `raysign sweep forecast --quick --set csv=... --set target=load --set time_col=date`
    # puts in a trial's config (fixed entries over the quick space).
    config = ForecastConfig(**{k: v for k, v in user_series(
        {**_QUICK, "rank": 2, "csv": str(path), "target": "load", "time_col": "date"}).items()})
    data = load_data(config)
    assert config.dataset == "csv" and data.columns == ("load", "temp")
    np.testing.assert_allclose(data.mean[0], frame["load"][:round(0.7 * ROWS)].mean())
    numeric = user_series({"dataset": "genz", "csv": str(path), "target": 0})
    assert numeric["target"] == "0" and numeric["dataset"] == "csv"


def test_sweep_set_refuses_a_bad_series_before_ray_and_keeps_non_path_values(tmp_path,
                                                                               monkeypatch):
    """`raysign sweep forecast --set ...`: the CSV is checked once on the driver, before Ray
    starts; only path fields are made absolute (a target named like a folder stays a name)."""
    from raysign.cli import main

    ray_must_not_start(monkeypatch)
    monkeypatch.chdir(tmp_path)
    user_frame().to_csv("s.csv", index=False)
    (tmp_path / "load").mkdir()  # a folder named like the target column
    from raysign.actors.sweep import load_sweep, sweep_fixed_entries

    short = ["input_len=12", "horizon=6"]
    fixed = sweep_fixed_entries(load_sweep("forecast"), ["csv=s.csv", "target=load", *short])
    assert fixed == {"csv": str(tmp_path / "s.csv"), "target": "load", "input_len": 12,
                     "horizon": 6}
    with pytest.raises(SystemExit) as caught:
        main(["sweep", "forecast", "--quick", "--set", "csv=s.csv", "--set", "target=lod",
              "--set", short[0], "--set", short[1]])
    assert re.fullmatch(r"raysign sweep: invalid configuration: .*s\.csv: no column 'lod' "
                        r"\(did you mean 'load'\?\); columns are .*", str(caught.value))


# ------------------------------------------------------- docs/forecast.md "On your own data"
def docs_blocks(kind: str) -> list[str]:
    return re.findall(rf"<!-- forecast-{kind} -->\s*```\w*\n(.*?)```", DOCS_PAGE.read_text(),
                      flags=re.DOTALL)


def write_docs_series(folder: Path) -> pd.DataFrame:
    """``my_series.csv`` as the docs describe it: a date column and numeric columns, OT
    among them (three years of hourly-like readings, made up)."""
    rng = np.random.default_rng(0)
    t = np.arange(400)
    frame = pd.DataFrame({
        "date": pd.date_range("2023-01-01", periods=400, freq="h").strftime("%Y-%m-%d %H:%M"),
        "HUFL": 5 + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.2, 400),
        "OT": 20 + 3 * np.sin(2 * np.pi * t / 24 + 1) + rng.normal(0, 0.3, 400)})
    frame.to_csv(folder / "my_series.csv", index=False)
    return frame


def test_docs_command_parses_and_reads_the_series_as_written(tmp_path, monkeypatch):
    from raysign.actors import forecast_job

    (command,) = docs_blocks("command")
    words = command.split()
    assert words[:2] == ["raysign", "forecast"]
    monkeypatch.chdir(tmp_path)
    write_docs_series(tmp_path)
    parser = argparse.ArgumentParser()
    forecast_job.add_arguments(parser)
    config = forecast_job.config_from_args(parser.parse_args(words[2:]))
    data = load_data(config)
    assert config.dataset == "csv" and data.columns[data.targets[0]] == "OT"


def test_docs_python_example_runs_as_written(tmp_path, monkeypatch, one_torch_thread):
    (code,) = docs_blocks("python")
    monkeypatch.chdir(tmp_path)
    frame = write_docs_series(tmp_path)
    namespace = {"__name__": "__main__"}
    exec(compile(code, "docs/forecast.md On your own data", "exec"), namespace)
    written = pd.read_csv(tmp_path / "forecasts.csv")
    assert list(written.columns) == ["time", "horizon", "target", "forecast", "truth"]
    truth = dict(zip(frame["date"], frame["OT"], strict=True))
    np.testing.assert_allclose(written["truth"], [truth[t[:16]] for t in written["time"]],
                               rtol=1e-5)


def test_job_writes_every_models_forecasts_and_the_figure(tmp_path):
    from raysign.actors.forecast_job import write_forecasts
    from raysign.results import RunDir

    frame = user_frame()
    data = series_from_frame(frame, target="load,temp", time_col="date", input_len=6,
                             horizon=2)
    results = [run_forecast(ForecastConfig(model=m, input_len=6, horizon=2, epochs=0),
                            data=data, write=False) for m in ("persistence", "dlinear")]
    run_dir = RunDir.create(tmp_path, "job")
    write_forecasts(results, run_dir, "s.csv")
    written = pd.read_csv(run_dir.file("forecasts.csv"))
    assert list(written.columns) == ["model", "time", "horizon", "target", "forecast", "truth"]
    assert len(written) == 2 * len(data.test) * 2 * 2  # models x windows x steps x targets
    assert set(written["target"]) == {"load", "temp"}
    for result in results:
        mine = written[written["model"] == result["model"]].reset_index(drop=True)
        np.testing.assert_allclose(mine["forecast"], result["forecasts"]["forecast"])
    assert run_dir.file("forecast_vs_truth.png").stat().st_size > 10_000
