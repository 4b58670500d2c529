"""The lander residual on flight logs raysign has never used (issue #19, item 4): logs made here
by a vehicle that is not raysign's environment, fitted through ``raysign lander fit`` and through
Python, and the export evaluated by a Python that never imports raysign.

The vehicle (simulated here in plain numpy, nothing from raysign): mass 0.8 kg, instant motors,
the classical Cheeseman-Bennett ground effect without raysign's gain or clamp, on a rotor of
radius R = 0.12 m whose plane sits h0 = 0.06 m above the skids,

    T_eff = T / (1 - (R / (4 (z + h0)))^2),        (33% extra lift on the ground)

linear drag -0.15 v (N), and sensors with noise: height +- 3 mm (read 0 below 0), velocity
0.03 m/s, thrust 2% (rotor-speed estimate), accelerometer 0.3 m/s^2. A PD loop flies random
smooth references between -5 cm and 80 cm (so it lands, sits and takes off) with a random
thrust excitation; logs at 100 Hz. The true curve is ``(ratio(z) - 1) g`` at rest and hover
thrust.

    python scripts/bench_lander_user_logs.py [--flights 12] [--duration 20] [--steps 2000] \
        [--gamma 4]
    python scripts/bench_lander_user_logs.py --bad-inputs --out runs/lander_bad_inputs

Prints the learned curve against the true one (RMSE over 0-50 cm), the Lipschitz bound, and the
plain ``torch.jit.load`` outputs against raysign's; writes ``flights.csv``, ``truth.csv`` and
``summary.json`` to ``--out`` (default ``runs/bench_lander_user_logs``).
``--bad-inputs`` instead writes bad logs to ``--out`` and prints what ``raysign lander fit``
says to each (docs/lander.md, "On your own data").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MASS, G, RADIUS, SKID, DRAG = 0.8, 9.81, 0.12, 0.06, 0.15


def ratio(z: np.ndarray) -> np.ndarray:
    x = RADIUS / (4.0 * (np.asarray(z) + SKID))
    return 1.0 / (1.0 - x * x)


def true_curve(heights: np.ndarray) -> np.ndarray:
    """``f_a / m`` at rest and hover thrust ``m g`` (m/s^2)."""
    return (ratio(heights) - 1.0) * G


def fly(flights: int, duration: float, seed: int) -> pd.DataFrame:
    """The logs of ``flights`` random flights of the vehicle above (100 Hz)."""
    rng = np.random.default_rng(seed)
    dt, rows = 0.01, []
    for _ in range(flights):
        freqs = rng.uniform(0.05, 0.3, 3) * 2 * np.pi
        phases = rng.uniform(0, 2 * np.pi, 3)
        weights = rng.dirichlet(np.ones(3))
        low, high = -0.05, 0.8
        z, v, excitation = float(rng.uniform(0.0, 0.8)), 0.0, 0.0
        for k in range(int(duration / dt)):
            arg = freqs * k * dt + phases
            z_ref = 0.5 * (low + high) + 0.5 * (high - low) * float(weights @ np.sin(arg))
            v_ref = 0.5 * (high - low) * float(weights @ (freqs * np.cos(arg)))
            excitation += -0.02 * excitation + 0.02 * rng.standard_normal()
            thrust = MASS * (G - 4.0 * (z - z_ref) - 4.0 * (v - v_ref)) * (1 + excitation)
            thrust = float(np.clip(thrust, 0.0, 2.5 * MASS * G))
            accel = (thrust * ratio(z) - DRAG * v) / MASS - G
            v_new = v + accel * dt
            z_new = z + v_new * dt
            if z_new <= 0.0:
                z_new, v_new = 0.0, max(v_new, 0.0)
            rows.append((max(z + 0.003 * rng.standard_normal(), 0.0),
                         v + 0.03 * rng.standard_normal(),
                         thrust * (1 + 0.02 * rng.standard_normal()),
                         (v_new - v) / dt + 0.3 * rng.standard_normal()))
            z, v = z_new, v_new
    return pd.DataFrame(rows, columns=["height", "velocity", "thrust", "acceleration"])


PLAIN = r"""
import sys
import numpy as np
import torch
extra = {"lipschitz.json": ""}
m = torch.jit.load(sys.argv[1], _extra_files=extra)
np.save(sys.argv[3], m(torch.from_numpy(np.load(sys.argv[2]))).detach().numpy())
print(extra["lipschitz.json"].decode())
print("raysign imported:", any(k.startswith("raysign") for k in sys.modules))
"""


def bad_inputs(out: Path) -> None:
    """Bad logs in ``out`` and the one-line message ``raysign lander fit`` gives for each."""
    rng = np.random.default_rng(0)
    z, thrust = rng.uniform(0.01, 0.15, 300), rng.uniform(12, 16, 300)
    good = pd.DataFrame({"height": z, "velocity": rng.normal(0, 0.2, 300), "thrust": thrust,
                         "acceleration": thrust / 1.47 - 9.81})
    good.to_csv(out / "ok.csv", index=False)
    (out / "empty.csv").write_text("")
    (out / "binary.csv").write_bytes(bytes(range(256)) * 4)
    good.rename(columns={"height": "heigth"}).to_csv(out / "misspelled.csv", index=False)
    good.drop(columns=["velocity"]).to_csv(out / "novel.csv", index=False)
    edits = {"nan.csv": ([5, 9], "velocity", np.nan), "text.csv": ([2], "thrust", "12,5"),
             "neg.csv": ([9], "height", -0.02), "negT.csv": ([4], "thrust", -1.0)}
    for name, (rows, column, value) in edits.items():
        frame = good.astype({column: object}) if isinstance(value, str) else good.copy()
        frame.loc[rows, column] = value
        frame.to_csv(out / name, index=False)
    high = good.copy()
    high["height"] = high["height"] + 0.3
    high.loc[:49, "height"] = 0.1
    high.to_csv(out / "high.csv", index=False)
    cases = [("nope.csv", []), ("empty.csv", []), ("binary.csv", []), ("misspelled.csv", []),
             ("ok.csv", ["--accel-col", "accel"]), ("novel.csv", []), ("nan.csv", []),
             ("text.csv", []), ("neg.csv", []), ("negT.csv", []), ("high.csv", []),
             ("ok.csv", ["--mass", "0"]), ("ok.csv", ["--true-curve", "ok.csv"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, extra in cases:
        done = subprocess.run([sys.executable, "-m", "raysign.cli", "lander", "fit", "--logs",
                               name, *extra], cwd=out, env=env, capture_output=True, text=True)
        print(f"{name} {' '.join(extra)} | rc {done.returncode} | {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flights", type=int, default=12)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--gamma", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="runs/bench_lander_user_logs")
    parser.add_argument("--bad-inputs", action="store_true",
                        help="print the messages of raysign lander fit on bad logs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.bad_inputs:
        bad_inputs(out)
        return
    logs = fly(args.flights, args.duration, args.seed)
    logs.to_csv(out / "flights.csv", index=False)
    grid = np.round(np.arange(0.0, 0.5 + 1e-9, 0.005), 6)
    pd.DataFrame({"height": grid, "residual": true_curve(grid)}).to_csv(out / "truth.csv",
                                                                         index=False)
    print(f"{len(logs)} rows, {int((logs['height'] < 0.2).sum())} below 0.2 m, "
          f"{int((logs['height'] <= 0.01).sum())} at or below 1 cm")
    options = ["--mass", str(MASS), "--ground-height", "0.01", "--steps", str(args.steps),
               "--gamma", str(args.gamma)]

    # 1. The command line, as a user runs it.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "raysign.cli", "lander", "fit", "--logs",
                          str(out / "flights.csv"), *options, "--true-curve",
                          str(out / "truth.csv"), "--results-dir", str(out / "runs")],
                         env=env, capture_output=True, text=True, check=True)
    print(cli.stdout)
    run_dir = Path(cli.stdout.split("results: ")[1].split()[0])
    cli_report = json.loads((run_dir / "fit.json").read_text())
    cli_seconds = time.perf_counter() - start

    # 2. Python, the same fit.
    import torch

    sys.path.insert(0, str(ROOT))
    from raysign.lander.fitting import fit_residual_from_logs

    torch.set_num_threads(1)
    frame = pd.read_csv(out / "flights.csv")
    fit = fit_residual_from_logs(frame, mass=MASS, ground_height=0.01, steps=args.steps,
                                 gamma=args.gamma, true_curve=true_curve)
    curve = fit.curve
    zero_rmse = float(np.sqrt(np.mean(curve["true"] ** 2)))
    error = curve["residual"] - curve["true"]
    below_2cm = curve["height"] < 0.02 - 1e-9

    # 3. The CLI's export in a Python that never imports raysign, against raysign's model.
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(0, 0.5, 256), rng.normal(0, 0.3, 256),
                  rng.uniform(0.7, 1.3, 256) * MASS * G], 1).astype(np.float32)
    np.save(out / "x.npy", x)
    plain_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    plain = subprocess.run([sys.executable, "-I", "-c", PLAIN, str(run_dir / "residual.pt"),
                            str(out / "x.npy"), str(out / "y.npy")], env=plain_env,
                           capture_output=True, text=True, check=True)
    stored = json.loads(plain.stdout[:plain.stdout.rindex("}") + 1])
    from raysign.lander.residual import FeatureScales, ResidualNet

    net = ResidualNet(width=64, depth=4, gamma=args.gamma, scales=FeatureScales(mass=MASS))
    state = torch.jit.load(str(run_dir / "residual.pt")).state_dict()
    with torch.no_grad():  # raysign's network carrying the exported (normalised) weights
        for k, layer in enumerate(net.layers):
            layer.weight.copy_(state[f"layers.{k}.weight"])
            layer.bias.copy_(state[f"layers.{k}.bias"])
        ours = net(torch.as_tensor(net.scales.features(*x.T.astype(np.float64)))).numpy()
    max_diff = float(np.abs(np.load(out / "y.npy") - ours).max())

    summary = {
        "rows": len(logs), "cli_rmse": cli_report["curve_rmse"],
        "cli_lipschitz": cli_report["lipschitz_product"], "cli_seconds": cli_seconds,
        "python_rmse": fit.report["curve_rmse"],
        "python_rmse_0_2cm": float(np.sqrt(np.mean(error[below_2cm] ** 2))),
        "python_rmse_2_50cm": float(np.sqrt(np.mean(error[~below_2cm] ** 2))),
        "python_lipschitz":
        fit.report["lipschitz_product"], "zero_curve_rmse": zero_rmse,
        "samples": fit.report["samples"], "near_ground_samples":
        fit.report["near_ground_samples"], "plain_torch_max_abs_diff": max_diff,
        "plain_torch_stored_lipschitz": stored["lipschitz_product"],
        "plain_torch_raysign_imported": plain.stdout.strip().endswith("True"),
        "curve": {f"{h:.2f}": [float(a), float(b)] for h, a, b in
                  zip(curve["height"], curve["residual"], curve["true"], strict=True)
                  if round(h * 100) % 5 == 0}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'height m':>8s} {'python f/m':>10s} {'true f/m':>9s}")
    for h, (a, b) in summary["curve"].items():
        print(f"{h:>8s} {a:10.4f} {b:9.4f}")
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
