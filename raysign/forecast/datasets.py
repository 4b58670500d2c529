"""Forecasting data: windows (burn-in ``input_len`` steps, then ``horizon`` targets) from the
synthetic dynamics, from ETTh1 (Zhou et al., "Informer", AAAI 2021) and from a user's own
series (``series_from_frame``, ``read_series_csv``: a DataFrame, an array or a CSV file).

ETTh1 follows the standard chronological 12/4/4-month split: train rows [0, 8640), validation
[8640, 11520), test [11520, 14400). As in the Informer/DLinear loaders, the validation and test
windows may start up to ``input_len`` rows before their segment (their burn-in reads the end
of the previous one) but every *target* lies inside its own segment. The z-score
normalisation is fitted on the training rows only; the TT-RNN reference code normalised with
statistics of the whole series, which leaks the test period into training.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysign.data import require_file
from raysign.forecast.dynamics import genz_dynamics, lorenz_dynamics

ETTH1_BORDERS = (0, 8640, 11520, 14400)
ETTH1_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
DATASETS = ("genz", "lorenz", "etth1", "csv")


@dataclass(frozen=True)
class Windows:
    """``inputs`` float32 [N, input_len, d] and ``targets`` float32 [N, horizon, d]."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass(frozen=True)
class ForecastData:
    """Normalised train / validation / test windows and the statistics used (per channel).

    ``targets``: the channels that are forecast and scored (empty: all); ``columns``: the
    channel names; ``test_times`` [N_test, horizon]: the time of every test target (a user's
    series only)."""

    train: Windows
    val: Windows
    test: Windows
    mean: np.ndarray
    std: np.ndarray
    columns: tuple[str, ...] = ()
    targets: tuple[int, ...] = ()
    test_times: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.train.inputs.shape[2]

    @property
    def target_channels(self) -> list[int]:
        return list(self.targets) if self.targets else list(range(self.dim))


def sliding_windows(series: np.ndarray, input_len: int, horizon: int, first_target: int = 0,
                    stride: int = 1) -> Windows:
    """Every window of ``series`` [T, d] whose targets start at or after ``first_target``."""
    total = input_len + horizon
    starts = np.arange(max(0, first_target - input_len), len(series) - total + 1, stride)
    if len(starts) == 0:
        raise ValueError(f"a series of {len(series)} rows has no window of input_len="
                         f"{input_len} + horizon={horizon}")
    index = starts[:, None] + np.arange(total)[None, :]
    block = torch.from_numpy(np.ascontiguousarray(series[index], dtype=np.float32))
    return Windows(block[:, :input_len], block[:, input_len:])


def fit_normalisation(train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation of the training rows [T, d]."""
    mean = train_rows.mean(axis=0)
    std = train_rows.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def load_etth1_array(path: str | Path) -> np.ndarray:
    """The seven ETTh1 variables as float64 [17420, 7] (column order of ``ETTH1_COLUMNS``)."""
    import pandas as pd

    frame = pd.read_csv(require_file(path, "ETTh1"))
    missing = [c for c in ETTH1_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; expected {list(ETTH1_COLUMNS)}")
    return frame[list(ETTH1_COLUMNS)].to_numpy(dtype=np.float64)


def etth1(path: str | Path, input_len: int, horizon: int, *, stride: int = 1) -> ForecastData:
    """ETTh1 windows with the 12/4/4-month split, normalised with train statistics only.
    ``stride`` thins the training and validation windows; the test set keeps every window."""
    values = load_etth1_array(path)
    b0, b1, b2, b3 = ETTH1_BORDERS
    if len(values) < b3:
        raise ValueError(f"{path} has {len(values)} rows; the standard split needs {b3}")
    mean, std = fit_normalisation(values[b0:b1])
    norm = (values - mean) / std
    return ForecastData(
        train=sliding_windows(norm[b0:b1], input_len, horizon, stride=stride),
        val=sliding_windows(norm[:b2], input_len, horizon, first_target=b1, stride=stride),
        test=sliding_windows(norm[:b3], input_len, horizon, first_target=b2),
        mean=mean, std=std)


def synthetic(kind: str, input_len: int, horizon: int, *, num_sequences: int = 1200,
              seed: int = 0) -> ForecastData:
    """Genz or Lorenz sequences of ``input_len + horizon`` steps, split 70/15/15 by sequence
    and normalised with the training sequences' statistics."""
    length = input_len + horizon
    if kind == "genz":
        series = genz_dynamics(num_sequences, length, seed=seed)
    elif kind == "lorenz":
        series = lorenz_dynamics(num_sequences, length, seed=seed)
    else:
        raise ValueError(f"dataset={kind!r} is not one of ['genz', 'lorenz']")
    n_train, n_val = int(0.7 * num_sequences), int(0.15 * num_sequences)
    if min(n_train, n_val, num_sequences - n_train - n_val) < 1:
        raise ValueError(f"num_sequences={num_sequences} is too few for a 70/15/15 split")
    mean, std = fit_normalisation(series[:n_train].reshape(-1, series.shape[2]))
    norm = torch.from_numpy(((series - mean) / std).astype(np.float32))

    def cut(part: torch.Tensor) -> Windows:
        return Windows(part[:, :input_len].contiguous(), part[:, input_len:].contiguous())

    return ForecastData(train=cut(norm[:n_train]), val=cut(norm[n_train:n_train + n_val]),
                        test=cut(norm[n_train + n_val:]), mean=mean, std=std)


# ------------------------------------------------------------------ the user's own series
DEFAULT_SPLIT = (0.7, 0.1, 0.2)


def parse_split(split: str | Sequence[float]) -> tuple[float, float, float] | tuple[str, str]:
    """``"0.7,0.1,0.2"`` (train / validation / test fractions, each > 0, summing to 1) or
    ``"YYYY-MM-DD,YYYY-MM-DD"`` (the first validation and the first test date); a sequence of
    three fractions or two dates is taken as is. ValueError names what would be valid."""
    parts = ([p.strip() for p in split.split(",")] if isinstance(split, str)
             else list(split))
    valid = "three fractions summing to 1 (0.7,0.1,0.2) or two dates (2020-01-01,2021-01-01)"
    if len(parts) == 2:
        try:
            dates = [pd_timestamp(p) for p in parts]
        except ValueError:
            raise ValueError(f"split={split!r}: {parts} are not dates; give {valid}") from None
        if not dates[0] < dates[1]:
            raise ValueError(f"split={split!r}: the validation date must come before the test "
                             f"date; give {valid}")
        return str(parts[0]), str(parts[1])
    if len(parts) != 3:
        raise ValueError(f"split={split!r} has {len(parts)} parts; give {valid}")
    try:
        fractions = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"split={split!r} is not numbers; give {valid}") from None
    if min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split={split!r} sums to {sum(fractions):g} (each part must be > 0 and "
                         f"the three sum to 1); give {valid}")
    return fractions  # type: ignore[return-value]


def pd_timestamp(value: Any) -> Any:
    import pandas as pd

    try:
        return pd.Timestamp(value)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


def _columns_hint(name: Any, columns: Sequence[Any]) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in columns], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; columns are {[str(c) for c in columns]}"


def _as_names(value: Any) -> list[Any]:
    """``"a,b"`` -> ["a", "b"]; one name or index -> [it]; a sequence -> a list."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _numeric_column(frame: Any, name: Any, source: str) -> np.ndarray:
    """Column ``name`` as float64; ValueError naming the first non-numeric value or NaN."""
    import pandas as pd

    column = frame[name]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        converted = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(converted.isna().to_numpy() & column.notna().to_numpy())
        row = int(bad[0]) if len(bad) else 0
        raise ValueError(f"{source}: column {name!r} is not numeric (row {row}: "
                         f"{column.iloc[row]!r}); give numbers, or leave it out of --features")
    values = column.to_numpy(dtype=np.float64)
    missing = np.flatnonzero(~np.isfinite(values))
    if len(missing):
        raise ValueError(f"{source}: column {name!r} has {len(missing)} missing or infinite "
                         f"value(s), the first at row {int(missing[0])} ({values[missing[0]]}); "
                         "fill or drop them first (e.g. DataFrame.interpolate())")
    return values


def _times(frame: Any, time_col: Any, source: str) -> np.ndarray:
    """The time column, strictly increasing: dates parsed to datetime64, numbers (a year, a
    step count) kept as they are; without one a DatetimeIndex, else the row positions."""
    import pandas as pd

    if time_col is None or time_col == "":
        if isinstance(frame.index, pd.DatetimeIndex):
            times = frame.index.to_numpy()
        else:
            return np.arange(len(frame))
        label = "the index"
    else:
        if time_col not in frame.columns:
            raise ValueError(f"{source}: no time column {time_col!r}"
                             + _columns_hint(time_col, frame.columns))
        column = frame[time_col]
        label = f"time column {time_col!r}"
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            times = _numeric_column(frame, time_col, source)
        else:
            parsed = pd.to_datetime(column, errors="coerce")
            bad = np.flatnonzero(parsed.isna().to_numpy())
            if len(bad):
                raise ValueError(f"{source}: {label} has an unparseable value at row "
                                 f"{int(bad[0])}: {column.iloc[bad[0]]!r}; give dates such as "
                                 "2020-01-31 or 2020-01-31 13:00, or numbers")
            times = parsed.to_numpy()
    dated = np.issubdtype(times.dtype, np.datetime64)
    back = np.flatnonzero(np.diff(times) <= (np.timedelta64(0) if dated else 0))
    if len(back):
        r = int(back[0]) + 1
        shown = [pd.Timestamp(t) if dated else t for t in times[r - 1:r + 1]]
        raise ValueError(f"{source}: {label} is not strictly increasing at row {r} "
                         f"({shown[0]} then {shown[1]}); sort the rows by time and drop "
                         "duplicate times")
    return times


def _borders(times: np.ndarray, split: tuple, source: str) -> tuple[int, int]:
    """First validation row and first test row."""
    total = len(times)
    if isinstance(split[0], str):
        if not np.issubdtype(times.dtype, np.datetime64):
            raise ValueError(f"{source}: split={','.join(split)} names dates but the series has "
                             "no time column of dates; give --time-col or a split of fractions")
        b1, b2 = (int(np.searchsorted(times, np.datetime64(pd_timestamp(d)))) for d in split)
        return b1, b2
    b1 = int(round(split[0] * total))
    return b1, int(round((split[0] + split[1]) * total))


def series_from_frame(frame: Any, target: Any, *, time_col: Any = None, features: Any = None,
                      split: str | Sequence[Any] = DEFAULT_SPLIT, input_len: int = 24,
                      horizon: int = 48, stride: int = 1, source: str = "DataFrame"
                      ) -> ForecastData:
    """Windows of a user's multivariate series, split chronologically like ETTh1.

    ``frame``: a pandas DataFrame (one row per time step) or an array [T] / [T, d] (columns
    0..d-1). ``target``: the column(s) to forecast (a name, an index, a list or "a,b").
    ``time_col``: a column of dates (parsed, must increase strictly); without it a
    DatetimeIndex is the time, else the row number. ``features``: the input columns (default:
    every numeric column but the time column; the targets are always inputs). ``split``:
    fractions or two dates (``parse_split``). Train rows [0, b1), validation targets in
    [b1, b2), test targets in [b2, T); validation / test windows may read up to ``input_len``
    rows of the previous segment. The z-score statistics come from the training rows only.
    ``frame`` is not modified. ValueError (one line, naming ``source``, the column or value and
    what is valid) on any bad input.
    """
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        array = np.asarray(frame)
        if array.ndim not in (1, 2):
            raise ValueError(f"{source}: an array of shape {array.shape}; give [T] or [T, d]")
        frame = pd.DataFrame(array.reshape(len(array), -1))
    split = parse_split(split)
    targets = _as_names(target)
    if not targets:
        raise ValueError(f"{source}: no target column; give one or more of "
                         f"{[str(c) for c in frame.columns]}")
    for name in targets + _as_names(features):
        if name not in frame.columns:
            raise ValueError(f"{source}: no column {name!r}" + _columns_hint(name, frame.columns))
    times = _times(frame, time_col, source)
    if features is None or _as_names(features) == []:
        others = [c for c in frame.columns if c != time_col and c not in targets
                  and pd.api.types.is_numeric_dtype(frame[c])
                  and not pd.api.types.is_bool_dtype(frame[c])]
    else:
        others = [c for c in _as_names(features) if c not in targets]
    columns = targets + others
    values = np.stack([_numeric_column(frame, c, source) for c in columns], axis=1)
    window = input_len + horizon
    total = len(values)
    if total < window:
        raise ValueError(f"{source}: the series has {total} rows, shorter than one window of "
                         f"input_len + horizon = {input_len} + {horizon} = {window} rows")
    b1, b2 = _borders(times, split, source)
    if b1 < window or b2 - b1 < horizon or total - b2 < horizon:
        raise ValueError(
            f"{source}: split {split} of {total} rows gives train {b1}, validation {b2 - b1} and "
            f"test {total - b2} rows; training needs >= input_len + horizon = {window} rows and "
            f"validation and test >= horizon = {horizon} each: give a longer series, another "
            "split or a shorter --input-len / --horizon")
    mean, std = fit_normalisation(values[:b1])
    norm = (values - mean) / std
    test = sliding_windows(norm, input_len, horizon, first_target=b2)
    starts = np.arange(b2 - input_len, total - window + 1)
    return ForecastData(
        train=sliding_windows(norm[:b1], input_len, horizon, stride=stride),
        val=sliding_windows(norm[:b2], input_len, horizon, first_target=b1, stride=stride),
        test=test, mean=mean, std=std,
        columns=tuple(str(c) for c in columns), targets=tuple(range(len(targets))),
        test_times=times[starts[:, None] + input_len + np.arange(horizon)[None, :]])


def read_series_csv(path: str | Path, target: Any, *, time_col: Any = None,
                    features: Any = None, split: str | Sequence[Any] = DEFAULT_SPLIT,
                    input_len: int = 24, horizon: int = 48, stride: int = 1) -> ForecastData:
    """``series_from_frame`` of a CSV file (one header line, one row per time step)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise ValueError(f"csv={str(path)!r} does not exist; give the path of a CSV file with "
                         "a header line") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"csv={str(path)!r} is not a readable CSV file ({first}); give a "
                         "comma-separated text file with a header line") from None
    return series_from_frame(frame, target, time_col=time_col, features=features, split=split,
                             input_len=input_len, horizon=horizon, stride=stride,
                             source=str(path))
