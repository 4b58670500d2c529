"""Forecasters: the sequence-to-sequence recurrent model of Yu et al. (arXiv:1711.00073, sec. 2
and fig. 2) with TT-LSTM / TT-RNN / LSTM / matrix-LSTM cells, and the baselines DLinear (Zeng et
al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023) and persistence.

Every forecaster maps a burn-in window ``history`` [B, T_in, d] to ``horizon`` future steps
[B, horizon, d]. ``build_model`` makes any of them by name; ``match_hidden_size`` picks the
hidden size of a baseline whose parameter count is closest to a target (the TT model's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from raysign.forecast.cells import LSTMCell, TTLSTMCell, TTRNNCell

MODELS = ("ttlstm", "ttrnn", "lstm", "mlstm", "dlinear", "persistence")
RECURRENT = ("ttlstm", "ttrnn", "lstm", "mlstm")


class Seq2SeqForecaster(nn.Module):
    """Encoder over the burn-in window, decoder feeding back its own predictions.

    One recurrent cell reads ``x_1 .. x_T`` (encoder); each output predicts the next value as
    ``x_hat_{t+1} = x_t + readout(h_t)`` (a residual step, which keeps untrained rollouts near
    persistence). The decoder continues the recursion on its own predictions; with
    ``teacher_prob > 0`` (training only) each fed-back input is replaced by the true value with
    that probability (teacher forcing at 1, scheduled sampling in between).
    """

    def __init__(self, cell: nn.Module, dim: int) -> None:
        super().__init__()
        self.cell = cell
        self.readout = nn.Linear(cell.hidden_size, dim)
        nn.init.zeros_(self.readout.bias)
        nn.init.normal_(self.readout.weight, std=0.01)

    def forward(self, history: torch.Tensor, horizon: int, target: torch.Tensor | None = None,
                teacher_prob: float = 0.0) -> torch.Tensor:
        """``history`` [B, T_in, d] -> predictions [B, horizon, d]."""
        batch, steps, _ = history.shape
        state = self.cell.initial_state(batch, history.device)
        for t in range(steps - 1):
            _, state = self.cell(history[:, t], state)
        x = history[:, -1]
        outputs = []
        for k in range(horizon):
            h, state = self.cell(x, state)
            pred = x + self.readout(h)
            outputs.append(pred)
            x = pred
            if target is not None and teacher_prob > 0.0:
                use_truth = torch.rand(batch, 1, device=history.device) < teacher_prob
                x = torch.where(use_truth, target[:, k], pred)
        return torch.stack(outputs, dim=1)


class DLinear(nn.Module):
    """Moving-average trend + remainder, each mapped to the horizon by one linear layer over
    time, shared by all channels (DLinear, Zeng et al. 2023, sec. 4)."""

    def __init__(self, input_len: int, horizon: int, kernel: int = 25) -> None:
        super().__init__()
        self.kernel, self.horizon = kernel, horizon
        self.trend = nn.Linear(input_len, horizon)
        self.seasonal = nn.Linear(input_len, horizon)
        for layer in (self.trend, self.seasonal):
            nn.init.constant_(layer.weight, 1.0 / input_len)
            nn.init.zeros_(layer.bias)

    def moving_average(self, x: torch.Tensor) -> torch.Tensor:
        """Edge-padded moving average over time; ``x`` [B, T, d] -> [B, T, d]."""
        front = x[:, :1].repeat(1, (self.kernel - 1) // 2, 1)
        back = x[:, -1:].repeat(1, self.kernel // 2, 1)
        padded = torch.cat([front, x, back], dim=1).transpose(1, 2)
        return nn.functional.avg_pool1d(padded, self.kernel, stride=1).transpose(1, 2)

    def forward(self, history: torch.Tensor, horizon: int, target: torch.Tensor | None = None,
                teacher_prob: float = 0.0) -> torch.Tensor:
        if horizon > self.horizon:
            raise ValueError(f"horizon={horizon} exceeds the trained horizon {self.horizon}")
        trend = self.moving_average(history)
        season = history - trend
        out = self.trend(trend.transpose(1, 2)) + self.seasonal(season.transpose(1, 2))
        return out.transpose(1, 2)[:, :horizon]


class Persistence(nn.Module):
    """Repeats the last observed value (no parameters)."""

    def forward(self, history: torch.Tensor, horizon: int, target: torch.Tensor | None = None,
                teacher_prob: float = 0.0) -> torch.Tensor:
        return history[:, -1:].expand(-1, horizon, -1).clone()


def window_statistics(history: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Per-window, per-channel location and scale of ``history`` [B, T, d]: the mean over time
    and the (population) standard deviation plus ``eps``, each [B, 1, d]. Only the burn-in
    window is read, so a forecast never sees statistics of its own targets."""
    mean = history.mean(dim=1, keepdim=True)
    scale = history.std(dim=1, unbiased=False, keepdim=True) + eps
    return mean, scale


def normalise(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Data units -> the window's own units: ``(x - mean) / scale`` (broadcast over time)."""
    return (x - mean) / scale


def denormalise(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The window's own units -> data units; inverts ``normalise`` for the same statistics."""
    return x * scale + mean


class InstanceNormalised(nn.Module):
    """Wraps a forecaster so that it sees every window in its own units: each channel of the
    burn-in window is shifted by its mean and scaled by its standard deviation, the inner model
    forecasts in those units and the forecast is mapped back (RevIN without the learned affine
    map; Kim et al., "Reversible instance normalization for accurate time-series forecasting
    against distribution shift", ICLR 2022). ETTh1's test months sit at other levels than its
    training months; without this a recurrent model learns to revert to the training mean."""

    def __init__(self, model: nn.Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.model, self.eps = model, eps

    def forward(self, history: torch.Tensor, horizon: int, target: torch.Tensor | None = None,
                teacher_prob: float = 0.0) -> torch.Tensor:
        mean, scale = window_statistics(history, self.eps)
        scaled_target = None if target is None else normalise(target, mean, scale)
        out = self.model(normalise(history, mean, scale), horizon, target=scaled_target,
                         teacher_prob=teacher_prob)
        return denormalise(out, mean, scale)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(name: str, dim: int, *, hidden_size: int = 16, lags: int = 3, order: int = 3,
                rank: int | list[int] = 4, input_len: int = 24, horizon: int = 24,
                instance_norm: bool = False) -> nn.Module:
    """A forecaster by name (one of ``MODELS``); ``dim`` is the number of channels;
    ``instance_norm`` wraps it in ``InstanceNormalised`` (persistence is unaffected by it)."""
    model = _build(name, dim, hidden_size=hidden_size, lags=lags, order=order, rank=rank,
                   input_len=input_len, horizon=horizon)
    return InstanceNormalised(model) if instance_norm and name != "persistence" else model


def _build(name: str, dim: int, *, hidden_size: int, lags: int, order: int,
           rank: int | list[int], input_len: int, horizon: int) -> nn.Module:
    if name == "ttlstm":
        return Seq2SeqForecaster(TTLSTMCell(dim, hidden_size, lags, order, rank), dim)
    if name == "ttrnn":
        return Seq2SeqForecaster(TTRNNCell(dim, hidden_size, lags, order, rank), dim)
    if name == "mlstm":
        return Seq2SeqForecaster(TTLSTMCell(dim, hidden_size, lags, 1, []), dim)
    if name == "lstm":
        return Seq2SeqForecaster(LSTMCell(dim, hidden_size), dim)
    if name == "dlinear":
        return DLinear(input_len, horizon)
    if name == "persistence":
        return Persistence()
    raise ValueError(f"model={name!r} is not one of {list(MODELS)}")


def match_hidden_size(build: Callable[[int], nn.Module], target: int,
                      max_hidden: int = 1024) -> int:
    """The hidden size whose model ``build(hidden)`` has the parameter count closest to
    ``target`` (parameter counts grow monotonically with the hidden size)."""
    best, best_gap = 1, None
    for hidden in range(1, max_hidden + 1):
        gap = count_parameters(build(hidden)) - target
        if best_gap is None or abs(gap) < abs(best_gap):
            best, best_gap = hidden, gap
        if gap > 0:
            break
    return best


def matched_baseline(name: str, dim: int, target_params: int, *, lags: int,
                     instance_norm: bool = False) -> nn.Module:
    """LSTM or MLSTM with the hidden size that matches ``target_params`` best."""
    if name not in ("lstm", "mlstm"):
        raise ValueError(f"model={name!r}: only recurrent baselines are matched")
    hidden = match_hidden_size(lambda h: build_model(name, dim, hidden_size=h, lags=lags),
                               target_params)
    return build_model(name, dim, hidden_size=hidden, lags=lags, instance_norm=instance_norm)
