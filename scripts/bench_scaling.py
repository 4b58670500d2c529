"""The step-time model (raysign.costmodel) against the namespace cluster, then at 8-1024 workers.

``validate``: runs ``scripts/bench_signsgd_step.py`` on the network-namespace cluster (root)
for each number of nodes and link rate (communication rounds at ResNet-18 size: vote S = 1,
vote S = M, fp32 parameter server, gloo all-reduce), or reads such runs with ``--runs``, and
sets every measured round beside the model's prediction with the parameters that
``scripts/costmodel_params.py`` measured (``--params``)::

    python scripts/bench_scaling.py validate --nodes 2,3,4,5,6 --rates 1gbit,100mbit
    python scripts/bench_scaling.py validate --runs runs/scaling_validation/bench_signsgd_step

``extrapolate``: the model for M = 8 to 1024 at 10, 25 and 100 Gbit/s with published per-step
compute times (ResNet-50: NVIDIA DeepLearningExamples, 2470 img/s on one A100 80GB with mixed
precision at 256 images per GPU; GPT-2 124M: nanoGPT's README, 135 ms/iter with torch.compile),
time per step, scaling efficiency and crossover points per method::

    python scripts/bench_scaling.py extrapolate

Both write to ``docs/results/scaling/`` (``--out``): validation.csv, extrapolation.csv,
crossovers.json, scaling.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysign.costmodel import (  # noqa: E402
    METHODS,
    LowRankLayout,
    Machine,
    first_crossing,
    powersgd,
    step_time,
)

POWERSGD_RANK = 4
# Paths through Ray actors (CPU processes: kernels at this machine's measured CPU rates, Ray's
# per-call overhead and byte rate); the others are GPU collectives (NCCL), modelled by the link
# alone.
RAY_PATHS = ("vote S=1", "vote S=M", "fp32 PS")
GBIT = 1e9 / 8

# Published single-GPU compute per training step (forward + backward + optimizer).
WORKLOADS = {
    "ResNet-50": {
        # NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
        # "Training performance: NVIDIA DGX A100 (8x A100 80GB)": 1 GPU, mixed precision,
        # 2470 img/s; batch size 256 per GPU (main.py's default, not overridden by the
        # benchmark command).
        "compute_s": 256 / 2470,
        "source": "NVIDIA DeepLearningExamples resnet50v1.5 README: 2470 img/s, 1x A100 80GB, "
                  "AMP, batch 256",
    },
    "GPT-2 124M": {
        # karpathy/nanoGPT README.md, "efficiency notes": bench.py (batch 12 x 1024 tokens)
        # "from ~250ms / iter to 135ms / iter" with torch.compile; the README trains on A100s.
        "compute_s": 0.135,
        "source": "nanoGPT README (efficiency notes): 135 ms/iter, bench.py, torch.compile",
    },
}


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of raysign's ResNet-50 built for ImageNet (3 channels, 1000 classes)."""
    import torch

    from raysign.signsgd.models import resnet50

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return [tuple(p.shape) for p in resnet50(3, 1000).parameters()]


def gpt2_small_shapes(layers: int = 12, width: int = 768, vocab: int = 50257,
                      context: int = 1024) -> list[tuple[int, ...]]:
    """GPT-2 small's parameter shapes (nanoGPT's model.py with its GPT-2 config; the output
    layer shares the token embedding)."""
    shapes: list[tuple[int, ...]] = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width),
                   (width,), (width,), (width,), (4 * width, width), (4 * width,),
                   (width, 4 * width), (width,)]
    return shapes + [(width,), (width,)]


def machine_from(params: dict[str, Any], bandwidth: float, cores: float) -> Machine:
    """A ``Machine`` of the measured parameters at link rate ``bandwidth`` (bytes/s). Params
    written before the worker steps and Ray's CPU were measured leave those terms out."""
    ray_cpu = {k: params["ray"][k] for k in ("call_cpu", "cpu_bytes_per_s") if k in params["ray"]}
    return Machine(bandwidth=bandwidth, latency=params["latency"],
                   message_overhead=params["ray"]["message_overhead"],
                   host_bytes_per_s=params["ray"]["host_bytes_per_s"], cores=cores,
                   **params["kernels"], **params.get("worker", {}), **ray_cpu)


def busiest_link_bytes(method: str, m: int, d: int) -> float:
    """Bytes per round through the busiest link direction, both phases of the round, by the
    model's arithmetic (message bodies only: no headers, no TCP/IP): node 0's inbound (gather)
    or outbound (broadcast) link with one vote actor or server, every node's with S = M (it
    sends M - 1 shards in the gather and M - 1 voted shards in the broadcast)."""
    return {"vote S=1": (m - 1) * d / 8, "vote S=M": 2 * (m - 1) * d / (8 * m),
            "fp32 PS": (m - 1) * 4 * d, "ring all-reduce": 2 * (m - 1) / m * 4 * d}[method]


# ------------------------------------------------------------------------ validation
def _model_method(method: str, m: int) -> str:
    if method == f"vote S={m}" and m > 1:
        return "vote S=M"
    return {"vote S=1": "vote S=1", "fp32 PS": "fp32 PS",
            "gloo all-reduce": "ring all-reduce"}[method]


def measure(nodes: list[int], rates: list[str], results_dir: str) -> None:
    """bench_signsgd_step.py's cluster mode for each point, one cluster at a time."""
    for m in nodes:
        for rate in rates:
            cmd = [sys.executable, str(ROOT / "scripts" / "bench_signsgd_step.py"), "--nodes",
                   str(m), "--rates", rate, "--rounds", "3", "--warmup", "1", "--steps", "0",
                   "--methods", "vote1,voteM,ps,gloo", "--priority", "-10",
                   "--order", "blocks", "--results-dir", results_dir]
            print(f"M={m} {rate}: load {os.getloadavg()[0]:.1f}: {' '.join(cmd[1:])}", flush=True)
            if subprocess.run(cmd, check=False).returncode != 0:
                print(f"M={m} {rate} failed; the points above it stand", file=sys.stderr)
                return


def validate(run_root: Path, params: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    rows = []
    for csv_path in sorted(run_root.glob("*/bench_signsgd_step.csv")):
        summary = json.loads((csv_path.parent / "summary.json").read_text())
        load = summary["loadavg_start"][0], summary["loadavg_end"][0]
        with csv_path.open() as f:
            for r in csv.DictReader(f):
                if r["kind"] != "comm" or r["correct"] != "True":
                    continue
                m, d, rate = int(r["nodes"]), int(r["d"]), r["rate"]
                method = _model_method(r["method"], m)
                machine = machine_from(params, params["links"][rate]["bytes_per_s"],
                                       params["cores"])
                exchange = METHODS[method](m, d, machine)
                predicted, measured = exchange.seconds(machine.cores), float(r["mean_s"])
                # Counted around the method's timed rounds (bench_signsgd_step --order blocks).
                cpu = float(r.get("cpu_s_per_round") or "nan")
                link = float(r.get("busiest_link_bytes_per_round") or "nan")
                expected_link = busiest_link_bytes(method, m, d)
                rows.append({"M": m, "rate": rate, "method": r["method"], "d": d,
                             "measured_ms": 1e3 * measured, "predicted_ms": 1e3 * predicted,
                             "error": (predicted - measured) / measured,
                             "bound": exchange.bound(machine.cores),
                             "critical_ms": 1e3 * exchange.critical,
                             "cpu_predicted_ms": 1e3 * exchange.cpu,
                             "cpu_measured_ms": 1e3 * cpu,
                             "cpu_busy_share": cpu / machine.cores / measured,
                             "link_bytes_model": expected_link,
                             "link_bytes_measured": link,
                             "link_bytes_ratio": link / expected_link,
                             "load_start": load[0], "load_end": load[1],
                             "run": csv_path.parent.name})
    if not rows:
        raise SystemExit(f"no correct communication rows under {run_root}/*/bench_signsgd_step.csv")
    rows.sort(key=lambda r: (r["rate"], r["method"].split(" S=")[0], r["M"], r["method"]))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "validation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{'M':>2} {'rate':>7} {'method':>16} {'measured':>9} {'predicted':>9} {'error':>7} "
          f"{'bound':>13} {'cpu meas/pred ms':>17} {'busy':>5} {'link bytes x':>12} load")
    for r in rows:
        print(f"{r['M']:>2} {r['rate']:>7} {r['method']:>16} {r['measured_ms']:9.1f} "
              f"{r['predicted_ms']:9.1f} {100 * r['error']:6.0f}% {r['bound']:>13} "
              f"{r['cpu_measured_ms']:8.0f}/{r['cpu_predicted_ms']:<8.0f} "
              f"{r['cpu_busy_share']:5.2f} {r['link_bytes_ratio']:12.2f} "
              f"{r['load_start']:.0f}-{r['load_end']:.0f}")
    errors = [abs(r["error"]) for r in rows]
    print(f"median |error| {100 * statistics.median(errors):.0f}% over {len(rows)} points; "
          f"{sum(e > 0.3 for e in errors)} over 30%")
    return rows


# ------------------------------------------------------------------------ extrapolation
def extrapolate(params: dict[str, Any], out: Path) -> tuple[list[dict], dict]:
    ms = [2**k for k in range(3, 11)]
    layouts = {"ResNet-50": LowRankLayout.from_shapes(resnet50_shapes()),
               "GPT-2 124M": LowRankLayout.from_shapes(gpt2_small_shapes())}
    rows, crossings = [], {}
    for workload, spec in WORKLOADS.items():
        layout, compute = layouts[workload], spec["compute_s"]
        d = layout.d
        for gbit in (10, 25, 100):
            ray_side = machine_from(params, gbit * GBIT, math.inf)
            gpu_side = Machine(bandwidth=gbit * GBIT, latency=params["latency"])

            def exchanges(m: int, ray_side=ray_side, gpu_side=gpu_side, layout=layout) -> dict:
                out = {name: fn(m, layout.d, ray_side if name in RAY_PATHS else gpu_side)
                       for name, fn in METHODS.items()}
                out[f"PowerSGD r={POWERSGD_RANK}"] = powersgd(m, layout, POWERSGD_RANK,
                                                              gpu_side)
                return out

            for m in ms:
                for name, exchange in exchanges(m).items():
                    plain = step_time(exchange, compute, ray_side, overlap=False)
                    hidden = step_time(exchange, compute, ray_side, overlap=True)
                    rows.append({"workload": workload, "d": d, "gbit": gbit, "M": m,
                                 "method": name, "comm_ms": 1e3 * plain.comm,
                                 "step_ms": 1e3 * plain.step,
                                 "step_overlap_ms": 1e3 * hidden.step,
                                 "efficiency": plain.efficiency,
                                 "efficiency_overlap": hidden.efficiency})
            dense = range(2, 1025)
            comm = {name: {} for name in exchanges(2)}
            for m in dense:
                for name, exchange in exchanges(m).items():
                    comm[name][m] = exchange.critical
            always = {m: compute for m in dense}
            crossings[f"{workload} {gbit} Gbit/s"] = {
                "hook allgather slower than hook sharded from M":
                    first_crossing(dense, comm["hook allgather"].get, comm["hook sharded"].get),
                "hook allgather slower than ring all-reduce from M":
                    first_crossing(dense, comm["hook allgather"].get,
                                   comm["ring all-reduce"].get),
                "vote S=M faster than vote S=1 from M":
                    first_crossing(dense, comm["vote S=1"].get, comm["vote S=M"].get),
                "vote S=M slower than ring all-reduce from M":
                    first_crossing(dense, comm["vote S=M"].get, comm["ring all-reduce"].get),
                "ring all-reduce longer than compute from M":
                    first_crossing(dense, comm["ring all-reduce"].get, always.get),
                "hook sharded longer than compute from M":
                    first_crossing(dense, comm["hook sharded"].get, always.get),
                "vote S=M longer than compute from M":
                    first_crossing(dense, comm["vote S=M"].get, always.get),
            }
    out.mkdir(parents=True, exist_ok=True)
    with (out / "extrapolation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "crossovers.json").write_text(json.dumps(
        {"crossovers": crossings, "workloads": WORKLOADS,
         "d": {k: v.d for k, v in layouts.items()}, "powersgd_rank": POWERSGD_RANK,
         "params": params.get("measured_at")}, indent=2))
    plot(rows, out / "scaling.png")
    return rows, crossings


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    speeds = sorted({r["gbit"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(len(workloads), len(speeds), figsize=(4.2 * len(speeds), 7),
                             squeeze=False, sharey=True)
    for i, workload in enumerate(workloads):
        for j, gbit in enumerate(speeds):
            ax = axes[i][j]
            for method in methods:
                pts = [r for r in rows if (r["workload"], r["gbit"], r["method"])
                       == (workload, gbit, method)]
                ax.plot([r["M"] for r in pts], [r["efficiency_overlap"] for r in pts],
                        marker="o", ms=3, label=method)
            ax.set(xscale="log", title=f"{workload}, {gbit} Gbit/s", ylim=(0, 1.05))
            ax.set_xticks([8, 32, 128, 512, 1024], ["8", "32", "128", "512", "1024"])
            if j == 0:
                ax.set_ylabel("scaling efficiency (overlap)")
            if i == len(workloads) - 1:
                ax.set_xlabel("workers M")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("raysign.costmodel: compute / step time, with communication overlapped "
                 "(parameters measured by scripts/costmodel_params.py)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("validate", "extrapolate"))
    parser.add_argument("--params", default="docs/results/scaling/params.json")
    parser.add_argument("--out", default="docs/results/scaling")
    parser.add_argument("--runs", default="",
                        help="validate: read these bench_signsgd_step run folders instead of "
                             "measuring")
    parser.add_argument("--nodes", default="2,3,4,5,6")
    parser.add_argument("--rates", default="1gbit,100mbit")
    parser.add_argument("--results-dir", default="runs/scaling_validation")
    args = parser.parse_args(argv)
    params = json.loads(Path(args.params).read_text())
    out = Path(args.out)
    if args.what == "extrapolate":
        rows, crossings = extrapolate(params, out)
        for key, values in crossings.items():
            print(key, values)
        return 0
    runs = Path(args.runs or Path(args.results_dir) / "bench_signsgd_step")
    if not args.runs:
        measure([int(m) for m in args.nodes.split(",")], args.rates.split(","), args.results_dir)
    validate(runs, params, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
