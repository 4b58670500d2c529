"""Specifications of the TT-RNN capability against plain numpy / scipy references."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raysign.config import ConfigError
from raysign.forecast.cells import TTLSTMCell, TTRNNCell, TTTransition, augmented_state
from raysign.forecast.config import ForecastConfig
from raysign.forecast.datasets import ETTH1_COLUMNS, etth1
from raysign.forecast.dynamics import GENZ, lorenz_dynamics, lyapunov_exponent
from raysign.forecast.models import (
    DLinear,
    InstanceNormalised,
    Persistence,
    build_model,
    count_parameters,
    matched_baseline,
)
from raysign.forecast.train import (
    fit,
    horizon_metrics,
    load_data,
    make_model,
    overall_rmse,
    rmse_per_horizon,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dense_reference(cores: list[np.ndarray], s: np.ndarray) -> np.ndarray:
    """Build the full weight tensor from the TT cores and contract it with the explicit p-fold
    outer product of each state: out[b, a] = sum W[i1..ip, a] s[b,i1] ... s[b,ip]."""
    full = cores[0][0]  # [D, r1]
    for core in cores[1:]:
        full = np.einsum("...r,rjs->...js", full, core)
    outs = []
    for state in s:
        outer = state
        for _ in range(len(cores) - 1):
            outer = np.multiply.outer(outer, state)
        outs.append(np.tensordot(outer, full, axes=len(cores)))
    return np.stack(outs)


@pytest.mark.parametrize("order,rank", [(1, []), (2, 3), (3, [2, 4]), (4, [3, 1, 2])])
def test_tt_contraction_equals_dense_higher_order_transition(order, rank):
    torch.manual_seed(order)
    tt = TTTransition(state_dim=5, out_dim=3, order=order, rank=rank).double()
    with torch.no_grad():
        for core in tt.cores:
            core.normal_()
    s = torch.randn(4, 5, dtype=torch.float64)
    s[:, 0] = 1.0
    expected = _dense_reference([c.detach().numpy() for c in tt.cores], s.numpy())
    np.testing.assert_allclose(tt(s).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    # The tensor the module reports is the same W.
    dense = tt.dense_tensor().detach().numpy()
    assert dense.shape == (5,) * order + (3,)


@settings(max_examples=40, deadline=None)
@given(order=st.integers(1, 4), data=st.data(), state_dim=st.integers(1, 6),
       out_dim=st.integers(1, 5), batch=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_core_by_core_contraction_equals_dense_transition_for_any_ranks(order, data, state_dim,
                                                                         out_dim, batch, seed):
    """The one-matmul-per-core contraction (bond vector (x) state, then the reshaped core)
    against the explicit p-fold outer product, for any per-core ranks and any state, including
    states whose first entry is not the bias 1."""
    ranks = data.draw(st.lists(st.integers(1, 4), min_size=order - 1, max_size=order - 1))
    torch.manual_seed(seed)
    tt = TTTransition(state_dim, out_dim, order, ranks).double()
    with torch.no_grad():
        for core in tt.cores:
            core.normal_()
    s = torch.randn(batch, state_dim, dtype=torch.float64)
    expected = _dense_reference([c.detach().numpy() for c in tt.cores], s.numpy())
    np.testing.assert_allclose(tt(s).detach().numpy(), expected, rtol=1e-9, atol=1e-9)
    assert tt(s).shape == (batch, out_dim)


def test_tt_lstm_gates_use_bias_augmented_lag_window():
    torch.manual_seed(0)
    cell = TTLSTMCell(input_dim=2, hidden_size=3, lags=2, order=2, rank=2).double()
    window = torch.randn(5, 2, 3, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    s = augmented_state(window).numpy()
    np.testing.assert_array_equal(s[:, 0], 1.0)
    np.testing.assert_array_equal(s[:, 1:4], window[:, 0].numpy())  # lag 1 first
    gates = (x.numpy() @ cell.input_map.weight.detach().numpy().T
             + _dense_reference([c.detach().numpy() for c in cell.transition.cores], s))
    i, f, g, o = np.split(gates, 4, axis=1)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c = sig(i) * np.tanh(g)  # zero initial memory
    h_ref = sig(o) * np.tanh(c)
    h, (new_window, new_c) = cell(x, (window, torch.zeros(5, 3, dtype=torch.float64)))
    np.testing.assert_allclose(h.detach().numpy(), h_ref, rtol=1e-10)
    np.testing.assert_allclose(new_window[:, 1].detach().numpy(), window[:, 0].numpy())
    np.testing.assert_allclose(new_window[:, 0].detach().numpy(), h_ref, rtol=1e-10)


def test_invalid_ranks_name_the_value():
    with pytest.raises(ValueError, match="rank"):
        TTTransition(5, 3, order=3, rank=[2])
    with pytest.raises(ConfigError, match="order=0"):
        ForecastConfig(order=0)


@pytest.mark.parametrize("cell_type", [TTLSTMCell, TTRNNCell])
def test_initialisation_keeps_long_free_rollouts_bounded(cell_type):
    torch.manual_seed(0)
    model = build_model("ttlstm" if cell_type is TTLSTMCell else "ttrnn", 3, hidden_size=16,
                        lags=4, order=3, rank=8)
    history = torch.randn(8, 20, 3)
    with torch.no_grad():
        out = model(history, 500)
    assert torch.isfinite(out).all()
    # The residual readout starts near persistence: each fed-back step moves little.
    assert out.diff(dim=1).abs().max() < 0.25
    # Higher-order terms start small: over hidden states anywhere in [-1, 1]^(LH) the
    # transition's pre-activations stay O(1) (no saturated gates, no product blow-up).
    window = torch.rand(256, 4, 16) * 2 - 1
    with torch.no_grad():
        pre = model.cell.transition(augmented_state(window))
    assert pre.std() < 1.5 and pre.abs().max() < 6.0


def _lstm_params(d: int, h: int) -> int:  # nn.LSTMCell + linear readout, closed form
    return 4 * h * (d + h) + 8 * h + h * d + d


def _mlstm_params(d: int, h: int, lags: int) -> int:
    return 4 * h * d + (lags * h + 1) * 4 * h + h * d + d


def _ttlstm_params(d: int, h: int, lags: int, ranks: list[int]) -> int:
    big_d, bonds = lags * h + 1, [1, *ranks, 4 * h]
    cores = sum(bonds[k] * big_d * bonds[k + 1] for k in range(len(ranks) + 1))
    return 4 * h * d + cores + h * d + d


def test_baselines_are_parameter_matched_to_tt_lstm():
    d, h, lags, order, rank = 3, 16, 3, 3, 4
    tt = build_model("ttlstm", d, hidden_size=h, lags=lags, order=order, rank=rank)
    target = count_parameters(tt)
    assert target == _ttlstm_params(d, h, lags, [rank] * (order - 1))
    for name, formula in (("lstm", lambda k: _lstm_params(d, k)),
                          ("mlstm", lambda k: _mlstm_params(d, k, lags))):
        model = matched_baseline(name, d, target, lags=lags)
        best = min(range(1, 300), key=lambda k: abs(formula(k) - target))
        assert model.cell.hidden_size == best
        assert count_parameters(model) == formula(best)
        assert abs(count_parameters(model) - target) / target < 0.05


def test_etth1_split_is_chronological_and_normalised_with_train_rows_only(data_dir):
    path = data_dir / "forecast" / "ETTh1.csv"
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    raw = np.array([[float(r[c]) for c in ETTH1_COLUMNS] for r in rows[:14400]])
    data = etth1(path, input_len=96, horizon=24, stride=1)
    np.testing.assert_allclose(data.mean, raw[:8640].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.std, raw[:8640].std(axis=0), rtol=1e-12)
    assert not np.allclose(data.mean, raw.mean(axis=0))  # whole-series stats would differ
    norm = (raw - data.mean) / data.std
    # Train targets end at row 8639; validation targets span [8640, 11520); test [11520, 14400).
    np.testing.assert_allclose(data.train.targets[-1, -1].numpy(), norm[8639], atol=1e-5)
    np.testing.assert_allclose(data.val.targets[0, 0].numpy(), norm[8640], atol=1e-5)
    np.testing.assert_allclose(data.val.targets[-1, -1].numpy(), norm[11519], atol=1e-5)
    np.testing.assert_allclose(data.test.targets[0, 0].numpy(), norm[11520], atol=1e-5)
    np.testing.assert_allclose(data.test.targets[-1, -1].numpy(), norm[14399], atol=1e-5)
    np.testing.assert_allclose(data.test.inputs[0, 0].numpy(), norm[11520 - 96], atol=1e-5)
    assert len(data.train) == 8640 - 96 - 24 + 1
    assert len(data.test) == 2880 - 24 + 1


def test_lorenz_generator_matches_scipy_integration():
    from scipy.integrate import solve_ivp

    traj = lorenz_dynamics(1, 6, dt=0.01, every=5, transient=0, seed=3)[0].astype(np.float64)

    def rhs(_t, v):
        x, y, z = v
        return [10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z]

    ref = solve_ivp(rhs, (0, 0.25), traj[0], t_eval=np.arange(6) * 0.05, rtol=1e-10,
                    atol=1e-10, method="DOP853").y.T
    np.testing.assert_allclose(traj, ref, rtol=1e-3, atol=1e-3)


def test_lyapunov_exponent_matches_closed_forms():
    starts = np.random.default_rng(0).uniform(0.05, 0.95, size=50)
    # Logistic map at r = 4: ln 2 for almost every start; an affine contraction: ln |a|.
    logistic = lyapunov_exponent(lambda x: 4 * x * (1 - x), starts, steps=4000)
    assert abs(logistic.mean() - np.log(2)) < 0.02
    np.testing.assert_allclose(lyapunov_exponent(lambda x: 0.5 * x + 1, starts), np.log(0.5),
                               rtol=1e-6)
    # The oscillatory Genz map against its analytic derivative -c sin(2 pi w + c x).
    c, w = 2.0, 0.5
    genz = lyapunov_exponent(lambda x: GENZ["oscillatory"](x, c, w), starts[:5], steps=500)
    x, analytic = starts[:5].copy(), np.zeros(5)
    for t in range(700):
        if t >= 200:
            analytic += np.log(np.abs(-c * np.sin(2 * np.pi * w + c * x)))
        x = GENZ["oscillatory"](x, c, w)
    np.testing.assert_allclose(genz, analytic / 500, rtol=1e-5)


def test_dlinear_and_persistence_match_numpy():
    torch.manual_seed(0)
    history = torch.randn(2, 30, 3)
    model = DLinear(30, 7, kernel=5)
    x = history.numpy()
    padded = np.concatenate([x[:, :1].repeat(2, 1), x, x[:, -1:].repeat(2, 1)], axis=1)
    trend = np.stack([padded[:, t:t + 5].mean(axis=1) for t in range(30)], axis=1)
    w_t, b_t = model.trend.weight.detach().numpy(), model.trend.bias.detach().numpy()
    w_s, b_s = model.seasonal.weight.detach().numpy(), model.seasonal.bias.detach().numpy()
    expected = (np.einsum("ht,btd->bhd", w_t, trend) + b_t[None, :, None]
                + np.einsum("ht,btd->bhd", w_s, x - trend) + b_s[None, :, None])
    np.testing.assert_allclose(model(history, 7).detach().numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(Persistence()(history, 4).numpy(),
                                  np.repeat(x[:, -1:], 4, axis=1))


@pytest.mark.parametrize("model_name", ["ttlstm", "dlinear"])
def test_tiny_training_run_reduces_validation_error(model_name):
    torch.manual_seed(0)
    config = ForecastConfig(dataset="genz", model=model_name, input_len=8, horizon=8,
                            hidden_size=8, lags=2, order=2, rank=2, epochs=6, batch_size=32,
                            num_sequences=300, teacher="free", lr=1e-2, patience=6)
    data = load_data(config)
    model = build_model(model_name, data.dim, hidden_size=8, lags=2, order=2, rank=2,
                        input_len=8, horizon=8)
    before = overall_rmse(rmse_per_horizon(model, data.val, 8))
    result = fit(model, data, config)
    after = overall_rmse(rmse_per_horizon(model, data.val, 8))
    assert after == pytest.approx(result.best_val_rmse)
    assert after < 0.85 * before


def test_instance_normalisation_feeds_standardised_windows_and_maps_back():
    torch.manual_seed(0)
    inner = build_model("lstm", 3, hidden_size=5)
    model = InstanceNormalised(inner)
    history, target = torch.randn(4, 12, 3) * 3 + 7, torch.randn(4, 6, 3)
    x = history.numpy().astype(np.float64)
    mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True) + 1e-5
    with torch.no_grad():
        inner_out = inner(torch.from_numpy(((x - mean) / std).astype(np.float32)), 6).numpy()
        out = model(history, 6).numpy()
        # A per-channel affine change of units (scale > 0) moves the forecast with it.
        scale, shift = torch.tensor([2.0, 0.5, 4.0]), torch.tensor([-3.0, 10.0, 0.0])
        moved = model(history * scale + shift, 6).numpy()
    np.testing.assert_allclose(out, inner_out * std + mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(moved, out * scale.numpy() + shift.numpy(), rtol=1e-3,
                               atol=1e-3)
    # Teacher forcing hands the inner model the targets in the window's own units.
    seen = {}
    inner.register_forward_hook(lambda _m, args, kwargs, _o: seen.update(kwargs),
                                with_kwargs=True)
    with torch.no_grad():
        model(history, 6, target=target, teacher_prob=1.0)
    np.testing.assert_allclose(seen["target"].numpy(), (target.numpy() - mean) / std,
                               rtol=1e-4, atol=1e-4)
    config = ForecastConfig(model="mlstm", instance_norm=True, hidden_size=6, lags=2)
    wrapped = make_model(config, 3)
    assert isinstance(wrapped, InstanceNormalised)
    assert count_parameters(wrapped) == count_parameters(
        make_model(ForecastConfig(model="mlstm", hidden_size=6, lags=2), 3))


def test_etth1_persistence_metrics_reproduce_published_repeat_row(data_dir):
    """Persistence ("Repeat") on ETTh1, input 96, horizon 96: MSE 1.295, MAE 0.713 in the
    DLinear paper (Zeng et al., AAAI 2023, table 2), over steps 1..96 of every test window.
    The model is configured for horizon 336 and scored on the horizon-96 windows."""
    config = ForecastConfig(dataset="etth1", model="persistence", input_len=96, horizon=336,
                            data_dir=str(data_dir))
    metrics = horizon_metrics(Persistence(), config, [96, 336])
    assert metrics[96]["mse"] == pytest.approx(1.295, abs=0.005)
    assert metrics[96]["mae"] == pytest.approx(0.713, abs=0.005)
    with open(data_dir / "forecast" / "ETTh1.csv") as fh:
        raw = np.array([[float(r[c]) for c in ETTH1_COLUMNS] for r in csv.DictReader(fh)])
    norm = (raw - raw[:8640].mean(axis=0)) / raw[:8640].std(axis=0)
    starts = np.arange(11520 - 96, 14400 - 96 - 336 + 1)  # every horizon-336 test window
    errors = np.stack([norm[s + 96:s + 96 + 336] - norm[s + 95] for s in starts])
    assert metrics[336]["mse"] == pytest.approx(float((errors ** 2).mean()), rel=1e-5)
    assert metrics[336]["mae"] == pytest.approx(float(np.abs(errors).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="eval horizon 400"):
        horizon_metrics(Persistence(), config, [400])
