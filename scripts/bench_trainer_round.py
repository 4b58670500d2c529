"""The trainer's round against the communication benchmark's round, at the same d, in one run.

Issue #18 item 4: the communication benchmark (``raysign.actors.comm_bench.VoteRound``) must
describe the trainer (``raysign.actors.trainer.SignSGDTrainer``). Both run the same
worker-side code (``raysign.signsgd.exchange``: the gradient's finite check, the momentum step
fused with the pack into the message body, MAC, validate and apply the vote with weight decay)
over the same vote actors and transport; this script times them side by side:

- the trainer: M ``SignWorker`` actors on a built-in model (default ResNet-18, d = 11.17M),
  one ``SignSGDTrainer.round`` at a time, wall seconds at the driver, minus the round's
  gradient computation (its ``compute`` stage: the slowest worker's ``t_grad - t_start``);
- the benchmark: M ``CommWorker`` actors with a synthetic gradient of the same d, the same
  M, S, transport and Signum settings, one ``VoteRound.round`` at a time (it has no gradient
  to compute).

Rounds alternate (trainer, benchmark, trainer, ...) after ``--warmup`` rounds of each, so both
see the same machine load; the medians, their ratio, the five-stage split of each and the load
average are printed (and written as JSON with ``--out``). Every worker runs one torch thread
in both (``CommWorker``'s setting; the trainer's workers get one CPU each).

    python scripts/bench_trainer_round.py --workers 4 --rounds 10
    python scripts/netns_cluster.py exec -- python scripts/bench_trainer_round.py --address auto

On a single-node Ray the actors of both share the machine's cores; on a cluster
(``--address``) worker i of each runs on node i.
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

STAGES = ("compress", "gather", "vote", "broadcast", "decompress")
RESNET18_D = 11_172_810  # raysign.signsgd.models.resnet18's parameters


class FlatModel:
    """``--model flat``: a user workload of d parameters w whose loss is ``mean(x) <w, u>``
    (u a fixed N(0,1) vector), so the gradient ``mean(x) u`` costs a few passes over d and
    the workers finish it together: the round is almost all communication."""

    def __init__(self, d: int):
        self.d = d

    def __call__(self):
        import torch

        d = self.d

        class Flat(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(d))
                self.register_buffer("u", torch.randn(d, generator=torch.Generator()
                                                      .manual_seed(0)))

            def forward(self, x):
                return (self.w * self.u).sum() * x.float().mean()

        return Flat()


def _flat_loss(output, target):
    return output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18",
                        help="a built-in model (default resnet18), or 'flat': one parameter "
                             "vector of --params entries with a gradient almost free to compute")
    parser.add_argument("--params", type=int, default=RESNET18_D, help="d of --model flat")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--workers", type=int, default=4, help="M")
    parser.add_argument("--shards", type=int, default=0, help="S vote shards (0: M)")
    parser.add_argument("--transport", default="direct", choices=("direct", "objects"))
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds of each first")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="the trainer's mini-batch (its compute is subtracted)")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (default: a private local Ray)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--pieces", action="store_true",
                        help="instead, time each worker-side piece of a round in this process "
                             "(one torch thread, d = --params): the fused pieces both workers "
                             "run, beside the unfused ones they replaced")
    return parser.parse_args(argv)


def _load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def worker_pieces(d: int, shards: int, repeats: int = 15, beta: float = 0.9,
                  weight_decay: float = 1e-4) -> dict:
    """Median milliseconds of each worker-side piece of one round at d parameters, S shards,
    in this process, one torch thread: the pieces both workers run (the gradient's finite
    check, the momentum step fused with pack + MAC, validate + apply the votes with weight
    decay), beside the unfused pieces the trainer ran before (momentum, a second finite
    check, pack; unpack, weight decay, subtract)."""
    import torch

    from raysign import wire
    from raysign.optim import momentum
    from raysign.signs import pack_signs, shard_bounds, unpack_signs
    from raysign.signsgd.exchange import all_finite, apply_vote, encode_shard

    torch.set_num_threads(1)
    grad, params, update = torch.randn(d), torch.randn(d), torch.empty(d)
    transform = momentum(beta)
    state = transform.init(grad)
    packed = pack_signs(grad)
    bounds, key = shard_bounds(d, shards), os.urandom(32)
    voted = [encode_shard(wire.KIND_SIGNS, grad[a:b], sender=wire.VOTE_SENDER, step=1,
                          shard=j) for j, (a, b) in enumerate(bounds)]
    pieces = {
        "finite check of g (both)": lambda: all_finite(grad),
        "momentum+pack+MAC, S (both)": lambda: [
            encode_shard(wire.KIND_SIGNS, grad[a:b], sender=0, step=1, shard=j, key=key,
                         momentum=state[a:b], beta=beta)
            for j, (a, b) in enumerate(bounds)],
        "validate+apply S (both)": lambda: [
            apply_vote(voted[j], params[a:b], kind=wire.KIND_SIGNS, step=1, shard=j,
                       lr=1e-3, weight_decay=weight_decay)
            for j, (a, b) in enumerate(bounds)],
        "before: momentum": lambda: transform.update(grad, state),
        "before: finite check of m": lambda: all_finite(state),
        "before: pack": lambda: pack_signs(state, out=packed),
        "before: unpack": lambda: unpack_signs(packed, d, scale=1e-3, out=update),
        "before: weight decay": lambda: params.mul_(1 - 1e-3 * weight_decay),
        "before: subtract": lambda: params.sub_(update),
    }
    times: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(repeats):
        for name, piece in pieces.items():
            t0 = time.perf_counter()
            piece()
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * float(np.median(t[2:])) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pieces:
        pieces = worker_pieces(args.params, args.shards or args.workers)
        print(f"worker-side pieces of one round, d={args.params:,}, S={args.shards or args.workers}"
              f", one thread, median ms; {_load()}")
        for name, ms in pieces.items():
            print(f"{name:>30} {ms:8.2f}")
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
    else:  # room for M trainer workers (1 CPU each), M bench workers and the vote actors
        start_local(num_cpus=2 * m + 2, log_to_driver=False)
    single_node = len([n for n in ray.nodes() if n["Alive"]]) <= 1
    print(f"[bench_trainer_round] {_load()} at start; {len(ray.nodes())} Ray node(s)")
    config = SignSGDConfig(
        name="bench_trainer_round", model="mlp" if args.model == "flat" else args.model,
        dataset=args.dataset,
        data_dir=args.data_dir, num_workers=m, vote_shards=s, transport=args.transport,
        batch_size=args.batch_size, train_subset=m * args.batch_size * 4, test_subset=16,
        max_steps=args.warmup + args.rounds, results_dir=tempfile.mkdtemp(prefix="bench_round_"))
    workload = None
    if args.model == "flat":
        from raysign.signsgd.workload import Workload

        rows = m * args.batch_size * 4
        workload = Workload(FlatModel(args.params), _flat_loss,
                            (np.ones((rows, 1), np.float32), np.zeros(rows, np.int64)))
    trainer = SignSGDTrainer(config, progress=False, workload=workload,
                             worker_options=ActorResources(num_cpus=1.0, num_gpus=0.0))
    trainer.start()
    group = spread_group(m, cpus_per_bundle=0.25,
                         strategy="PACK" if single_node else "STRICT_SPREAD")
    # The benchmark's workers take the trainer's Signum steps (momentum, lr, weight decay).
    bench = VoteRound(group, m, trainer.d, s, wire.KIND_SIGNS, transport=args.transport,
                      momentum=config.momentum, lr=config.lr, weight_decay=config.weight_decay)
    trainer_rows, bench_rows, dropped = [], [], []
    try:
        for i in range(args.warmup + args.rounds):
            t0 = time.perf_counter()
            record = trainer.round(i + 1)
            wall = time.perf_counter() - t0
            row = bench.round(i)
            if record["voters"] != m or record["failed_workers"]:
                # A worker died (e.g. killed for memory): that round includes a restart and
                # counts fewer voters, so it is not timed.
                print(f"[bench_trainer_round] trainer round {i + 1} counted "
                      f"{record['voters']} of {m} workers (failed {record['failed_workers']}); "
                      "not timed")
                dropped.append(i + 1)
                if len(dropped) > args.rounds // 2:
                    raise RuntimeError(f"trainer rounds {dropped} lost workers; see above")
            elif i >= args.warmup:
                trainer_rows.append({"round_s": wall, "comm_s": wall - record["compute"],
                                     **{k: record[k] for k in ("compute", *STAGES)}})
                bench_rows.append(row)
    finally:
        bench.shutdown()
        trainer.shutdown()
        ray.util.remove_placement_group(group)
    load = os.getloadavg()
    median = {"trainer": {k: float(np.median([r[k] for r in trainer_rows]))
                          for k in trainer_rows[0]},
              "bench": {k: float(np.median([r[k] for r in bench_rows]))
                        for k in ("round_s", *STAGES)}}
    ratio = median["trainer"]["comm_s"] / median["bench"]["round_s"]
    stage_sums = {who: float(np.median([sum(r[k] for k in STAGES) for r in rows]))
                  for who, rows in (("trainer", trainer_rows), ("bench", bench_rows))}
    stage_ratio = stage_sums["trainer"] / stage_sums["bench"]
    print(f"model {args.model} d={trainer.d:,} M={m} S={s} transport={args.transport} "
          f"rounds={args.rounds} (medians, seconds)")
    print(f"{'':>28}" + "".join(f"{k:>11}" for k in ("round", *STAGES)))
    t, b = median["trainer"], median["bench"]
    print(f"{'trainer (round - compute)':>28}{t['comm_s']:>11.4f}"
          + "".join(f"{t[k]:>11.4f}" for k in STAGES) + f"   compute {t['compute']:.4f}")
    print(f"{'comm_bench':>28}{b['round_s']:>11.4f}" + "".join(f"{b[k]:>11.4f}" for k in STAGES))
    print(f"ratio trainer / comm_bench: {ratio:.3f} ({abs(ratio - 1):.1%} apart); sum of the "
          f"five stages {stage_sums['trainer']:.4f} / {stage_sums['bench']:.4f} = "
          f"{stage_ratio:.3f}; {_load()} at the end")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"model": args.model, "d": trainer.d, "workers": m, "shards": s,
             "transport": args.transport, "rounds": args.rounds, "ratio": ratio,
             "stage_sums": stage_sums, "stage_ratio": stage_ratio,
             "rounds_not_timed": dropped,
             "median": median, "trainer_rows": trainer_rows, "bench_rows": bench_rows,
             "loadavg": load, "command": " ".join(sys.argv)}, indent=1))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
