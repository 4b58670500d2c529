"""``ForecastConfig``: the one configuration type of the forecasting capability (Yu et al.,
arXiv:1711.00073, sec. 4). The CLI (``raysign forecast``), ``scripts/bench_forecast.py`` and
the forecast sweep (``tune_configs/forecast.py``) all build it; a bad value fails on
construction, before Ray starts, with a message naming the field and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysign.config import ConfigError, check_choice, check_range
from raysign.data import local_data_dir
from raysign.forecast.datasets import DATASETS, parse_split
from raysign.forecast.models import MODELS
from raysign.storage import check_location

TEACHER = ("scheduled", "forcing", "free")
ETTH1 = "forecast/ETTh1.csv"  # inside data_dir


@dataclass(frozen=True)
class ForecastConfig:
    """One forecasting run: data, model, optimisation."""

    dataset: str = "lorenz"
    csv: str = ""
    target: str = ""
    time_col: str = ""
    features: str = ""
    split: str = "0.7,0.1,0.2"
    model: str = "ttlstm"
    data_dir: str = ""
    input_len: int = 24
    horizon: int = 48
    hidden_size: int = 16
    lags: int = 3
    order: int = 3
    rank: int = 4
    match_params: bool = True
    instance_norm: bool = False
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    clip: float = 1.0
    patience: int = 6
    teacher: str = "scheduled"
    num_sequences: int = 1200
    stride: int = 1
    max_train_windows: int = 0
    seed: int = 0
    results_dir: str = "runs"
    name: str = "forecast"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if self.csv:  # a user's series: --csv alone selects it
            if self.dataset not in ("lorenz", "csv"):
                raise ConfigError(f"csv={self.csv!r} and dataset={self.dataset!r}: give one "
                                  "of them")
            object.__setattr__(self, "dataset", "csv")
            if not self.target.strip():
                raise ConfigError(f"csv={self.csv!r} needs target: the column(s) to forecast, "
                                  "e.g. --target OT or --target OT,HUFL")
        elif self.dataset == "csv":
            raise ConfigError("dataset='csv' needs csv: the path of the series, e.g. "
                              "--csv my_series.csv --target OT")
        try:
            parse_split(self.split)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check_choice("model", self.model, MODELS)
        check_choice("teacher", self.teacher, TEACHER)
        check_range("input_len", self.input_len, 2, 10_000)
        check_range("horizon", self.horizon, 1, 10_000)
        check_range("hidden_size", self.hidden_size, 1, 4096)
        check_range("lags", self.lags, 1, 64)
        check_range("order", self.order, 1, 8)
        check_range("rank", self.rank, 1, 1024)
        check_range("epochs", self.epochs, 0, 100_000)
        check_range("batch_size", self.batch_size, 1, 1_000_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("clip", self.clip, 0.0, None, low_open=True)
        check_range("patience", self.patience, 1, 100_000)
        check_range("num_sequences", self.num_sequences, 10, 10_000_000)
        check_range("stride", self.stride, 1, 100_000)
        check_range("max_train_windows", self.max_train_windows, 0, None)
        if self.data_dir:  # "" is the default folder, resolved where ETTh1 is read
            check_location("data_dir", self.data_dir, "s3://bucket/data or file:///shared/data")
        check_location("results_dir", self.results_dir)

    def etth1_path(self) -> Path:
        """ETTh1.csv on this machine (copied once into this node's cache if ``data_dir`` is
        a URI)."""
        return local_data_dir(self.data_dir, [ETTH1]) / ETTH1
