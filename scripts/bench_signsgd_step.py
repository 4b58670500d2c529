"""Time per communication round and per training step on a real multi-node Ray cluster.

Bernstein et al. (ICLR 2019) claim signSGD with majority vote cuts the communication of
data-parallel training ~32x. This measures it on M Ray nodes in network namespaces whose links
are rate-limited (``scripts/netns_cluster.py``), one worker actor per node, for a model of d
parameters (ResNet-18: 11.17M):

- the communication round alone (synthetic gradients of size d; ``actors/comm_bench.py``):
  majority vote with S = 1 and S = M vote shards, fp32 mean through one parameter-server actor
  (``raysign.wire`` KIND_FP32 through ``VoteActor``), and gloo all-reduce between the same
  nodes (torch.distributed in Ray actors, DDP's 25 MB buckets);
- the full training step with the real model: ``SignSGDTrainer`` (vote S = 1, vote S = M,
  fp32 mean) and DDP over gloo.

Every Ray path is checked: the voted signs against a numpy majority vote of the synthetic
gradients, the PS and gloo means against their numpy mean, and the node of every actor (each
worker on its own node; with S = M each vote shard on its own node).

Run as root; it brings the cluster up for each rate in ``--rates`` and down again::

    python scripts/bench_signsgd_step.py --nodes 4 --rates 1gbit,none

Output in ``runs/bench_signsgd_step/<timestamp>/``: ``bench_signsgd_step.csv`` (one row per
rate x method x kind, seconds), ``stages.png`` (the five-stage stacked bars), ``summary.json``
with the ratios,
which are also printed. ``--attach`` measures on the cluster at $RAY_ADDRESS instead (run it
inside a namespace: ``netns_cluster.py exec -- python scripts/bench_signsgd_step.py --attach ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("compress", "gather", "vote", "broadcast", "decompress")


METHODS = ("vote1", "voteM", "ps", "gloo")


def _methods(m: int, chosen: str = ",".join(METHODS)) -> list[tuple[str, int, str]]:
    """(label, vote shards, aggregator) of the chosen Ray paths."""
    paths = {"vote1": ("vote S=1", 1, "vote"), "voteM": (f"vote S={m}", m, "vote"),
             "ps": ("fp32 PS", 1, "mean")}
    return [paths[name] for name in chosen.split(",") if name in paths]


def _summary_row(rate: str, method: str, kind: str, seconds: list[float],
                 stage_rows: list[dict[str, float]] | None, **extra: Any) -> dict[str, Any]:
    row = {"rate": rate, "method": method, "kind": kind, "n": len(seconds),
           "mean_s": float(np.mean(seconds)), "median_s": float(np.median(seconds)),
           "std_s": float(np.std(seconds)), "min_s": float(np.min(seconds))}
    for stage in ("compute", *STAGES):
        values = [r[stage] for r in stage_rows or [] if stage in r]
        row[f"{stage}_s"] = float(np.mean(values)) if values else float("nan")
    row.update(extra)
    return row


# ------------------------------------------------------------------------ on the cluster
def _reference_checks(d: int, m: int, seed: int, rounds: int,
                      beta: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parameters every ``CommWorker`` holds after ``rounds`` rounds on its synthetic
    gradient (lr 1, momentum ``beta``, parameters from 0), computed here with numpy: with
    majority vote, ``-rounds V`` (V the vote of the gradients' signs: Signum's momentum keeps
    each gradient's sign; ties +1); with the fp32 mean, ``-sum_t mean_i m_i,t`` (float64).
    Third, the plain mean of the M gradients, which gloo's all-reduce must give."""
    from raysign.actors.comm_bench import synthetic_gradient

    negatives = np.zeros(d, dtype=np.int32)
    summed = np.zeros(d, dtype=np.float64)
    total = np.zeros(d, dtype=np.float64)
    for rank in range(m):
        grad = synthetic_gradient(rank, d, seed).numpy().astype(np.float64)
        negatives += grad < 0
        total += grad
        momentum = np.zeros(d)
        for _ in range(rounds):
            momentum = beta * momentum + (1 - beta) * grad
            summed += momentum
    vote = np.where(negatives > m // 2, -1.0, 1.0).astype(np.float32)
    return -rounds * vote, -summed / m, total / m


def usage_counters(m: int, cpu_last: bool) -> dict[str, float]:
    """On the namespace cluster: the user + system CPU seconds of every process in the M nodes'
    namespaces (the driver's included; ``cpu_s``), and the bytes and drops of every node's token
    bucket: ``sent_i`` (node i's own veth end) and ``received_i`` (the bridge's end towards node
    i). ``cpu_last``: read the CPU after the links (a ``before`` snapshot), else first, so the
    ``tc`` processes of the reading are not charged to the rounds. Empty elsewhere."""
    import netns_cluster

    if netns_cluster.ClusterState.load() is None:
        return {}

    def cpu() -> dict[str, float]:
        pids = [pid for i in range(m)
                for pid in netns_cluster.namespace_pids(netns_cluster.node_namespace(i))]
        return {"cpu_s": netns_cluster.cpu_seconds(pids)}

    counters = {} if cpu_last else cpu()
    for i in range(m):
        for key, ns, dev in (("sent", netns_cluster.node_namespace(i), f"rsn{i}"),
                             ("received", netns_cluster.BRIDGE_NS, f"rsh{i}")):
            tbf = netns_cluster.tbf_stats(ns, dev)
            if tbf is not None:
                counters[f"{key}_{i}"] = float(tbf["bytes"])
                counters[f"drops_{key}_{i}"] = float(tbf["drops"])
    return {**counters, **cpu()} if cpu_last else counters


def per_round(before: dict[str, float], after: dict[str, float], rounds: int,
              ) -> dict[str, float]:
    """Counter increments per round, and the busiest link direction's bytes per round."""
    spent = {f"{k}_per_round": (after[k] - before[k]) / rounds for k in before if k in after}
    links = [v for k, v in spent.items() if k.startswith(("sent_", "received_"))]
    if links:
        spent["busiest_link_bytes_per_round"] = max(links)
    return spent


def _new_groups(before: set[str]) -> list[str]:
    import ray

    return [pg for pg, info in ray.util.placement_group_table().items()
            if pg not in before and info["state"] != "REMOVED"]


def _remove_groups(ids: list[str]) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup

    for pg in ids:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg))))


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All rows for the cluster at $RAY_ADDRESS (one rate)."""
    import ray
    import torch
    from tqdm.auto import tqdm

    from raysign import wire
    from raysign.actors.cluster import ActorResources, connect
    from raysign.actors.comm_bench import GlooGroup, VoteRound, node_of, spread_group
    from raysign.actors.trainer import SignSGDTrainer
    from raysign.data import load_images
    from raysign.results import RunDir
    from raysign.signsgd.config import SignSGDConfig
    from raysign.signsgd.models import build_model, num_parameters

    torch.set_num_threads(1)
    connect()
    m = sum(node["Alive"] for node in ray.nodes())
    if m != args.nodes:
        raise RuntimeError(f"the cluster has {m} nodes, expected --nodes {args.nodes}")
    d = args.params or num_parameters(build_model(args.model))
    rate, rows = args.rate_label, []
    ray_paths = {"transport": args.transport}  # every Ray row says how its messages travelled
    total_rounds = args.warmup + args.rounds
    vote_ref, mean_ref, gradient_mean = _reference_checks(d, m, args.seed, total_rounds)

    # ---- the communication round alone
    group = spread_group(m)
    benches = {label: VoteRound(group, m, d, shards,
                                wire.KIND_SIGNS if aggregator == "vote" else wire.KIND_FP32,
                                args.seed, transport=args.transport)
               for label, shards, aggregator in _methods(m, args.methods)}
    where = {label: bench.placement() for label, bench in benches.items()}
    records: dict[str, list[dict[str, float]]] = {label: [] for label in benches}
    spent: dict[str, dict[str, float]] = {}
    if args.order == "interleaved":
        # Rounds of the methods alternate, so that every method sees the same machine load.
        for step in tqdm(range(total_rounds), desc=f"{rate} comm rounds"):
            for label, bench in benches.items():
                records[label].append(bench.round(step))
    else:
        # One method at a time, the CPU time of the cluster's processes and every link's bytes
        # counted around its timed rounds: no method's traffic spills into another's rounds.
        for label, bench in benches.items():
            for step in tqdm(range(total_rounds), desc=f"{rate} {label}"):
                if step == args.warmup:
                    before = usage_counters(m, cpu_last=True)
                records[label].append(bench.round(step))
            spent[label] = per_round(before, usage_counters(m, cpu_last=False), args.rounds)
    for label, bench in benches.items():
        got = ray.get(bench.workers[0].parameter_values.remote())
        correct = (np.array_equal(got, vote_ref) if bench.kind == wire.KIND_SIGNS
                   else np.allclose(got, mean_ref, rtol=1e-5, atol=1e-5 * total_rounds))
        steady = records[label][args.warmup:]
        rows.append(_summary_row(
            rate, label, "comm", [r["round_s"] for r in steady], steady,
            nodes=m, d=d, vote_shards=bench.num_shards,
            bytes_sent_per_worker=steady[0]["bytes_sent_per_worker"],
            correct=bool(correct and bench.replicas_identical()),
            worker_nodes=len(set(where[label]["workers"])),
            vote_nodes=len(set(where[label]["votes"])), **ray_paths, **spent.get(label, {})))
        bench.shutdown()
    if "gloo" in args.methods:
        gloo = GlooGroup(group, m, d, args.seed)
        gloo_nodes = len(set(gloo.placement()))
        gloo.allreduce_rounds(args.warmup)
        before = usage_counters(m, cpu_last=True)
        seconds = gloo.allreduce_rounds(args.rounds)
        counted = per_round(before, usage_counters(m, cpu_last=False), args.rounds)
        got = ray.get(gloo.workers[0].mean_values.remote())
        rows.append(_summary_row(rate, "gloo all-reduce", "comm", seconds, None, nodes=m, d=d,
                                 vote_shards=0, bytes_sent_per_worker=2 * (m - 1) / m * 4 * d,
                                 correct=bool(np.allclose(got, gradient_mean, atol=1e-5)),
                                 worker_nodes=gloo_nodes, vote_nodes=0, **counted))
        gloo.shutdown()
    ray.util.remove_placement_group(group)
    if args.steps == 0:
        return rows

    # ---- the full training step with the real model
    train, _ = load_images("fashion-mnist")
    need = m * args.batch_size * (args.warmup + args.steps + 1)
    images, labels = train.images[:need], train.labels[:need]
    for label, shards, aggregator in _methods(m, args.methods):
        config = SignSGDConfig(dataset="fashion-mnist", model=args.model, num_workers=m,
                               aggregator=aggregator, vote_shards=shards, lr=1e-3,
                               batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                               train_subset=need, test_subset=100, checksum_every=10**6,
                               seed=args.seed, name="bench_step_train",
                               transport=args.transport)
        before = set(ray.util.placement_group_table())
        trainer = SignSGDTrainer(config, RunDir(Path(args.rows_out).parent / "trainer"),
                                 progress=False,
                                 worker_options=ActorResources(num_cpus=0.9, num_gpus=0.0))
        trainer.start()
        worker_nodes = {node_of(w) for w in trainer.workers}
        vote_nodes = {node_of(v) for v in trainer.votes}
        walls, records = [], []
        for step in tqdm(range(1, args.warmup + args.steps + 1), desc=f"{rate} step {label}"):
            t0 = time.perf_counter()
            records.append(trainer.round(step))
            walls.append(time.perf_counter() - t0)
        identical, _ = trainer.check_replicas()
        rows.append(_summary_row(
            rate, label, "step", walls[args.warmup:], records[args.warmup:], nodes=m, d=d,
            vote_shards=shards, bytes_sent_per_worker=records[-1]["bytes_sent_per_worker"],
            correct=bool(identical), worker_nodes=len(worker_nodes),
            vote_nodes=len(vote_nodes), **ray_paths))
        trainer.shutdown()
        _remove_groups(_new_groups(before))  # the trainer leaves its spread group behind
    if "gloo" not in args.methods:
        return rows
    group = spread_group(m)
    gloo = GlooGroup(group, m, d, args.seed)
    image_ref, label_ref = ray.put(images), ray.put(labels)
    seconds = gloo.ddp_steps(args.model, image_ref, label_ref, args.batch_size,
                             args.warmup + args.steps)[args.warmup:]
    rows.append(_summary_row(rate, "gloo DDP", "step", seconds, None, nodes=m, d=d,
                             vote_shards=0, bytes_sent_per_worker=2 * (m - 1) / m * 4 * d,
                             correct=True, worker_nodes=len(set(gloo.placement())),
                             vote_nodes=0))
    gloo.shutdown()
    ray.util.remove_placement_group(group)
    return rows


# ------------------------------------------------------------------------ the report
def ratios(rows: list[dict[str, Any]], m: int) -> dict[str, float]:
    """Speed-ups of the majority vote (mean seconds of the baseline / of the vote)."""
    out: dict[str, float] = {}
    table = {(r["rate"], r["method"], r["kind"]): r["mean_s"] for r in rows}
    for rate, _, kind in sorted({(r["rate"], None, r["kind"]) for r in rows}):
        best = f"vote S={m}"
        base = {"fp32 PS": "fp32 PS", "gloo": "gloo all-reduce" if kind == "comm" else "gloo DDP"}
        for vote in ("vote S=1", best):
            for name, method in base.items():
                if (rate, vote, kind) in table and (rate, method, kind) in table:
                    out[f"{rate} {kind}: {name} / {vote}"] = (
                        table[(rate, method, kind)] / table[(rate, vote, kind)])
        if (rate, "vote S=1", kind) in table and (rate, best, kind) in table:
            out[f"{rate} {kind}: vote S=1 / {best}"] = (
                table[(rate, "vote S=1", kind)] / table[(rate, best, kind)])
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked bars of the five stages per method, one panel per rate and kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["kind"], r["rate"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    colors = dict(zip(("compute", *STAGES, "all-reduce / DDP step", "other"),
                      plt.get_cmap("tab10").colors, strict=False))
    for ax, (kind, rate) in zip(axes[0], panels, strict=True):
        chosen = [r for r in rows if r["kind"] == kind and r["rate"] == rate]
        for x, row in enumerate(chosen):
            bottom = 0.0
            if row["method"].startswith("gloo"):
                parts = [("all-reduce / DDP step", row["mean_s"])]
            else:
                stages = ("compute", *STAGES) if kind == "step" else STAGES
                parts = [(s, row[f"{s}_s"]) for s in stages]
                # What the stages do not cover: driver dispatch and Ray scheduling.
                parts.append(("other", max(0.0, row["mean_s"] - sum(p for _, p in parts))))
            for stage, seconds in parts:
                ax.bar(x, 1e3 * seconds, bottom=bottom, color=colors[stage],
                       label=stage if x == 0 or row["method"].startswith("gloo") else None)
                bottom += 1e3 * seconds
            ax.text(x, 1e3 * row["mean_s"], f"{1e3 * row['mean_s']:.0f}", ha="center",
                    va="bottom", fontsize=8)
        ax.set_xticks(range(len(chosen)), [r["method"] for r in chosen], rotation=20,
                      fontsize=8)
        what = "communication round" if kind == "comm" else "training step"
        ax.set(ylabel="milliseconds", title=f"{what}, link {rate}")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.suptitle(f"d = {rows[0]['d'] / 1e6:.2f}M parameters, {rows[0]['nodes']} Ray nodes,\n"
                 "one worker per node (bar: mean time; segments: mean stage split)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _keep_reniced(nodes: int, niceness: int) -> threading.Event:
    """Every second, set the niceness of every process in the cluster's namespaces (Ray starts
    workers at 19); returns the event that stops it."""
    import netns_cluster

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(1.0):
            for i in range(nodes):
                for pid in netns_cluster.namespace_pids(netns_cluster.node_namespace(i)):
                    try:
                        os.setpriority(os.PRIO_PROCESS, pid, niceness)
                    except OSError:
                        pass  # the process has exited

    threading.Thread(target=loop, daemon=True).start()
    return stop


def orchestrate(args: argparse.Namespace) -> int:
    """Bring the cluster up at each rate, measure inside namespace rs0, bring it down."""
    import netns_cluster

    from raysign.results import RunDir

    why = netns_cluster.missing_requirements()
    if why:
        print(f"bench_signsgd_step needs the netns cluster, which {why}; use --attach on a "
              "real cluster", file=sys.stderr)
        return 2
    run_dir = RunDir.create(args.results_dir, "bench_signsgd_step")
    load = os.getloadavg()
    run_dir.write_json("config.json", {**vars(args), "loadavg_at_start": load})
    rows: list[dict[str, Any]] = []
    for rate in args.rates.split(","):
        out = run_dir.file(f"rows_{rate}.json")
        # The object path keeps Ray's default inline size: above it, the messages that the
        # driver owns would travel through the driver.
        netns_cluster.up(args.nodes, rate, args.delay, args.cpus_per_node,
                         direct_call_bytes=(netns_cluster.DIRECT_CALL_BYTES
                                            if args.transport == "direct" else 0))
        stop = _keep_reniced(args.nodes, args.priority) if args.priority else None
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--attach", "--rate-label",
                   rate, "--rows-out", str(out), "--nodes", str(args.nodes), "--model",
                   args.model, "--rounds", str(args.rounds), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--seed", str(args.seed), "--methods", args.methods,
                   "--transport", args.transport, "--params", str(args.params),
                   "--order", args.order]
            code = netns_cluster.exec_in(0, cmd)
        finally:
            if stop is not None:
                stop.set()
            netns_cluster.down(quiet=True)
        if code != 0:
            print(f"the measurement at rate {rate} failed (exit {code})", file=sys.stderr)
            return code
        rows += json.loads(out.read_text())
    report(rows, run_dir, args.nodes, load)
    return 0


def report(rows: list[dict[str, Any]], run_dir: Any, m: int, load: tuple) -> None:
    run_dir.write_csv("bench_signsgd_step.csv", rows)
    plot(rows, run_dir.file("stages.png"))
    speedups = ratios(rows, m)
    load_end = os.getloadavg()
    run_dir.write_json("summary.json", {"ratios": speedups, "loadavg_start": load,
                                        "loadavg_end": load_end, "rows": rows})
    print(f"\n{'rate':>6} {'kind':>4} {'method':>16} {'mean ms':>9} {'median':>8} "
          f"{'bytes/worker':>13} ok nodes(w/v)")
    for r in rows:
        print(f"{r['rate']:>6} {r['kind']:>4} {r['method']:>16} {1e3 * r['mean_s']:9.1f} "
              f"{1e3 * r['median_s']:8.1f} {r['bytes_sent_per_worker']:13.0f} "
              f"{'y' if r['correct'] else 'N'}  {r['worker_nodes']}/{r['vote_nodes']}")
    print("\nspeed-ups (baseline time / vote time):")
    for name, value in speedups.items():
        print(f"  {name:45s} {value:7.2f}x")
    print(f"load average at start {load[0]:.1f}, at end {load_end[0]:.1f} (2 cores)")
    print(f"results in {run_dir.path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rates", default="1gbit,none",
                        help="link rates to measure at, comma-separated ('none': no limit)")
    parser.add_argument("--delay", default="0.2ms", help="netem delay (where the kernel has it)")
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rounds", type=int, default=10, help="timed communication rounds")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed training steps (0: communication rounds only)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds/steps first")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} "
                             "(voteM: S = M vote shards; ps: fp32 parameter server)")
    parser.add_argument("--params", type=int, default=0,
                        help="communication rounds for d parameters instead of the model's "
                             "(e.g. 25557032, ResNet-50's size; needs --steps 0)")
    parser.add_argument("--transport", default="direct", choices=("direct", "objects"),
                        help="how the Ray paths move messages (SignSGDConfig.transport): direct "
                             "worker -> vote actor calls, or Ray objects handed on by the "
                             "driver")
    parser.add_argument("--order", default="interleaved", choices=("interleaved", "blocks"),
                        help="communication rounds: the methods' rounds alternate (the same "
                             "machine load for each), or each method's rounds run as one block "
                             "with the CPU seconds of the cluster's processes and every link's "
                             "bytes counted "
                             "around it (columns *_per_round; the cost-model validation)")
    parser.add_argument("--priority", type=int, default=0,
                        help="as root: renice the cluster's processes to this niceness every "
                             "second (e.g. -10 on a machine busy with other work; Ray starts "
                             "its workers at niceness 19); 0: leave them alone")
    parser.add_argument("--results-dir", default="runs")
    parser.add_argument("--attach", action="store_true",
                        help="measure on the cluster at $RAY_ADDRESS (one rate)")
    parser.add_argument("--rate-label", default="attached")
    parser.add_argument("--rows-out", default="",
                        help="--attach: write the rows here (default: a new run folder)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least one timed round")
    if args.params and args.steps:
        parser.error("--params sets the size of the communication round only: add --steps 0")
    if not args.attach:
        return orchestrate(args)
    from raysign.results import RunDir

    run_dir = None
    if not args.rows_out:
        run_dir = RunDir.create(args.results_dir, "bench_signsgd_step")
        args.rows_out = str(run_dir.file("rows.json"))
    rows = measure(args)
    Path(args.rows_out).write_text(json.dumps(rows, indent=2))
    if run_dir is not None:
        report(rows, run_dir, args.nodes, os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
