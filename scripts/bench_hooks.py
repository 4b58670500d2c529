"""DDP communication hooks side by side: fp32 all-reduce, fp16, PowerSGD and majority vote.

Issue #17 item 4. What a DDP user would pick to shrink gradient traffic, against
``raysign.comm_hooks.signum_vote_hook`` (Bernstein et al., ICLR 2019, Algorithm 1), on 4 gloo
ranks:

- ``allreduce``: DDP's default fp32 all-reduce (``default_hooks.allreduce_hook``, the Python
  form of what DDP does without a hook: all-reduce, then divide by M);
- ``fp16``: ``default_hooks.fp16_compress_hook``;
- ``powersgd1`` / ``powersgd4``: ``powerSGD_hook`` at rank 1 / 4, error feedback and warm
  start on (PyTorch's defaults), compressing from its third iteration on;
- ``vote_allgather`` / ``vote_sharded``: ``signum_vote_hook`` (momentum 0.9) in both
  topologies.

**Communication** (``--part comm``, as root): one rank per network namespace of the 4-node
cluster (``scripts/netns_cluster.py up``, brought up and down once per ``--rates`` entry;
plain ``torch.distributed`` processes started with ``ip netns exec``, gloo bound to the
namespace's interface, ``MASTER_ADDR`` the head's address). For ResNet-18 and ResNet-50 sizes
(``raysign.signsgd.models``), each rank records DDP's bucket layout (the rebuilt one, after two
backward passes with a recording hook) and then replays one backward's buckets through each
hook: every bucket's hook called in bucket order, as DDP calls them, each bucket's future
waited before the next bucket's hook (PowerSGD issues its second all-reduce from a callback
thread; with several buckets in flight, ranks can issue those in different orders, a gloo
collective mismatch, which the first version of this script hit). The time per step is that
wall time (the hooks' compression, exchange and decompression, without the backward's compute
that DDP would overlap with it, and without overlap between buckets), the slowest rank's per
step (a barrier starts every step). Bytes on the wire per rank and step are measured two
ways: ``wchar`` of ``/proc/self/io`` (bytes the rank passed to write calls: gloo's socket
payload and headers) and the TX bytes of the namespace's interface in ``/proc/self/net/dev``
(IP and TCP headers included, plus the little the namespace's idle Ray node sends).

**Accuracy** (``--part accuracy``, no root): 4 local gloo ranks (processes), the small CNN on
Fashion-MNIST, a disjoint quarter of the training set per rank, batch ``--batch-size`` per
rank, the same ``--train-steps`` for every hook and learning rate, test accuracy on the 10,000
test images. fp32/fp16/PowerSGD use SGD with momentum 0.9; the vote hook keeps its own
momentum 0.9 and uses plain SGD. Each hook's learning rate is the best of a 3-point grid.

Run (root, a few minutes)::

    python scripts/bench_hooks.py --rates 1gbit,none --priority -10

Output in ``runs/bench_hooks/<timestamp>/``: ``comm.csv``, ``accuracy.csv``, ``hooks.png``,
``summary.json`` (ratios against fp32 all-reduce, load averages); ``--docs`` copies them to
``docs/results/bench_hooks/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd
from torch.nn import functional
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from raysign.comm_hooks import SignumVoteState, signum_vote_hook  # noqa: E402
from raysign.signsgd.models import build_model  # noqa: E402

HOOKS = ("allreduce", "fp16", "powersgd1", "powersgd4", "vote_allgather", "vote_sharded")
LR_GRIDS = {"sgd": (0.01, 0.03, 0.1), "vote": (3e-4, 1e-3, 3e-3)}
PORT = 29533


def make_hook(name: str, module: nn.Module, start_powersgd_iter: int = 2):
    """``(state, hook)`` for ``DistributedDataParallel.register_comm_hook``."""
    if name == "allreduce":
        return None, default_hooks.allreduce_hook
    if name == "fp16":
        return None, default_hooks.fp16_compress_hook
    if name.startswith("powersgd"):
        state = powersgd.PowerSGDState(
            process_group=None, matrix_approximation_rank=int(name[len("powersgd"):]),
            start_powerSGD_iter=start_powersgd_iter, use_error_feedback=True, warm_start=True)
        return state, powersgd.powerSGD_hook
    if name.startswith("vote_"):
        topology = name[len("vote_"):]
        return SignumVoteState(momentum=0.9, topology=topology, module=module), signum_vote_hook
    raise ValueError(f"hook={name!r} is not one of {list(HOOKS)}")


# ---------------------------------------------------------------- communication: replay
class ReplayBucket:
    """A stand-in for ``dist.GradBucket`` with DDP's layout: the calls the hooks make
    (``index``, ``buffer``, ``is_last``, ``parameters``, ``gradients``) on a flat buffer."""

    def __init__(self, index: int, count: int, params: list[torch.Tensor],
                 buffer: torch.Tensor):
        self._index, self._last = index, index == count - 1
        self._params, self._buffer = params, buffer

    def index(self) -> int:
        return self._index

    def is_last(self) -> bool:
        return self._last

    def buffer(self) -> torch.Tensor:
        return self._buffer

    def parameters(self) -> list[torch.Tensor]:
        return self._params

    def gradients(self) -> list[torch.Tensor]:
        views, start = [], 0
        for p in self._params:
            views.append(self._buffer[start:start + p.numel()].view_as(p))
            start += p.numel()
        return views


def ddp_bucket_layout(model: nn.Module, example: torch.Tensor) -> list[list[torch.Tensor]]:
    """The parameters of each bucket, in bucket order, of DDP's rebuilt layout (DDP rebuilds
    its buckets in gradient-ready order after the first iteration): two backward passes with
    a hook that records the buckets and communicates nothing."""
    seen: dict[int, list[torch.Tensor]] = {}

    def record(_, bucket):
        seen[bucket.index()] = list(bucket.parameters())
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(None, record)
    for _ in range(2):
        seen.clear()
        ddp(example).sum().backward()
    del ddp
    return [seen[k] for k in sorted(seen)]


def written_bytes() -> int:
    """Bytes this process has passed to write calls (``wchar`` of ``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split(":")[1])


def interface_tx_bytes(iface: str) -> int:
    """TX bytes of ``iface`` in this process's network namespace (0 without ``iface``)."""
    if not iface:
        return 0
    with open("/proc/self/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == iface:
                return int(counters.split()[8])
    raise ValueError(f"interface {iface!r} is not in /proc/self/net/dev")


def measure_hook(name: str, model: nn.Module, layout: list[list[torch.Tensor]], steps: int,
                 warmup: int, iface: str = "", seed: int = 0) -> dict[str, Any]:
    """Replay one backward's buckets through hook ``name`` ``warmup + steps`` times; per timed
    step: wall seconds from the first hook call to the last future done, ``wchar`` bytes and
    interface TX bytes. The buckets hold this rank's N(0, 1) gradients, restored each step;
    one bucket after another (see the module docstring)."""
    state, hook = make_hook(name, model)
    rank = dist.get_rank()
    generator = torch.Generator().manual_seed(seed * 1000 + rank)
    grads = [torch.randn(sum(p.numel() for p in params), generator=generator)
             for params in layout]
    buffers = [g.clone() for g in grads]
    buckets = [ReplayBucket(k, len(layout), params, buffers[k])
               for k, params in enumerate(layout)]
    seconds, wchar, tx = [], [], []
    for step in range(warmup + steps):
        for buffer, grad in zip(buffers, grads, strict=True):
            buffer.copy_(grad)
        dist.barrier()
        w0, n0, t0 = written_bytes(), interface_tx_bytes(iface), time.perf_counter()
        for bucket in buckets:
            hook(state, bucket).wait()
        t1, w1, n1 = time.perf_counter(), written_bytes(), interface_tx_bytes(iface)
        if step >= warmup:
            seconds.append(t1 - t0)
            wchar.append(w1 - w0)
            tx.append(n1 - n0)
    return {"hook": name, "seconds": seconds, "wchar": wchar, "tx": tx}


def comm_rank(args: argparse.Namespace) -> None:
    """One rank of the communication part (inside its namespace, or local)."""
    if args.priority:
        os.setpriority(os.PRIO_PROCESS, 0, args.priority)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}:{args.port}",
                            rank=args.rank, world_size=args.world)
    rank = dist.get_rank()
    results = []
    for model_name in args.models.split(","):
        torch.manual_seed(args.seed)
        model = build_model(model_name)
        layout = ddp_bucket_layout(model, torch.randn(2, 1, 28, 28))
        d = sum(p.numel() for p in model.parameters())
        for name in args.hooks.split(","):
            row = measure_hook(name, model, layout, args.steps, args.warmup, args.iface,
                               args.seed)
            row.update(model=model_name, d=d, buckets=len(layout), rank=rank)
            results.append(row)
            if rank == 0:
                print(f"[{args.rate_label}] {model_name} {name}: median "
                      f"{1e3 * float(np.median(row['seconds'])):.1f} ms, "
                      f"{np.mean(row['wchar']):.0f} B written, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
    Path(args.out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def comm_rows(per_rank: list[list[dict]], rate: str) -> list[dict[str, Any]]:
    """One row per (model, hook): per step the slowest rank's seconds, then median / mean /
    min over steps; bytes per rank and step, mean over ranks and steps."""
    rows = []
    for k, first in enumerate(per_rank[0]):
        ranks = [results[k] for results in per_rank]
        slowest = np.max([r["seconds"] for r in ranks], axis=0)
        rows.append({
            "rate": rate, "model": first["model"], "d": first["d"],
            "buckets": first["buckets"], "hook": first["hook"],
            "median_s": float(np.median(slowest)), "mean_s": float(np.mean(slowest)),
            "min_s": float(np.min(slowest)), "steps": len(slowest),
            "wchar_bytes_per_rank": float(np.mean([r["wchar"] for r in ranks])),
            "tx_bytes_per_rank": float(np.mean([r["tx"] for r in ranks])),
        })
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["hook"] == "allreduce")
        row["allreduce_over_this"] = base["median_s"] / row["median_s"]
        row["bytes_vs_allreduce"] = row["wchar_bytes_per_rank"] / base["wchar_bytes_per_rank"]
    return rows


def run_comm(args: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    """Per rate: the 4-node cluster up, one rank per namespace, the cluster down."""
    import netns_cluster

    why = netns_cluster.missing_requirements()
    if why:
        raise SystemExit(f"bench_hooks --part comm needs the netns cluster, which {why}")
    rows = []
    for rate in args.rates.split(","):
        netns_cluster.up(args.world, rate, cpus_per_node=1)
        procs = []
        try:
            outs = [run_dir / f"comm_{rate}_rank{r}.json" for r in range(args.world)]
            for r in range(args.world):
                cmd = ["ip", "netns", "exec", netns_cluster.node_namespace(r), sys.executable,
                       str(Path(__file__).resolve()), "--comm-rank", str(r),
                       "--world", str(args.world), "--master", netns_cluster.node_ip(0),
                       "--iface", f"rsn{r}", "--out", str(outs[r]), "--models", args.models,
                       "--hooks", args.hooks, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--seed", str(args.seed),
                       "--priority", str(args.priority), "--rate-label", rate]
                procs.append(subprocess.Popen(cmd, env={**os.environ, "GLOO_SOCKET_IFNAME":
                                                        f"rsn{r}"}))
            codes = [p.wait(timeout=args.timeout) for p in procs]
            if any(codes):
                raise RuntimeError(f"a rank failed at rate {rate}: exit codes {codes}")
            load = os.getloadavg()[0]
            rows += [{**row, "loadavg_1min": load}
                     for row in comm_rows([json.loads(o.read_text()) for o in outs], rate)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            netns_cluster.down(quiet=True)
    return rows


# ----------------------------------------------------------------------------- accuracy
def waited(hook):
    """``hook`` with its future waited before DDP calls the next bucket's hook.
    ``powerSGD_hook`` issues its second all-reduce from a callback thread; with two buckets in
    flight the ranks issued those in different orders and gloo aborted ("Received data size
    doesn't match expected size. Is there a distributed collective mismatch"; torch 2.13,
    the CNN's two buckets). Waiting changes when the exchange happens, not what it computes."""

    def hook_waited(state, bucket):  # no annotations: DDP checks them as objects
        future = hook(state, bucket)
        future.wait()
        return future

    return hook_waited


def accuracy_rank(rank: int, world: int, store: str, config: dict, out: str) -> None:
    """One local rank: every hook x learning rate, the same steps, test accuracy."""
    from raysign.data import load_fashion_mnist, shard_indices

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    train, test = load_fashion_mnist(config["data_dir"])
    shard = shard_indices(len(train), world, config["seed"])[rank]
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    test_x = torch.from_numpy(test.images[rank::world])
    test_y = torch.from_numpy(test.labels[rank::world])
    steps, batch = config["train_steps"], config["batch_size"]
    for name in config["hooks"]:
        for lr in config["lrs"]["vote" if name.startswith("vote") else "sgd"]:
            torch.manual_seed(config["seed"])
            model = build_model("cnn")
            ddp = DistributedDataParallel(model)
            if name != "allreduce":  # DDP's own C++ all-reduce is the baseline
                state, hook = make_hook(name, model, max(2, steps // 10))
                ddp.register_comm_hook(state, waited(hook) if "powersgd" in name else hook)
            vote = name.startswith("vote")
            optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.0 if vote else 0.9)
            order = np.random.default_rng([config["seed"], rank]).permutation(shard)
            started, losses = time.perf_counter(), []
            for step in range(steps):
                idx = order[(step * batch) % len(order):][:batch]
                loss = functional.cross_entropy(ddp(images[idx]), labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            with torch.no_grad():
                correct = torch.tensor([sum(int((model(x).argmax(1) == y).sum())
                                            for x, y in zip(test_x.split(500), test_y.split(500),
                                                            strict=True))])
            dist.all_reduce(correct)
            seconds = time.perf_counter() - started
            if rank == 0:
                row = {"hook": name, "lr": lr, "train_steps": steps, "batch_per_rank": batch,
                       "workers": world, "test_accuracy": int(correct) / len(test.labels),
                       "final_train_loss": float(np.mean(losses[-20:])),
                       "finite": bool(np.isfinite(losses).all()), "seconds": seconds,
                       "loadavg": os.getloadavg()[0]}
                print(f"accuracy {name} lr {lr}: {row['test_accuracy']:.4f} "
                      f"({seconds:.0f} s, load {row['loadavg']:.1f})", flush=True)
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
            del ddp
    dist.barrier()
    dist.destroy_process_group()


def run_accuracy(args: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    out = run_dir / "accuracy.jsonl"
    config = {"data_dir": args.data_dir or None, "seed": args.seed,
              "train_steps": args.train_steps, "batch_size": args.batch_size,
              "hooks": args.accuracy_hooks.split(","),
              "lrs": {"sgd": [float(x) for x in args.sgd_lrs.split(",")],
                      "vote": [float(x) for x in args.vote_lrs.split(",")]}}
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(accuracy_rank, args=(args.world, f"{tmp}/store", config, str(out)),
                 nprocs=args.world)
    return accuracy_rows(out)


def accuracy_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``accuracy.jsonl``, each hook's best learning rate marked."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for name in {r["hook"] for r in rows}:
        mine = [r for r in rows if r["hook"] == name]
        best = max(mine, key=lambda r: r["test_accuracy"])
        for r in mine:
            r["best_lr"] = r is best
    return rows


# ------------------------------------------------------------------------------ report
def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(comm: list[dict], accuracy: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if accuracy else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    groups = sorted({(r["rate"], r["model"]) for r in comm})
    hooks = [h for h in HOOKS if any(r["hook"] == h for r in comm)]
    width = 0.8 / max(1, len(hooks))
    for j, hook in enumerate(hooks):
        by = {(r["rate"], r["model"]): r for r in comm if r["hook"] == hook}
        x = np.arange(len(groups)) + j * width
        axes[0].bar(x, [1e3 * by[g]["median_s"] for g in groups], width, label=hook)
        axes[1].bar(x, [by[g]["wchar_bytes_per_rank"] / 2**20 for g in groups], width,
                    label=hook)
    for ax, label in ((axes[0], "communication per step (ms, slowest rank, median)"),
                      (axes[1], "bytes written per rank and step (MiB, wchar)")):
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{m}\n{rate}" for rate, m in groups])
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    if accuracy:
        best = [r for r in accuracy if r["best_lr"]]
        best.sort(key=lambda r: HOOKS.index(r["hook"]))
        axes[2].bar([r["hook"] for r in best], [r["test_accuracy"] for r in best])
        for k, r in enumerate(best):
            axes[2].text(k, r["test_accuracy"], f"{r['test_accuracy']:.3f}\nlr {r['lr']:g}",
                         ha="center", va="bottom", fontsize=8)
        low = min(r["test_accuracy"] for r in best)
        axes[2].set_ylim(max(0.0, low - 0.05), 1.0)
        axes[2].tick_params(axis="x", rotation=30)
        axes[2].set_ylabel(f"Fashion-MNIST test accuracy after {best[0]['train_steps']} steps")
    loads = [r.get("loadavg_1min", float("nan")) for r in comm]
    fig.suptitle(f"DDP hooks, 4 gloo ranks; communication measured at load average "
                 f"{min(loads):.1f}-{max(loads):.1f} on 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="both", choices=("comm", "accuracy", "both", "none"))
    parser.add_argument("--rates", default="1gbit,none",
                        help="link rates of the cluster, comma-separated ('none': no limit)")
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--hooks", default=",".join(HOOKS))
    parser.add_argument("--steps", type=int, default=5, help="timed replays per hook")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed replays first (PowerSGD compresses from the third)")
    parser.add_argument("--world", type=int, default=4)
    parser.add_argument("--priority", type=int, default=0,
                        help="as root: the ranks' niceness (e.g. -10 on a busy machine)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per rate, seconds")
    parser.add_argument("--accuracy-hooks", default=",".join(HOOKS))
    parser.add_argument("--sgd-lrs", default=",".join(map(str, LR_GRIDS["sgd"])),
                        help="learning rates of fp32 / fp16 / PowerSGD (SGD, momentum 0.9)")
    parser.add_argument("--vote-lrs", default=",".join(map(str, LR_GRIDS["vote"])),
                        help="learning rates of the vote hooks (plain SGD)")
    parser.add_argument("--train-steps", type=int, default=200, help="per hook and lr")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", default=str(ROOT / "runs"))
    parser.add_argument("--comm-from", default="",
                        help="a previous run's folder: report its communication rows "
                             "(comm.json) instead of measuring")
    parser.add_argument("--accuracy-from", default="",
                        help="a previous run's folder: report its accuracy rows "
                             "(accuracy.jsonl, complete or not) instead of training")
    parser.add_argument("--docs", action="store_true",
                        help="copy the results to docs/results/bench_hooks/")
    # One rank of the communication part (started by run_comm inside a namespace).
    parser.add_argument("--comm-rank", dest="rank", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--master", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=PORT, help=argparse.SUPPRESS)
    parser.add_argument("--iface", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rate-label", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rank >= 0:
        comm_rank(args)
        return 0
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = Path(args.results_dir) / "bench_hooks" / stamp
    run_dir.mkdir(parents=True)
    load_start = os.getloadavg()
    (run_dir / "config.json").write_text(json.dumps({**vars(args), "loadavg_start": load_start},
                                                    indent=2))
    if args.comm_from:
        comm = json.loads((Path(args.comm_from) / "comm.json").read_text())
    else:
        comm = run_comm(args, run_dir) if args.part in ("comm", "both") else []
    (run_dir / "comm.json").write_text(json.dumps(comm, indent=2))
    load_comm = os.getloadavg()
    if args.accuracy_from:
        accuracy = accuracy_rows(Path(args.accuracy_from) / "accuracy.jsonl")
    else:
        accuracy = run_accuracy(args, run_dir) if args.part in ("accuracy", "both") else []
    load_end = os.getloadavg()
    write_csv(run_dir / "comm.csv", comm)
    write_csv(run_dir / "accuracy.csv", accuracy)
    if comm:
        plot(comm, accuracy, run_dir / "hooks.png")
    summary = {"loadavg_start": load_start, "loadavg_after_comm": load_comm,
               "loadavg_end": load_end,
               "allreduce_over_vote": {f"{r['rate']} {r['model']} {r['hook']}":
                                       r["allreduce_over_this"] for r in comm},
               "best_accuracy": {r["hook"]: [r["lr"], r["test_accuracy"]]
                                 for r in accuracy if r["best_lr"]}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    for r in comm:
        print(f"{r['rate']:>6} {r['model']:>9} {r['hook']:>15} {1e3 * r['median_s']:9.1f} ms "
              f"{r['wchar_bytes_per_rank']:13.0f} B (tx {r['tx_bytes_per_rank']:13.0f}) "
              f"allreduce/this {r['allreduce_over_this']:6.2f}x")
    for r in accuracy:
        print(f"{r['hook']:>15} lr {r['lr']:<7g} {r['test_accuracy']:.4f}"
              f"{'  best' if r['best_lr'] else ''}")
    print(f"load average: start {load_start[0]:.1f}, after comm {load_comm[0]:.1f}, "
          f"end {load_end[0]:.1f} (2 cores); results in {run_dir}")
    if args.docs:
        target = ROOT / "docs" / "results" / "bench_hooks"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("comm.csv", "accuracy.csv", "hooks.png", "summary.json", "config.json",
                     "comm.json"):
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, target / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
