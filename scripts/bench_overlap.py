"""The trainer's step with and without overlap of the vote with the backward pass (issue #21).

Two ``SignSGDTrainer``s of the same run, one with ``overlap=False`` (the sequential round:
the whole gradient, then pack, send, vote, apply) and one with ``overlap=True`` (vote shard s
leaves during the backward pass, as soon as its slice of the gradient is final), on the same
actors' machines, plus the communication benchmark's round (``raysign.actors.comm_bench.
VoteRound``) at the same d, M, S and transport. Rounds alternate (sequential, overlapped,
comm; the first two swap places every round) after ``--warmup`` rounds of each, so all see
the same load. Printed (medians, ms): the step of each trainer at the driver; compute, the
sequential trainer's ``compute`` stage (the slowest worker's gradient, nothing else running
in its round); communication, the comm benchmark's round; their sum and maximum - the step
the sequential round should take, and the best overlap could reach. The two trainers take
the same steps, so their parameters must be bit-identical at the end (checked, printed).
The load average is printed at the start and the end.

    python scripts/bench_overlap.py --workers 4 --rounds 8
    python scripts/netns_cluster.py exec -- python scripts/bench_overlap.py --address auto

On a single-node Ray every actor shares the machine's cores (M workers at one torch thread
each); on a cluster (``--address``) worker i of each trainer runs on node i.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("sequential", "overlap")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="a built-in model")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--workers", type=int, default=4, help="M")
    parser.add_argument("--shards", type=int, default=0, help="S vote shards (0: M)")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds of each first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker-cpus", type=float, default=1.0,
                        help="Ray CPUs per trainer worker (each runs one torch thread; "
                             "give 0.5 where a node has 1 CPU for the two trainers' workers)")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (default: a private local Ray)")
    parser.add_argument("--out", default=None, help="write every round as JSON here")
    parser.add_argument("--faults", action="store_true",
                        help="instead, in this process (one torch thread): CPU ms and minor page "
                             "faults per step of Replica.gradient into a new [d] and into a "
                             "[d] buffer kept from step to step (what SignWorker does)")
    parser.add_argument("--paired", nargs="+", metavar="JSON", default=None,
                        help="instead, print the paired figures of runs written with --out")
    parser.add_argument("--control", action="store_true",
                        help="an A/A control: the second trainer runs overlap=False too, so "
                             "any difference between the two is the setup's, not overlap's")
    return parser.parse_args(argv)


def _load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def gradient_costs(model: str, batch_size: int, shards: int, repeats: int = 8) -> dict:
    """Median CPU ms (``time.process_time``) and minor page faults per step of a replica's
    gradient into a new [d] tensor and into a kept one (``Replica.gradient(out=)``; also
    the overlapped round's ``gradient_in_slices``), alternated, in this process."""
    import resource

    import torch

    from raysign.signs import shard_bounds
    from raysign.signsgd.config import SignSGDConfig
    from raysign.signsgd.replica import Replica

    torch.set_num_threads(1)
    config = SignSGDConfig(model=model, num_workers=1, batch_size=batch_size)
    rng = np.random.default_rng(0)
    replica = Replica(config, 0, rng.random((8 * batch_size, 1, 28, 28), dtype=np.float32),
                      rng.integers(0, 10, 8 * batch_size))
    bounds = shard_bounds(replica.d, shards)
    kept = torch.empty_like(replica.flat)
    ways = {"gradient(), a new [d]": replica.gradient,
            "gradient(out=kept)": lambda: replica.gradient(out=kept),
            "gradient_in_slices(out=kept)": lambda: replica.gradient_in_slices(
                bounds, lambda s, g: None, out=kept)}
    seen: dict[str, list[tuple[float, int]]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.process_time()
            way()
            seen[name].append((1000 * (time.process_time() - t0),
                               resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return {name: {"cpu_ms": float(np.median([c for c, _ in v[2:]])),
                   "minor_faults": int(np.median([f for _, f in v[2:]]))}
            for name, v in seen.items()}


def paired(rows: list[dict]) -> str:
    """Per round, sequential step - overlapped step (the two ran back to back): the median,
    the quartiles and in how many rounds the overlapped one was the shorter."""
    diff = 1000 * np.array([r["sequential"] - r["overlap"] for r in rows])
    low, high = np.percentile(diff, [25, 75])
    return (f"per round, sequential - overlap: median {np.median(diff):.1f} ms (quartiles "
            f"{low:.0f} / {high:.0f}); overlap the shorter in {int((diff > 0).sum())} of "
            f"{len(diff)} rounds")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.paired:
        for path in args.paired:
            run = json.loads(Path(path).read_text())
            print(f"{path}{' (control)' if run.get('control') else ''}: {paired(run['rows'])}")
        return 0
    if args.faults:
        costs = gradient_costs(args.model, args.batch_size, args.shards or args.workers)
        print(f"{args.model}, batch {args.batch_size}, one torch thread, per step (median); "
              f"{_load()}")
        for name, cost in costs.items():
            print(f"{name:>28}: CPU {cost['cpu_ms']:7.1f} ms, {cost['minor_faults']:6d} minor "
                  "page faults")
        return 0
    import ray

    from raysign import wire
    from raysign.actors.cluster import ActorResources, connect, start_local
    from raysign.actors.comm_bench import VoteRound, spread_group
    from raysign.actors.trainer import SignSGDTrainer
    from raysign.signsgd.config import SignSGDConfig

    m = args.workers
    s = args.shards or m
    if args.address:
        connect(args.address)
    else:  # room for 2 x M trainer workers, the comm benchmark's and the vote actors
        start_local(num_cpus=int(2 * m * args.worker_cpus) + 2, log_to_driver=False)
    single_node = len([n for n in ray.nodes() if n["Alive"]]) <= 1
    load_start = os.getloadavg()
    print(f"[bench_overlap] {_load()} at start; {len(ray.nodes())} Ray node(s)", flush=True)
    trainers = {}
    for mode in MODES:
        config = SignSGDConfig(
            name="bench_overlap", model=args.model, dataset=args.dataset,
            data_dir=args.data_dir, num_workers=m, vote_shards=s, transport="direct",
            overlap=mode == "overlap" and not args.control, batch_size=args.batch_size,
            train_subset=m * args.batch_size * 4, test_subset=16,
            max_steps=args.warmup + args.rounds, results_dir=tempfile.mkdtemp(prefix="overlap_"))
        trainers[mode] = SignSGDTrainer(
            config, progress=False,
            worker_options=ActorResources(num_cpus=args.worker_cpus, num_gpus=0.0))
        trainers[mode].start()
    d = trainers["sequential"].d
    group = spread_group(m, cpus_per_bundle=0.25,
                         strategy="PACK" if single_node else "STRICT_SPREAD")
    config = trainers["sequential"].config
    bench = VoteRound(group, m, d, s, wire.KIND_SIGNS, transport="direct",
                      momentum=config.momentum, lr=config.lr, weight_decay=config.weight_decay)
    rows: list[dict] = []
    try:
        for i in range(args.warmup + args.rounds):
            row: dict = {"round": i + 1}
            order = MODES if i % 2 == 0 else MODES[::-1]
            for mode in order:
                t0 = time.perf_counter()
                record = trainers[mode].round(i + 1)
                row[mode] = time.perf_counter() - t0
                row[f"{mode}_compute"] = record["compute"]
                row[f"{mode}_overlapped"] = record["overlapped_workers"]
                if record["voters"] != m or record["failed_workers"]:
                    raise RuntimeError(f"{mode} round {i + 1}: {record['voters']} of {m} voters, "
                                       f"failed {record['failed_workers']}; not comparable")
            row["comm"] = bench.round(i)["round_s"]
            row["load1"] = os.getloadavg()[0]
            print(f"[bench_overlap] round {i + 1}: sequential {1000 * row['sequential']:.0f} ms"
                  f" (compute {1000 * row['sequential_compute']:.0f}), overlap "
                  f"{1000 * row['overlap']:.0f} ms, comm {1000 * row['comm']:.0f} ms; load "
                  f"{row['load1']:.2f}" + (" (warm-up)" if i < args.warmup else ""), flush=True)
            if i >= args.warmup:
                rows.append(row)
        sums = {mode: ray.get([w.checksum.remote() for w in trainers[mode].workers])
                for mode in MODES}
    finally:
        bench.shutdown()
        for trainer in trainers.values():
            trainer.shutdown()
        ray.util.remove_placement_group(group)
    identical = sums["sequential"] == sums["overlap"] and len(set(sums["overlap"])) == 1
    expected = [] if args.control else list(range(m))
    if not all(r["overlap_overlapped"] == expected for r in rows):
        raise RuntimeError("the overlap trainer's workers fell back to the sequential round")

    def med(key: str) -> float:
        return 1000 * float(np.median([r[key] for r in rows]))

    compute, comm = med("sequential_compute"), med("comm")
    seq, over = med("sequential"), med("overlap")
    print(f"model {args.model} d={d:,} M={m} S={s} direct, {args.rounds} rounds, medians (ms)"
          + (" - CONTROL: the 'overlap' trainer ran overlap=False" if args.control else ""))
    print(f"  step, sequential          {seq:9.1f}")
    print(f"  step, overlap             {over:9.1f}   ({seq / over:.3f}x)")
    print(f"  compute (sequential's)    {compute:9.1f}")
    print(f"  communication (comm_bench){comm:9.1f}")
    print(f"  compute + communication   {compute + comm:9.1f}")
    print(f"  max(compute, comm)        {max(compute, comm):9.1f}")
    print(f"  overlap trainer's compute {med('overlap_compute'):9.1f}   (backward + the sends "
          "made inside it)")
    print(paired(rows))
    print(f"parameters bit-identical after {args.warmup + args.rounds} steps: {identical}; "
          f"{_load()} at the end")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"model": args.model, "d": d, "workers": m, "shards": s, "rounds": args.rounds,
             "median_ms": {"sequential": seq, "overlap": over, "compute": compute,
                           "comm": comm, "sum": compute + comm, "max": max(compute, comm),
                           "overlap_compute": med("overlap_compute")},
             "identical": identical, "control": args.control, "rows": rows,
             "loadavg_start": load_start,
             "loadavg_end": os.getloadavg(), "command": " ".join(sys.argv)}, indent=1))
    ray.shutdown()
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
