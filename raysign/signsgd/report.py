"""What a distributed signSGD run shows: its figures.

``accuracy.png`` is test accuracy against steps; ``time_split.png`` stacks the mean time per
step of the five stages of a round (Bernstein et al. 2019, Section 5: compress, gather, vote,
broadcast, decompress), as measured by ``raysign.actors.trainer``.
"""

from __future__ import annotations

import numpy as np

from raysign.results import RunDir

STAGES = ("compress", "gather", "vote", "broadcast", "decompress")


def write_figures(run_dir: RunDir, records: list[dict], curve: list[tuple[int, float]],
                  title: str) -> None:
    """accuracy.png (test accuracy against steps) and time_split.png (the five stages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if curve:
        steps, acc = zip(*curve, strict=True)
        ax.plot(steps, acc, marker="o")
    ax.set(xlabel="step", ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir.file("accuracy.png"), dpi=120)
    plt.close(fig)

    steady = records[min(2, len(records) - 1):]
    means = [1e3 * float(np.mean([r[k] for r in steady])) for k in STAGES]
    fig, ax = plt.subplots(figsize=(4, 5))
    bottom = 0.0
    for stage, ms in zip(STAGES, means, strict=True):
        ax.bar(["per step"], [ms], bottom=bottom, label=f"{stage} ({ms:.1f} ms)")
        bottom += ms
    ax.set(ylabel="milliseconds per step", title="communication time split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir.file("time_split.png"), dpi=120)
    plt.close(fig)
