"""The learned residual ``f_a(z, v, T)``: a ReLU MLP whose Lipschitz constant is bounded by
spectral normalisation (Shi et al., ICRA 2019, sec. IV, eq. (5)-(6); Miyato et al., ICLR 2018).

With ``L`` linear layers and 1-Lipschitz ReLUs, ``Lip(f) <= prod_l ||W_l||_2``. Every layer's
weight is used as ``W_l / max(1, ||W_l||_2 / gamma^(1/L))``, so the product of the exact
spectral norms, and thus the network's Lipschitz constant, is at most ``gamma``. The norm is
the exact largest singular value (``torch.linalg.matrix_norm(W, 2)``), not a power-iteration
estimate, so the bound holds at every step; ``lipschitz_product`` recomputes it after training.

The network reads fixed-scale features ``(z / z_scale, v / v_scale, T / (m g))`` and returns the
residual acceleration ``f_a / m`` (m/s^2). The bound is in these units; the Lipschitz constant
of ``f_a`` (N) in the thrust ``T`` (N), which decides the controller's fixed-point contraction,
is therefore at most ``m * gamma / (m g) = gamma / g``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raysign.config import check_range
from raysign.lander.env import GRAVITY


@dataclass(frozen=True)
class FeatureScales:
    """Input scaling of the residual network: heights in ``z_scale`` metres, velocities in
    ``v_scale`` m/s and thrust in units of the weight ``m g``."""

    mass: float = 1.47
    z_scale: float = 0.1
    v_scale: float = 1.0

    def features(self, z: np.ndarray, v: np.ndarray, thrust: np.ndarray) -> np.ndarray:
        """``float32 [N, 3]`` features of arrays of ``z`` (m), ``v`` (m/s), ``T`` (N)."""
        return np.stack([np.asarray(z) / self.z_scale, np.asarray(v) / self.v_scale,
                         np.asarray(thrust) / (self.mass * GRAVITY)], axis=-1).astype(np.float32)

    @property
    def thrust_scale(self) -> float:
        return self.mass * GRAVITY


class ResidualNet(nn.Module):
    """ReLU MLP ``3 -> width x (depth - 1) -> 1`` with optional spectral normalisation.

    ``gamma=None`` gives the unnormalised variant. ``forward`` takes features ``[N, 3]`` and
    returns the residual acceleration ``[N]`` (m/s^2).
    """

    def __init__(self, width: int = 64, depth: int = 4, gamma: float | None = 4.0,
                 scales: FeatureScales | None = None):
        super().__init__()
        check_range("width", width, 1, 4096)
        check_range("depth", depth, 2, 16)
        if gamma is not None:
            check_range("gamma", gamma, 0.0, None, low_open=True)
        self.gamma = gamma
        self.scales = scales or FeatureScales()
        sizes = [3] + [width] * (depth - 1) + [1]
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)

    @property
    def layer_bound(self) -> float | None:
        """The per-layer spectral bound ``gamma^(1/L)`` (None without normalisation)."""
        return None if self.gamma is None else self.gamma ** (1.0 / len(self.layers))

    def effective_weights(self) -> list[torch.Tensor]:
        """The weights the forward pass uses: ``W / max(1, ||W||_2 / gamma^(1/L))``."""
        if self.gamma is None:
            return [layer.weight for layer in self.layers]
        bound = self.layer_bound
        out = []
        for layer in self.layers:
            sigma = torch.linalg.matrix_norm(layer.weight, ord=2)
            out.append(layer.weight / torch.clamp(sigma / bound, min=1.0))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.effective_weights()
        for k, (layer, w) in enumerate(zip(self.layers, weights, strict=True)):
            x = torch.nn.functional.linear(x, w, layer.bias)
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)

    @torch.no_grad()
    def lipschitz_product(self) -> float:
        """``prod_l ||W_l||_2`` of the effective weights, with exact singular values (float64)."""
        norms = [torch.linalg.matrix_norm(w.double(), ord=2).item()
                 for w in self.effective_weights()]
        return float(np.prod(norms))

    def thrust_lipschitz_bound(self) -> float:
        """Certified bound on ``|d f_a / d T|`` (N per N): ``m * Lip / (m g)``. The controller's
        fixed-point iteration contracts when this is below 1."""
        return self.scales.mass * self.lipschitz_product() / self.scales.thrust_scale

    @torch.no_grad()
    def to_numpy(self) -> NumpyResidual:
        """A frozen float64 copy for fast single-sample evaluation inside control loops."""
        return NumpyResidual([w.detach().double().cpu().numpy() for w in self.effective_weights()],
                             [layer.bias.detach().double().cpu().numpy()
                              for layer in self.layers], self.scales)


class NumpyResidual:
    """The residual ``f_a(z, v, T)`` in newtons, evaluated with numpy (one sample at a time)."""

    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray],
                 scales: FeatureScales):
        self.weights, self.biases, self.scales = weights, biases, scales

    def __call__(self, z: float, v: float, thrust: float) -> float:
        s = self.scales
        x = np.array([z / s.z_scale, v / s.v_scale, thrust / s.thrust_scale])
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = w @ x + b
            if k < last:
                x = np.maximum(x, 0.0)
        return float(x[0]) * s.mass


@dataclass(frozen=True)
class ResidualTraining:
    """How ``train_residual`` fits the residual network: ``steps`` Adam steps on the mean
    squared error of the residual acceleration over mini-batches of ``batch_size`` drawn with
    ``seed``, learning rate ``lr`` (cosine-decayed)."""

    steps: int = 3000
    batch_size: int = 1024
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("steps", self.steps, 1, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("lr", self.lr, 0.0, 1.0, low_open=True)


def train_residual(net: ResidualNet, features: np.ndarray, targets: np.ndarray,
                   settings: ResidualTraining = ResidualTraining(),
                   device: str | None = None) -> list[float]:
    """Fit ``net`` to ``targets`` (``[N]`` residual accelerations, m/s^2) from ``features``
    (``[N, 3]``); returns the loss every 100 steps. Cosine-decayed learning rate."""
    from tqdm import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(settings.seed)
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    y = torch.as_tensor(targets, dtype=torch.float32, device=device)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps)
    losses = []
    for step in tqdm(range(settings.steps), desc="residual", leave=False, mininterval=2.0):
        idx = torch.randint(0, len(x), (min(settings.batch_size, len(x)),),
                            generator=generator).to(device)
        loss = torch.mean((net(x[idx]) - y[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == settings.steps - 1:
            losses.append(loss.item())
    net.cpu()
    return losses
