"""``rgb_array`` rendering of the lander environments: height and thrust against time."""

from __future__ import annotations

import numpy as np


def plot_history(history: np.ndarray, hover_thrust: float, target_height: float,
                 size: tuple[float, float] = (4.0, 3.0), dpi: int = 80) -> np.ndarray:
    """An RGB image ``uint8 [H, W, 3]`` of ``history`` (``[N, 3]``: time, height, thrust)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(history[:, 0], history[:, 1], color="tab:blue")
    top.axhline(target_height, color="gray", lw=0.8, ls="--")
    top.set_ylabel("z (m)")
    bottom.plot(history[:, 0], history[:, 2] / hover_thrust, color="tab:red")
    bottom.axhline(1.0, color="gray", lw=0.8, ls="--")
    bottom.set_ylabel("T / mg")
    bottom.set_xlabel("t (s)")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
