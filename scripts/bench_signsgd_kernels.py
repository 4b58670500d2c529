"""Throughput of pack, unpack and majority vote against two references, in one run.

For d parameters (default 25.6M, ResNet-50 size) and M voters (default 3, 7, 15, 31):

- raysign: ``pack_signs``, ``unpack_signs``, ``majority_vote`` (numba kernels where numba
  imports, else numpy; ``RAYSIGN_KERNELS=numpy`` forces numpy);
- plain reference: ``np.packbits`` / ``np.unpackbits`` to one value per sign, integer sum,
  sign, ``np.packbits`` again (what one writes without thinking about bits);
- memory floors, measured in the same run: pack against one read of the fp32 input (the
  fastest of ``x.max()`` and an OR-reduction of its bits), unpack against one write of the fp32
  output (``fill(1.0)``, plain stores; ``fill(0.0)``, printed too, may be memset, which glibc
  streams only above a threshold it derives from the last-level cache size),
  the vote against a copy of its M packed inputs (``np.copyto``), and its ratio to the memory
  limit of reading M inputs and writing one output, (M + 1) / (2 M) of that copy.

Each timing is the best of ``--repeats`` runs; every line carries the load average. Prints a
table and writes ``runs/bench_signsgd_kernels/<timestamp>/bench_signsgd_kernels.csv``; on a
machine with CUDA the kernels are timed on CUDA tensors too, against the GPU's own
device-to-device copy (``--cuda-only`` skips the CPU part).

    python scripts/bench_signsgd_kernels.py
    python scripts/bench_signsgd_kernels.py --d 1000000 --voters 7 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysign.results import RunDir  # noqa: E402
from raysign.signs import (  # noqa: E402
    kernel_backend,
    majority_vote,
    pack_signs,
    packed_nbytes,
    unpack_signs,
)


def best_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None,
              ) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def unpack_stores(nbytes: int) -> str:
    """Which stores ``unpack_signs`` writes an fp32 output of ``nbytes`` with on CPU."""
    if kernel_backend() != "numba":
        return "numpy's"
    from raysign.sign_kernels import STREAM_MIN_BYTES

    kind = "streaming" if nbytes >= STREAM_MIN_BYTES else "plain"
    return f"{kind} (streaming from {STREAM_MIN_BYTES >> 20} MiB)"


def reference_pack(x: np.ndarray) -> np.ndarray:
    return np.packbits(x < 0, bitorder="little")


def reference_unpack(packed: np.ndarray, d: int) -> np.ndarray:
    bits = np.unpackbits(packed, bitorder="little")[:d]
    return 1.0 - 2.0 * bits.astype(np.float32)


def reference_vote(packed: list[np.ndarray], d: int) -> np.ndarray:
    total = np.zeros(d, dtype=np.int32)
    for row in packed:
        total += 1 - 2 * np.unpackbits(row, bitorder="little")[:d].astype(np.int32)
    return np.packbits(total < 0, bitorder="little")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=25_600_000)
    parser.add_argument("--voters", type=int, nargs="+", default=[3, 7, 15, 31])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results-dir", default="runs")
    parser.add_argument("--cuda-only", action="store_true", help="time only CUDA tensors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d, reps = args.d, args.repeats
    rng = np.random.default_rng(0)
    x = rng.standard_normal(d, dtype=np.float32)
    xt = torch.from_numpy(x)
    rows = []
    if not args.cuda_only:
        print(f"d={d}, CPU kernels: {kernel_backend()}, torch threads {args.threads}")

    def record(op: str, m: int, seconds: float, ref: float, floor: float, floor_name: str,
               nbytes: int, device: str = "cpu", limit: float = float("nan")) -> None:
        load = os.getloadavg()[0]
        rows.append({"op": op, "M": m, "d": d, "device": device, "seconds": seconds,
                     "GB_per_s": nbytes / seconds / 1e9, "reference_seconds": ref,
                     "floor": floor_name, "floor_seconds": floor,
                     "speedup_vs_reference": ref / seconds, "time_vs_floor": seconds / floor,
                     "time_vs_memory_limit": seconds / (limit * floor), "load_avg_1min": load})
        extra = "" if math.isnan(limit) else f"  {seconds / (limit * floor):5.2f}x the limit"
        print(f"{op:7s} M={m:<3d} {device:4s} {1e3 * seconds:8.2f} ms  "
              f"{nbytes / seconds / 1e9:6.2f} GB/s  {ref / seconds:6.1f}x faster than reference  "
              f"{seconds / floor:5.2f}x {floor_name}{extra}  (load {load:.1f})")

    if not args.cuda_only:
        # Pack: fp32 in, d/8 bytes out. Floor: one read of the fp32 input.
        out = torch.empty(packed_nbytes(d), dtype=torch.uint8)
        bits = x.view(np.int32)
        t_read = min(best_time(lambda: x.max(), reps),
                     best_time(lambda: np.bitwise_or.reduce(bits), reps))
        t_pack = best_time(lambda: pack_signs(xt, out=out), reps)
        t_ref = best_time(lambda: reference_pack(x), reps)
        record("pack", 1, t_pack, t_ref, t_read, "read of the fp32 input", x.nbytes)

        # Unpack: d/8 bytes in, fp32 out. Floor: one write of the fp32 output.
        packed = pack_signs(xt)
        values = torch.empty(d)
        array = values.numpy()
        t_write = best_time(lambda: array.fill(1.0), reps)
        t_memset = best_time(lambda: array.fill(0.0), reps)
        t_unpack = best_time(lambda: unpack_signs(packed, d, out=values), reps)
        t_ref = best_time(lambda: reference_unpack(packed.numpy(), d), reps)
        record("unpack", 1, t_unpack, t_ref, t_write, "write of the fp32 output", x.nbytes)
        print(f"{'':7s} unpack is {t_unpack / t_memset:.2f}x a memset of the fp32 output; "
              f"its own stores: {unpack_stores(x.nbytes)}")

        for m in args.voters:
            inputs = [torch.from_numpy(rng.integers(0, 256, packed_nbytes(d), dtype=np.uint8))
                      for _ in range(m)]
            arrays = [t.numpy() for t in inputs]
            copies = [np.empty_like(a) for a in arrays]

            def copy_all(arrays=arrays, copies=copies):
                for src, dst in zip(arrays, copies, strict=True):
                    np.copyto(dst, src)

            t_copy = best_time(copy_all, reps)
            t_vote = best_time(lambda inputs=inputs: majority_vote(inputs), reps)
            t_ref = best_time(lambda arrays=arrays: reference_vote(arrays, d), max(1, reps // 2))
            record("vote", m, t_vote, t_ref, t_copy, "copy of the inputs",
                   sum(a.nbytes for a in arrays), limit=(m + 1) / (2 * m))

    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        xg = xt.cuda()
        t_read = best_time(lambda: xg.max(), reps, sync)
        t_copy = best_time(lambda: xg.clone(), reps, sync)
        t_pack = best_time(lambda: pack_signs(xg), reps, sync)
        record("pack", 1, t_pack, float("nan"), t_read, "read of the fp32 input", x.nbytes,
               "cuda")
        pg = pack_signs(xg)
        vg = torch.empty_like(xg)
        t_write = best_time(lambda: vg.fill_(1.0), reps, sync)
        t_unpack = best_time(lambda: unpack_signs(pg, d, out=vg), reps, sync)
        record("unpack", 1, t_unpack, float("nan"), t_write, "write of the fp32 output",
               x.nbytes, "cuda")
        record("copy", 1, t_copy, float("nan"), t_copy, "device-to-device copy", 2 * x.nbytes,
               "cuda")
        for m in args.voters:
            inputs = [torch.randint(0, 256, (packed_nbytes(d),), dtype=torch.uint8,
                                    device="cuda") for _ in range(m)]
            t_vote = best_time(lambda inputs=inputs: majority_vote(inputs), reps, sync)
            t_copy = best_time(lambda inputs=inputs: [t.clone() for t in inputs], reps, sync)
            record("vote", m, t_vote, float("nan"), t_copy, "device-to-device copy",
                   sum(t.numel() for t in inputs), "cuda", limit=(m + 1) / (2 * m))

    run = RunDir.create(args.results_dir, "bench_signsgd_kernels")
    run.write_csv("bench_signsgd_kernels.csv", rows)
    print(f"results: {run.file('bench_signsgd_kernels.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
