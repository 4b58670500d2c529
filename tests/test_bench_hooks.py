"""``scripts/bench_hooks.py``'s measurement logic on 2 local gloo ranks with a small MLP.

The replay of DDP's buckets through a hook must put on the wire what the closed forms say:
the majority vote in the allgather topology (M - 1) ceil(d/8) bytes per rank and step, DDP's
fp32 ring all-reduce 2 (M - 1)/M 4d, fp16 half of that; each plus gloo's headers (~144 bytes
per peer and call, measured in tests/test_comm_hooks.py; 512 allowed) and the vote's padding
of each bucket to whole 64-bit words (< 8 bytes per bucket). The bytes are the ranks'
``wchar`` (/proc/self/io), as the benchmark reports them. d is read from the model here, the
forms are the test's own.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_hooks  # noqa: E402

WORLD = 2
HOOKS = ("allreduce", "fp16", "vote_allgather")


def measure_rank(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = bench_hooks.build_model("mlp")
    layout = bench_hooks.ddp_bucket_layout(model, torch.randn(2, 1, 28, 28))
    rows = [bench_hooks.measure_hook(name, model, layout, steps=2, warmup=1)
            for name in HOOKS]
    d = sum(p.numel() for p in model.parameters())
    Path(f"{out}/rank{rank}.json").write_text(json.dumps(
        {"d": d, "buckets": [sum(p.numel() for p in b) for b in layout], "rows": rows}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_hooks")
    context = mp.start_processes(measure_rank, args=(WORLD, str(tmp / "store"), str(tmp)),
                                 nprocs=WORLD, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail("the ranks did not finish in 120 s")
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_replayed_buckets_cover_every_parameter_once(measured):
    for rank in measured:
        assert sum(rank["buckets"]) == rank["d"] == 784 * 256 + 256 + 256 * 10 + 10


def test_wchar_bytes_per_step_match_the_closed_forms(measured):
    headers = 512 * (WORLD - 1)
    for rank in measured:
        d, buckets = rank["d"], len(rank["buckets"])
        rows = {row["hook"]: row for row in rank["rows"]}
        vote = (WORLD - 1) * math.ceil(d / 8)
        fp32 = 2 * (WORLD - 1) / WORLD * 4 * d
        expected = {"vote_allgather": (vote, vote + (WORLD - 1) * 8 * buckets),
                    "allreduce": (fp32, fp32), "fp16": (fp32 / 2, fp32 / 2)}
        for hook, (low, high) in expected.items():
            for written in rows[hook]["wchar"]:
                assert low <= written <= high + headers * buckets * 2, (hook, written, low)
        for row in rows.values():
            assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])


def test_comm_rows_take_the_slowest_rank_per_step_and_ratios_against_allreduce():
    def result(hook, seconds, wchar):
        return {"hook": hook, "model": "m", "d": 10, "buckets": 1, "seconds": seconds,
                "wchar": wchar, "tx": [0] * len(seconds)}

    per_rank = [[result("allreduce", [1.0, 3.0, 2.0], [40, 40, 40]),
                 result("vote_allgather", [0.1, 0.5, 0.2], [2, 2, 2])],
                [result("allreduce", [2.0, 1.0, 2.0], [40, 40, 40]),
                 result("vote_allgather", [0.3, 0.1, 0.1], [4, 4, 4])]]
    rows = bench_hooks.comm_rows(per_rank, "1gbit")
    base, vote = rows
    # per-step slowest: allreduce [2, 3, 2], vote [0.3, 0.5, 0.2]
    assert base["median_s"] == 2.0 and base["mean_s"] == pytest.approx(7 / 3)
    assert vote["median_s"] == 0.3 and vote["min_s"] == 0.2
    assert vote["allreduce_over_this"] == pytest.approx(2.0 / 0.3)
    assert vote["wchar_bytes_per_rank"] == 3.0 and vote["bytes_vs_allreduce"] == 3.0 / 40
