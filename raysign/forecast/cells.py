"""Tensor-Train RNN and LSTM cells (Yu, Zheng, Anandkumar, Yue, "Long-term forecasting using
higher order tensor RNNs", arXiv:1711.00073).

The cell keeps the last ``L`` hidden vectors and forms the augmented state
``s = [1, h_{t-1}, ..., h_{t-L}]`` (dimension ``D = L * H + 1``; the leading 1 is the bias entry,
so the polynomial holds every order from 0 to ``p``). The order-``p`` transition (eq. 3)

    g_a = sum_{i_1..i_p} W_{i_1 ... i_p a} s_{i_1} ... s_{i_p}

uses a weight tensor in tensor-train form (eq. 5)

    W_{i_1 ... i_p a} = sum_{b} G1[1, i_1, b_1] G2[b_1, i_2, b_2] ... Gp[b_{p-1}, i_p, a]

with ranks ``r_1 .. r_{p-1}`` (per core). It is contracted core by core,

    v_1 = s G1,   v_k[b'] = sum_{b, i} v_{k-1}[b] Gk[b, i, b'] s_i,

at a cost of ``O(p D r^2)`` per sample: the ``D^p`` outer product ``s (x) ... (x) s`` that the
TensorFlow reference code builds is never formed.

Initialisation (stability of long rollouts): the bias entry of the first core feeds bond 0
and every inner core passes its bonds through unchanged on the bias entry, so at the start the
transition is the dense first-order map ``Gp[0]^T s`` of a matrix RNN (std ``1/sqrt(D)``, gain
about one) and every product of hidden states enters with a small weight
(``HIGHER_ORDER_SCALE``). Higher-order terms, which would otherwise multiply hidden states into
saturated gates over hundreds of fed-back steps, grow only as training asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

HIGHER_ORDER_SCALE = 0.5  # std of the higher-order entries, relative to 1/sqrt(D)


def _ranks(order: int, rank: int | Sequence[int]) -> list[int]:
    if order < 1:
        raise ValueError(f"order={order} must be >= 1")
    if isinstance(rank, int):
        ranks = [rank] * (order - 1)
    else:
        ranks = [int(r) for r in rank]
    if len(ranks) != order - 1 or any(r < 1 for r in ranks):
        raise ValueError(f"rank={rank!r} must be a positive int or {order - 1} positive ints "
                         f"(one per inner bond of an order-{order} tensor train)")
    return ranks


class TTTransition(nn.Module):
    """Order-``p`` polynomial map ``s [B, D] -> [B, out_dim]`` with a tensor-train weight."""

    def __init__(self, state_dim: int, out_dim: int, order: int,
                 rank: int | Sequence[int]) -> None:
        super().__init__()
        self.state_dim, self.out_dim, self.order = state_dim, out_dim, order
        self.ranks = _ranks(order, rank)
        bonds = [1, *self.ranks, out_dim]
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(bonds[k], state_dim, bonds[k + 1])) for k in range(order))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as a first-order matrix RNN plus small higher-order terms: the bias slot of the
        first core maps to bond 0 and every inner core passes bond b -> b on the bias slot, so
        the constant part of the first ``p - 1`` contractions is the unit vector e_0 and the
        output is ``Gp[0]^T s`` (a dense matrix, std 1/sqrt(D)) plus terms of relative size
        ``HIGHER_ORDER_SCALE``."""
        d, small = self.state_dim, HIGHER_ORDER_SCALE * self.state_dim ** -0.5
        for core in self.cores:
            nn.init.normal_(core, std=small)
        if self.order == 1:
            nn.init.normal_(self.cores[0], std=d ** -0.5)
            return
        self.cores[0][0, 0, :] = 0.0
        self.cores[0][0, 0, 0] = 1.0
        for core in list(self.cores)[1:-1]:
            core[:, 0, :] = torch.eye(core.shape[0], core.shape[2])
        nn.init.normal_(self.cores[-1][0], std=d ** -0.5)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, D] (first entry 1) -> [B, out_dim], contracted core by core."""
        v = state @ self.cores[0][0]  # [B, r_1]
        for core in list(self.cores)[1:]:
            r_in, d, r_out = core.shape
            # v_k = (v_{k-1} (x) s) Gk: the outer product of the bond vector and the state is
            # only r_in * D wide, and one matmul contracts both indices (about 6x faster on
            # CPU than contracting the bond first into a [B, D, r_out] intermediate).
            v = (v.unsqueeze(2) * state.unsqueeze(1)).flatten(1) @ core.reshape(r_in * d, r_out)
        return v

    def dense_tensor(self) -> torch.Tensor:
        """The full weight ``W`` [D, ..., D, out_dim] (``p`` state axes); for tests only."""
        full = self.cores[0][0]  # [D, r_1]
        for core in list(self.cores)[1:]:
            full = torch.tensordot(full, core, dims=([full.dim() - 1], [0]))
        return full

    def extra_repr(self) -> str:
        return f"D={self.state_dim}, out={self.out_dim}, order={self.order}, ranks={self.ranks}"


def augmented_state(window: torch.Tensor) -> torch.Tensor:
    """``window`` [B, L, H] (most recent first) -> ``s = [1, h_{t-1}, ..., h_{t-L}]`` [B, LH+1]."""
    ones = window.new_ones(window.shape[0], 1)
    return torch.cat([ones, window.flatten(1)], dim=1)


class TTRNNCell(nn.Module):
    """``h_t = tanh(W_x x_t + TT(s_{t-1}))``; the state is the window of the last L hidden
    vectors [B, L, H]. With ``order=1`` this is the first-order matrix RNN (MRNN)."""

    gates = 1

    def __init__(self, input_dim: int, hidden_size: int, lags: int, order: int,
                 rank: int | Sequence[int]) -> None:
        super().__init__()
        if lags < 1 or hidden_size < 1:
            raise ValueError(f"lags={lags} and hidden_size={hidden_size} must be >= 1")
        self.input_dim, self.hidden_size, self.lags, self.order = (
            input_dim, hidden_size, lags, order)
        self.input_map = nn.Linear(input_dim, self.gates * hidden_size, bias=False)
        self.transition = TTTransition(lags * hidden_size + 1, self.gates * hidden_size,
                                       order, rank)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple:
        return (torch.zeros(batch, self.lags, self.hidden_size, device=device),)

    def pre_activation(self, x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        return self.input_map(x) + self.transition(augmented_state(window))

    @staticmethod
    def push(window: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Shift the lag window: ``h`` becomes lag 1, the oldest vector drops out."""
        return torch.cat([h.unsqueeze(1), window[:, :-1]], dim=1)

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """``x`` [B, input_dim] -> (h [B, H], new state)."""
        (window,) = state
        h = torch.tanh(self.pre_activation(x, window))
        return h, (self.push(window, h),)


class TTLSTMCell(TTRNNCell):
    """LSTM whose four gates come from the tensor-train transition of the lagged hidden states
    (the paper's TLSTM); the memory cell ``c`` stays first order. ``order=1`` gives the
    matrix LSTM (MLSTM) baseline."""

    gates = 4

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return (torch.zeros(batch, self.lags, self.hidden_size, device=device), zeros)

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        window, c = state
        i, f, g, o = self.pre_activation(x, window).chunk(4, dim=1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)  # forget bias +1
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (self.push(window, h), c)


class LSTMCell(nn.Module):
    """``torch.nn.LSTMCell`` behind the same (x, state) -> (h, state) interface."""

    def __init__(self, input_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.input_dim, self.hidden_size = input_dim, hidden_size
        self.cell = nn.LSTMCell(input_dim, hidden_size)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return (zeros, zeros.clone())

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        h, c = self.cell(x, state)
        return h, (h, c)
