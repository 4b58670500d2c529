"""Specifications of the forecasting evaluation protocol: instance normalisation (RevIN) is
exactly undone, per-horizon metrics equal a numpy computation on the same ETTh1 windows, and
no statistic of the validation or test period reaches training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from raysign.forecast.config import ForecastConfig
from raysign.forecast.datasets import ETTH1_COLUMNS, etth1, synthetic
from raysign.forecast.dynamics import lorenz_dynamics
from raysign.forecast.models import (
    DLinear,
    InstanceNormalised,
    Persistence,
    denormalise,
    normalise,
    window_statistics,
)
from raysign.forecast.train import (
    horizon_metrics,
    load_data,
    predict,
    rmse_per_horizon,
)

EPS = 1e-5  # InstanceNormalised's default


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ZeroForecast(nn.Module):
    """Forecasts 0 in whatever units it is given."""

    def forward(self, history, horizon, target=None, teacher_prob=0.0):
        return history.new_zeros(history.shape[0], horizon, history.shape[2])


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 4), steps=st.integers(2, 30), channels=st.integers(1, 5),
       level=st.floats(-1e4, 1e4), spread=st.floats(1e-3, 1e3), seed=st.integers(0, 2 ** 16))
def test_denormalise_inverts_normalise_with_numpy_window_statistics(batch, steps, channels,
                                                                    level, spread, seed):
    rng = np.random.default_rng(seed)
    x = level + spread * rng.standard_normal((batch, steps, channels))
    history = torch.from_numpy(x)
    # Subtracting the level loses about level / spread units in the last place.
    rounding = 1e-13 * (1.0 + abs(level) / spread)
    mean, scale = window_statistics(history, EPS)
    np.testing.assert_allclose(mean.numpy(), x.mean(axis=1, keepdims=True), rtol=1e-12,
                               atol=1e-12 * abs(level))
    np.testing.assert_allclose(scale.numpy(), x.std(axis=1, keepdims=True) + EPS, rtol=rounding)
    scaled = normalise(history, mean, scale)
    # In its own units a window has mean 0 and std 1 (up to eps) in every channel.
    np.testing.assert_allclose(scaled.mean(dim=1).numpy(), 0.0, atol=rounding)
    raw_std = x.std(axis=1)
    np.testing.assert_allclose(scaled.std(dim=1, unbiased=False).numpy(),
                               raw_std / (raw_std + EPS), rtol=rounding)
    restored = denormalise(scaled, mean, scale).numpy()
    np.testing.assert_allclose(restored, x, rtol=1e-12, atol=1e-12 * (abs(level) + spread))


def test_instance_normalised_forecasts_are_in_data_units():
    torch.manual_seed(0)
    offsets = torch.tensor([1000.0, -50.0, 0.0])
    history = torch.randn(5, 24, 3, dtype=torch.float64) * torch.tensor([10.0, 0.1, 1.0]) + offsets
    x = history.numpy()
    with torch.no_grad():
        # Persistence in the window's units, mapped back, is persistence in data units.
        np.testing.assert_allclose(InstanceNormalised(Persistence())(history, 7).numpy(),
                                   np.repeat(x[:, -1:], 7, axis=1), rtol=1e-12, atol=1e-9)
        # A forecast of 0 in the window's units is the window's own mean in data units.
        np.testing.assert_allclose(InstanceNormalised(ZeroForecast())(history, 4).numpy(),
                                   np.repeat(x.mean(axis=1, keepdims=True), 4, axis=1),
                                   rtol=1e-12)


def test_instance_normalisation_reads_the_burn_in_window_only():
    torch.manual_seed(1)
    model = InstanceNormalised(DLinear(16, 8, kernel=5)).double()
    history = torch.randn(3, 16, 2, dtype=torch.float64) + 4.0
    target = torch.randn(3, 8, 2, dtype=torch.float64) * 100.0
    with torch.no_grad():
        free = model(history, 8)
        # Targets handed over for teacher forcing are not used at teacher probability 0: no
        # statistic of the future enters the forecast.
        np.testing.assert_array_equal(model(history, 8, target=target).numpy(), free.numpy())
        np.testing.assert_array_equal(model(history, 8, target=-target).numpy(), free.numpy())


def _etth1_normalised(path) -> np.ndarray:
    raw = pd.read_csv(path)[list(ETTH1_COLUMNS)].to_numpy(dtype=np.float64)
    return (raw - raw[:8640].mean(axis=0)) / raw[:8640].std(axis=0)


def _dlinear_numpy(model: DLinear, x: np.ndarray) -> np.ndarray:
    """DLinear on windows [N, T, d] in numpy: edge-padded moving average, two linear maps."""
    k = model.kernel
    padded = np.concatenate([np.repeat(x[:, :1], (k - 1) // 2, axis=1), x,
                             np.repeat(x[:, -1:], k // 2, axis=1)], axis=1)
    cumsum = np.concatenate([np.zeros_like(padded[:, :1]), padded.cumsum(axis=1)], axis=1)
    trend = (cumsum[:, k:] - cumsum[:, :-k]) / k
    weights = {name: (layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
               for name, layer in (("trend", model.trend), ("seasonal", model.seasonal))}
    out = np.zeros((x.shape[0], model.horizon, x.shape[2]))
    for name, part in (("trend", trend), ("seasonal", x - trend)):
        w, b = weights[name]
        out += np.einsum("ht,ntd->nhd", w, part) + b[None, :, None]
    return out


def test_per_horizon_metrics_equal_numpy_on_each_horizons_own_test_windows(data_dir):
    """The bench's ETTh1 protocol for a model trained for horizon 192 and an instance-normalised
    model: MSE / MAE over steps 1..h on every test window of a horizon-h task (targets in
    [11520, 14400)), and RMSE at each step, against numpy on the raw CSV."""
    torch.manual_seed(2)
    inner = DLinear(96, 192)
    with torch.no_grad():
        for layer in (inner.trend, inner.seasonal):
            layer.weight.add_(0.01 * torch.randn_like(layer.weight))
            layer.bias.normal_(0.0, 0.1)
    model = InstanceNormalised(inner)
    config = ForecastConfig(dataset="etth1", model="dlinear", input_len=96, horizon=192,
                            data_dir=str(data_dir))
    metrics = horizon_metrics(model, config, [96, 192])
    norm = _etth1_normalised(data_dir / "forecast" / "ETTh1.csv")
    for h in (96, 192):
        starts = np.arange(11520 - 96, 14400 - 96 - h + 1)
        x = norm[starts[:, None] + np.arange(96)]
        y = norm[starts[:, None] + 96 + np.arange(h)]
        mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True) + EPS
        forecast = _dlinear_numpy(inner, (x - mean) / std)[:, :h] * std + mean
        err = forecast - y
        assert len(starts) == 2880 - h + 1
        assert metrics[h]["mse"] == pytest.approx(float((err ** 2).mean()), rel=1e-4)
        assert metrics[h]["mae"] == pytest.approx(float(np.abs(err).mean()), rel=1e-4)
    per_step = rmse_per_horizon(model, load_data(config).test, 192)
    np.testing.assert_allclose(per_step, np.sqrt((err ** 2).mean(axis=(0, 2))), rtol=1e-4)
    # Shorter horizons are scored on more windows than prefixes of the longer task would give.
    assert len(load_data(config).test) == 2880 - 192 + 1


@pytest.mark.parametrize("first_changed", [8640, 11520])
def test_etth1_training_data_and_statistics_ignore_later_rows(data_dir, tmp_path,
                                                              first_changed):
    """Rewriting every row from the validation (8640) or test (11520) period on leaves the
    normalisation statistics and the training windows bit for bit unchanged."""
    source = data_dir / "forecast" / "ETTh1.csv"
    frame = pd.read_csv(source)
    columns = list(ETTH1_COLUMNS)
    frame.loc[first_changed:, columns] = frame.loc[first_changed:, columns] * 10.0 + 3.0
    changed = tmp_path / "ETTh1.csv"
    frame.to_csv(changed, index=False)
    original, altered = (etth1(p, input_len=96, horizon=48, stride=4) for p in (source, changed))
    np.testing.assert_array_equal(altered.mean, original.mean)
    np.testing.assert_array_equal(altered.std, original.std)
    assert torch.equal(altered.train.inputs, original.train.inputs)
    assert torch.equal(altered.train.targets, original.train.targets)
    assert torch.equal(altered.val.targets, original.val.targets) == (first_changed == 11520)
    assert not torch.equal(altered.test.targets, original.test.targets)


def test_synthetic_normalisation_uses_training_sequences_only():
    data = synthetic("lorenz", input_len=6, horizon=4, num_sequences=40, seed=5)
    series = lorenz_dynamics(40, 10, seed=5).astype(np.float64)
    train = series[:28].reshape(-1, 3)  # 70 % of 40 sequences
    np.testing.assert_allclose(data.mean, train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(data.std, train.std(axis=0), rtol=1e-6)
    assert not np.allclose(data.std, series.reshape(-1, 3).std(axis=0), rtol=1e-3)
    expected_test = (series[34:, 6:] - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(data.test.targets.numpy(), expected_test, rtol=1e-4, atol=1e-5)


def test_predict_is_free_running_and_batch_independent():
    """Evaluation never sees targets: forecasts from ``predict`` in any batch size equal the
    model's own forward pass without targets."""
    torch.manual_seed(3)
    model = DLinear(10, 5, kernel=3)
    data = synthetic("genz", input_len=10, horizon=5, num_sequences=30, seed=1)
    with torch.no_grad():
        direct = model(data.test.inputs, 5)
    np.testing.assert_allclose(predict(model, data.test, 5, batch_size=2).numpy(),
                               direct.numpy(), rtol=1e-6)
