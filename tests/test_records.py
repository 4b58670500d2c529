"""The step record and the five-stage split of a round (``raysign.signsgd.records``), on stats
dicts written here by hand: the expected values are worked out in the test."""

from __future__ import annotations

import math

import pytest

from raysign.signsgd.records import round_stage_times, step_record, summarise


def worker(rank: int, t0: float, loss: float, **extra) -> dict:
    """A worker's compute stats: gradient 1 s after start, messages packed 0.5 s later."""
    return {"rank": rank, "t_start": t0, "t_grad": t0 + 1.0, "t_compress_end": t0 + 1.5,
            "epoch": 0, "loss": loss, "lr": 0.01, "bytes_sent": 100 + rank, "density": 0.5,
            **extra}


def vote(shard: int, start: float, stop: float, **extra) -> dict:
    return {"shard": shard, "t_vote_start": start, "t_vote_end": stop, "num_valid": 3,
            "rejected": [], **extra}


def applied(start: float, stop: float) -> dict:
    return {"t_apply_start": start, "t_apply_end": stop, "bytes_received": 40}


WORKERS = [worker(0, 10.0, 1.0), worker(1, 10.5, 3.0), worker(2, 10.2, 100.0)]
APPLIED = [applied(13.0, 13.25), applied(13.5, 13.6), applied(13.2, 13.5)]


def test_stage_times_take_the_slowest_actor_of_each_stage_and_the_gaps_between_them():
    votes = [vote(0, 12.0, 12.5), vote(1, 12.25, 12.5)]
    stages = round_stage_times(WORKERS, votes, APPLIED)
    # Last message packed at 12.0; last vote starts at 12.25 and ends at 12.5; last apply
    # starts at 13.5; the slowest apply takes 0.3 s.
    assert stages == pytest.approx({"compute": 1.0, "compress": 0.5, "gather": 0.25,
                                    "vote": 0.5, "broadcast": 1.0, "decompress": 0.3})


def test_step_record_counts_honest_replicas_and_lists_participation_in_shard_order():
    votes = [vote(1, 12.0, 12.5, counted=[0, 2]), vote(0, 12.0, 12.5, counted=[0, 1, 2],
                                                      rejected=["forged"])]
    record = step_record(5, WORKERS, votes, APPLIED, failed={1}, byzantine={2},
                         with_density=True, stages={"vote": 0.5})
    assert record["loss"] == 2.0  # ranks 0 and 1; rank 2 is Byzantine
    assert record["participation"] == [[0, 1, 2], [0, 2]]  # shard 0, then shard 1
    assert record["failed_workers"] == [1]
    assert record["rejected"] == 1
    assert record["bytes_sent_per_worker"] == 101.0
    assert record["density"] == 0.5 and record["vote"] == 0.5
    # Vote actors that do not report what counted: one None per shard.
    plain = step_record(5, WORKERS, [vote(0, 1, 2), vote(1, 1, 2)], APPLIED, failed=set(),
                        byzantine=set(), with_density=False, stages={})
    assert plain["participation"] == [None, None]
    assert "density" not in plain


def test_summary_skips_the_first_two_rounds_in_the_stage_times():
    records = [{"bytes_sent_per_worker": 10.0, "rejected": i, **dict.fromkeys(
        ("compute", "compress", "gather", "vote", "broadcast", "decompress"), float(i))}
        for i in range(5)]
    summary = summarise(records, [(5, 0.75)], identical=True, resyncs=0, num_parameters=20,
                        builtin=False, last_metrics={"test_loss": 0.5}, wall_seconds=1.0,
                        run_dir="runs/x")
    assert summary.stage_seconds["vote"] == 3.0  # mean of rounds 2, 3, 4
    assert summary.compression_ratio == 8.0  # 4 bytes x 20 parameters / 10 bytes
    assert summary.rejected_payloads == 10
    assert math.isnan(summary.test_accuracy)  # a user workload with no accuracy metric
