"""The theory's diagnostics on a real model: gradient density and per-coordinate SNR.

Bernstein et al. (ICML 2018) explain when signSGD matches SGD with two quantities:
the density phi(v) = |v|_1^2 / (d |v|_2^2) of the gradient, stochastic gradient and
curvature (signSGD does well when they are dense), and the per-coordinate signal-to-noise
ratio S_i = |g_i| / sigma_i, with the critical value 2/sqrt(3) of Theorem 1 above which the
sign of a single mini-batch gradient is right with good probability.

This script trains the main job's CNN with Signum in one process (no Ray) and, at a few
checkpoints, draws ``--samples`` mini-batch gradients to estimate the full-batch gradient's
density, the stochastic gradients' density, and the SNR of every coordinate. Writes
``diagnostics.csv`` and ``diagnostics.png`` to ``runs/diagnose_signsgd_gradients/<timestamp>/``.

    python scripts/diagnose_signsgd_gradients.py --steps 300 --samples 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.results import RunDir  # noqa: E402
from raysign.signs import (  # noqa: E402
    CRITICAL_SNR,
    fraction_above_critical_snr,
    gradient_density,
    pack_signs,
    signal_to_noise,
)
from raysign.signsgd.config import SignSGDConfig  # noqa: E402
from raysign.signsgd.replica import Replica  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--samples", type=int, default=32, help="gradients per estimate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--results-dir", default="runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SignSGDConfig(dataset=args.dataset, model=args.model, num_workers=1,
                         batch_size=args.batch_size, lr=1e-3, momentum=0.9)
    from raysign.data import load_images

    train, _ = load_images(config.dataset, config.data_dir)
    replica = Replica(config, 0, train.images, train.labels)
    out = RunDir.create(args.results_dir, "diagnose_signsgd_gradients")
    at = set(np.linspace(0, args.steps, args.checkpoints).astype(int).tolist())
    rows = []
    for step in range(args.steps + 1):
        if step in at:
            samples = torch.stack([replica.gradient()[0] for _ in range(args.samples)])
            snr = signal_to_noise(samples)
            mean = samples.mean(0)
            row = {"step": step, "d": replica.d,
                   "density_mean_gradient": gradient_density(mean),
                   "density_stochastic_gradient": float(np.mean(
                       [gradient_density(g) for g in samples[:8]])),
                   "median_snr": float(snr.nan_to_num(0.0).median()),
                   "fraction_above_critical_snr": fraction_above_critical_snr(snr)}
            rows.append(row)
            print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in row.items()), flush=True)
        if step < args.steps:
            grad, _ = replica.gradient()
            replica.apply_signs(pack_signs(replica.momentum_and_attack(grad)))
    out.write_csv("diagnostics.csv", rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in rows]
    for key in ("density_mean_gradient", "density_stochastic_gradient",
                "fraction_above_critical_snr"):
        ax.plot(steps, [r[key] for r in rows], marker="o", label=key.replace("_", " "))
    ax.set(xlabel="Signum step", ylim=(0, 1),
           title=f"{args.model} on {args.dataset} (critical SNR {CRITICAL_SNR:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.file("diagnostics.png"), dpi=120)
    print(f"results: {out.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
