"""The cost of the message MAC (keyed BLAKE2b, ``raysign.wire.sign_message``) per round at
ResNet-18 size, against the round it protects.

Per round, with M workers and S vote shards, the MAC adds on the critical path one signature
per worker (the workers sign in parallel) and M verifications per vote actor (each actor
checks its shard's M messages one after another): ``t_sign + M t_verify`` for S = 1. This
times both on the packed message of ResNet-18 (11.2M parameters -> 1.4 MB) and, on the same
machine at the same time, the round they belong to: one worker's ResNet-18 gradient on a
batch, sign + pack, the majority vote of M messages and unpack + apply. It prints the MAC's
share of that round and of the communication round alone, and the load average, since the
machine is shared::

    python scripts/bench_message_mac.py --workers 4 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raysign import wire  # noqa: E402
from raysign.signs import majority_vote, pack_signs, unpack_signs  # noqa: E402
from raysign.signsgd.models import build_model, num_parameters  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet18")
    d = num_parameters(model)
    grad = torch.randn(d)
    message = wire.new_message(wire.KIND_SIGNS, sender=0, step=1, shard=0, length=d)
    wire.body(message)[:] = pack_signs(grad).numpy()
    key = secrets.token_bytes(32)
    wire.sign_message(message, key)
    read = dict(kind=wire.KIND_SIGNS, step=1, shard=0, length=d)

    t_sign = median_seconds(lambda: wire.sign_message(message, key), args.repeats)
    t_verify = median_seconds(lambda: wire.read_message(message, **read, sender=0, key=key),
                              args.repeats)
    mac = t_sign + args.workers * t_verify

    inputs = torch.randn(args.batch_size, 1, 28, 28)
    targets = torch.randint(0, 10, (args.batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def gradient():
        model.zero_grad()
        loss_fn(model(inputs), targets).backward()

    packed = [pack_signs(torch.randn(d)) for _ in range(args.workers)]
    flat = torch.zeros(d)

    def exchange():
        wire.body(message)[:] = pack_signs(grad).numpy()
        voted = majority_vote(packed)
        flat.add_(unpack_signs(voted, d), alpha=-1e-3)

    gradient()  # warm-up
    t_grad = median_seconds(gradient, max(3, args.repeats // 4))
    t_exchange = median_seconds(exchange, args.repeats)
    round_s = t_grad + t_exchange + mac
    load = os.getloadavg()
    print(f"d = {d:,} parameters, message {message.nbytes:,} bytes, {args.workers} workers, "
          f"S = 1, torch threads {args.threads}, batch {args.batch_size}")
    print(f"sign {1e3 * t_sign:.2f} ms, verify {1e3 * t_verify:.2f} ms per message; "
          f"MAC per round (sign + {args.workers} verifications) {1e3 * mac:.2f} ms")
    print(f"round here: gradient {1e3 * t_grad:.1f} ms + pack/vote/unpack "
          f"{1e3 * t_exchange:.1f} ms + MAC = {1e3 * round_s:.1f} ms; "
          f"MAC = {100 * mac / round_s:.2f}% of the round, "
          f"{100 * mac / (t_exchange + mac):.1f}% of its communication CPU work")
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
