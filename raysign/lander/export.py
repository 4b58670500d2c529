"""The trained residual as a file another program loads without raysign: a TorchScript archive
with its certified Lipschitz bound beside it (Shi et al., ICRA 2019, sec. IV).

``export_residual(net, path)`` writes ``path`` (``torch.jit.save`` of a scripted module) and
``path`` with the suffix ``.json`` (the metadata); the same JSON is also inside the archive as
the extra file ``lipschitz.json``. Anyone with torch alone evaluates it:

    m = torch.jit.load("residual.pt")
    a = m(torch.tensor([[z, v, T]]))     # [N, 3] height m, velocity m/s, thrust N -> [N] m/s^2

The module divides its inputs by the feature scales ``(z_scale, v_scale, m g)`` and applies the
network's layers with their effective (spectrally normalised) weights frozen, so it returns the
same residual acceleration ``f_hat / m`` as ``ResidualNet`` on the scaled features. The bound
``lipschitz_product = prod_l ||W_l||_2`` holds in the scaled units; in the physical inputs
(Euclidean norm) it is at most ``lipschitz_product / min(scales)`` (``lipschitz_inputs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raysign.lander.residual import ResidualNet

FORMAT = "raysign-lander-residual/1"
EXTRA_FILE = "lipschitz.json"


class FrozenResidual(nn.Module):
    """``[N, 3]`` (height m, velocity m/s, thrust N) -> ``[N]`` residual acceleration (m/s^2):
    a plain ReLU MLP with fixed weights behind a fixed input scaling (TorchScript-able)."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 scales: tuple[float, float, float]):
        super().__init__()
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases, strict=True):
            layer = nn.Linear(w.shape[1], w.shape[0])
            layer.weight = nn.Parameter(w.detach().clone().float(), requires_grad=False)
            layer.bias = nn.Parameter(b.detach().clone().float(), requires_grad=False)
            self.layers.append(layer)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.last = len(weights) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / self.scales
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < self.last:
                x = torch.relu(x)
        return x.squeeze(-1)


@torch.no_grad()
def residual_metadata(net: ResidualNet) -> dict[str, Any]:
    """What the export records beside the module: inputs, output, scales, each layer's exact
    spectral norm (float64), their product and the bounds derived from it."""
    s = net.scales
    norms = [float(torch.linalg.matrix_norm(w.double(), ord=2))
             for w in net.effective_weights()]
    product = float(np.prod(norms))
    scales = (s.z_scale, s.v_scale, s.thrust_scale)
    return {"format": FORMAT,
            "inputs": ["height (m)", "vertical velocity (m/s)", "thrust (N)"],
            "output": "residual acceleration f_a / m (m/s^2)",
            "input_scales": list(scales), "mass": s.mass, "gamma": net.gamma,
            "layer_spectral_norms": norms, "lipschitz_product": product,
            "lipschitz_inputs": product / min(scales),
            "thrust_lipschitz_bound": s.mass * product / s.thrust_scale}


@torch.no_grad()
def export_residual(net: ResidualNet, path: str | Path) -> dict[str, Any]:
    """Write ``net`` as TorchScript to ``path`` and its metadata (``residual_metadata``) to
    ``path.with_suffix('.json')`` and into the archive; returns the metadata."""
    path = Path(path)
    net = net.cpu()
    frozen = FrozenResidual(list(net.effective_weights()),
                            [layer.bias for layer in net.layers],
                            (net.scales.z_scale, net.scales.v_scale, net.scales.thrust_scale))
    metadata = residual_metadata(net)
    text = json.dumps(metadata, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(frozen), str(path), _extra_files={EXTRA_FILE: text})
    path.with_suffix(".json").write_text(text + "\n")
    return metadata


def load_residual(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """The exported module and the metadata stored inside it (what any torch program does)."""
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[EXTRA_FILE])
