"""Forecasting data: windows (burn-in ``input_len`` steps, then ``horizon`` targets) from the
synthetic dynamics and from ETTh1 (Zhou et al., "Informer", AAAI 2021).

ETTh1 follows the standard chronological 12/4/4-month split: train rows [0, 8640), validation
[8640, 11520), test [11520, 14400). As in the Informer/DLinear loaders, the validation and test
windows may start up to ``input_len`` rows before their segment (their burn-in reads the end
of the previous one) but every *target* lies inside its own segment. The z-score
normalisation is fitted on the training rows only; the TT-RNN reference code normalised with
statistics of the whole series, which leaks the test period into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysign.data import require_file
from raysign.forecast.dynamics import genz_dynamics, lorenz_dynamics

ETTH1_BORDERS = (0, 8640, 11520, 14400)
ETTH1_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
DATASETS = ("genz", "lorenz", "etth1")


@dataclass(frozen=True)
class Windows:
    """``inputs`` float32 [N, input_len, d] and ``targets`` float32 [N, horizon, d]."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass(frozen=True)
class ForecastData:
    """Normalised train / validation / test windows and the statistics used (per channel)."""

    train: Windows
    val: Windows
    test: Windows
    mean: np.ndarray
    std: np.ndarray

    @property
    def dim(self) -> int:
        return self.train.inputs.shape[2]


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
