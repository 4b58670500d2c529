"""Faults and bad input on local Ray: dead workers and vote actors, NaN gradients,
checkpoints that resume bit-identically, and checkpoints that must be refused.

Starting a trainer's worker and vote processes costs far more than a tiny run, so the runs
share one started trainer while their shape (worker count, vote shards, transport) stays the
same: ``reconfigure`` gives every worker a fresh replica in its process, as the
fault-outside-the-round drills do. A resume after a killed driver starts new processes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import ray
import torch

from raysign.actors.trainer import SignSGDTrainer
from raysign.config import to_dict
from raysign.results import read_jsonl
from raysign.signsgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.replica import Replica

# One process (under pytest -n 2) for the tests that share a started trainer.
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("faults-started-trainer")]


def tiny(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(dataset="mnist", model="mlp", train_subset=1200, test_subset=300,
                  batch_size=16, lr=0.002, num_workers=3, max_steps=6, checksum_every=2,
                  results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


class Stop(Exception):
    pass


@pytest.fixture(scope="module", params=["objects", "direct"])
def transport(request) -> str:
    """Module-scoped, so pytest runs every test of one transport before the other's and the
    tests of one shape reuse one trainer."""
    return request.param


def run(started_trainer, config, on_record=None):
    trainer = started_trainer.for_config(config)
    try:
        summary = trainer.run(on_record=on_record(trainer) if on_record else None)
        params = ray.get(trainer.workers[0].parameters.remote())
    except BaseException:
        started_trainer.close()
        raise
    return summary, params


def resume_in_new_processes(config, checkpoint):
    """As a restarted driver resumes: a new trainer, new worker and vote processes."""
    trainer = SignSGDTrainer(config, progress=False)
    try:
        summary = trainer.run(resume=checkpoint)
        params = ray.get(trainer.workers[0].parameters.remote())
    finally:
        trainer.shutdown()
    return summary, params


def test_run_killed_while_saving_resumes_from_the_previous_checkpoint_bit_identically(
        started_trainer, tmp_path, monkeypatch):
    config = tiny(tmp_path, max_steps=7, checkpoint_every=3)
    _, uninterrupted = run(started_trainer, config)
    replace = os.replace

    def dies_in_the_step_6_save(src, dst):
        # The driver is killed after the step-6 checkpoint is written, before its rename.
        if str(dst).endswith("checkpoint.pt") and \
                torch.load(src, weights_only=True)["step"] == 6:
            raise Stop
        replace(src, dst)

    interrupted = started_trainer.for_config(config)
    with pytest.raises(Stop), monkeypatch.context() as patch:
        patch.setattr(os, "replace", dies_in_the_step_6_save)
        try:
            interrupted.run()
        finally:
            started_trainer.close()  # the driver and its processes are gone
    checkpoint = interrupted.run_dir.file("checkpoint.pt")
    assert load_checkpoint(checkpoint)["step"] == 3  # the previous one, intact
    summary, resumed = resume_in_new_processes(config, checkpoint)
    assert resumed.tobytes() == uninterrupted.tobytes()
    steps = [r["step"] for r in read_jsonl(interrupted.run_dir.file("metrics.jsonl"))]
    assert steps == list(range(1, 8))
    assert summary.replicas_identical


def test_dead_worker_is_left_out_restarted_and_resynced(started_trainer, tmp_path,
                                                        transport):
    def crash_worker_1(trainer):
        def hook(record):
            if record["step"] == 2:
                trainer.workers[1].crash.remote()
        return hook

    positions = {}

    def crash_worker_1_and_record_positions(trainer):
        crash = crash_worker_1(trainer)

        def hook(record):
            crash(record)
            if record["step"] == 6:
                states = ray.get([w.state.remote() for w in trainer.workers])
                positions.update({r: (s["epoch"], s["cursor"]) for r, s in enumerate(states)})
        return hook

    summary, _ = run(started_trainer, tiny(tmp_path, num_workers=4, transport=transport),
                     crash_worker_1_and_record_positions)
    # The restarted worker's data stream was moved to where it would be without the crash.
    assert positions[1] == positions[0] == (0, 6 * 16)
    records = read_jsonl(f"{summary.run_dir}/metrics.jsonl")
    failed = [r for r in records if r["failed_workers"]]
    assert failed and failed[0]["step"] == 3 and failed[0]["failed_workers"] == [1]
    assert failed[0]["voters"] == 3  # the round went on with the remaining votes
    assert all(r["voters"] == 4 for r in records if r["step"] > 3)  # it rejoined
    assert summary.resyncs >= 1 and summary.replicas_identical


def test_dead_vote_actor_is_restarted_and_its_round_retried(started_trainer, tmp_path,
                                                            transport):
    def crash_vote_at_3(trainer):
        def hook(record):
            if record["step"] == 1:
                ray.get(trainer.votes[0].crash_at.remote(3))
        return hook

    config = tiny(tmp_path, vote_shards=2, transport=transport)
    # The reference first, so that it runs before any actor of this trainer was restarted.
    _, undisturbed = run(started_trainer, config)
    summary, params = run(started_trainer, config, crash_vote_at_3)
    records = read_jsonl(f"{summary.run_dir}/metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(r["voters"] == 3 and not r["failed_workers"] for r in records)
    assert summary.replicas_identical
    # The retried vote is the same vote: the run equals one without the crash.
    assert params.tobytes() == undisturbed.tobytes()


def test_nan_gradient_is_an_abstention_not_a_crash(started_trainer, tmp_path, transport):
    def poison_worker_0(trainer):
        def hook(record):
            if record["step"] == 2:
                ray.get(trainer.workers[0].poison_next_gradient.remote(10))
        return hook

    summary, params = run(started_trainer, tiny(tmp_path, vote_shards=2, transport=transport),
                          poison_worker_0)
    records = read_jsonl(f"{summary.run_dir}/metrics.jsonl")
    step3 = records[2]
    assert step3["rejected"] == 2 and step3["voters"] == 2  # both shards, 2 of 3 voted
    assert all(r["rejected"] == 0 for r in records if r["step"] != 3)
    assert summary.rejected_payloads == 2 and summary.replicas_identical
    assert np.isfinite(params).all()


def _fake_checkpoint(path, config):
    state = {"flat": torch.zeros(3), "buffers": {}, "momentum": torch.zeros(3)}
    return save_checkpoint(path, config=to_dict(config), step=5, workers=[state])


def test_truncated_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    config = tiny(tmp_path)
    good = _fake_checkpoint(tmp_path / "checkpoint.pt", config)
    assert load_checkpoint(good, to_dict(config))["step"] == 5
    assert load_checkpoint(tmp_path, to_dict(config))["step"] == 5  # a run folder works too

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a raysign"):
        load_checkpoint(foreign)

    with pytest.raises(CheckpointError, match="lr"):
        load_checkpoint(good, to_dict(tiny(tmp_path, lr=0.01)))
    # Changing only the length of the run is allowed.
    assert load_checkpoint(good, to_dict(tiny(tmp_path, max_steps=50)))["step"] == 5

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("batches", [0, 1, 17, 18, 19, 36, 37, 50])
def test_seek_puts_the_data_stream_where_consuming_that_many_batches_does(batches):
    # 300 samples / 16 per batch = 18 full batches per epoch; the tail 12 are never drawn.
    config = SignSGDConfig(dataset="mnist", model="mlp", batch_size=16, num_workers=3)
    images = np.random.default_rng(0).random((300, 784), dtype=np.float32)
    labels = np.arange(300) % 10
    consumed = Replica(config, 2, images, labels)
    for _ in range(batches):
        consumed._next_batch()
    sought = Replica(config, 2, images, labels)
    sought._next_batch()  # a position of its own first, as a restarted worker would have
    sought.seek(batches)
    assert (sought.epoch, sought._cursor) == (consumed.epoch, consumed._cursor)
    assert np.array_equal(sought._order, consumed._order)
    assert torch.equal(sought._next_batch()[1], consumed._next_batch()[1])
