"""A trainer reconfigured in place (a benchmark grid reusing its actors) runs exactly what a
freshly started trainer runs, also when a worker or vote actor dies and Ray restarts it with
its first constructor arguments."""

from __future__ import annotations

import pytest
import ray

from raysign.actors.trainer import SignSGDTrainer
from raysign.results import read_jsonl
from raysign.signsgd.config import SignSGDConfig

pytestmark = pytest.mark.ray


def tiny(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(dataset="mnist", model="mlp", train_subset=1200, test_subset=300,
                  batch_size=16, lr=0.002, num_workers=4, max_steps=5, checksum_every=2,
                  results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


def losses(summary) -> list[float]:
    return [r["loss"] for r in read_jsonl(f"{summary.run_dir}/metrics.jsonl")]


def fresh(config):
    trainer = SignSGDTrainer(config, progress=False)
    try:
        summary = trainer.run()
        return summary, ray.get(trainer.workers[0].parameters.remote())
    finally:
        trainer.shutdown()


@pytest.mark.parametrize("first, second", [
    (dict(), dict(aggregator="median", num_byzantine=1, attack="alie", seed=1, lr=0.05)),
    (dict(aggregator="centered_clipping", num_byzantine=1, attack="ipm", lr=0.05),
     dict(num_byzantine=1, attack="colluding", seed=2)),
])
def test_reconfigured_trainer_runs_what_a_fresh_trainer_runs(ray_session, tmp_path, first,
                                                             second):
    expected, expected_params = fresh(tiny(tmp_path, **second))
    trainer = SignSGDTrainer(tiny(tmp_path, **first), progress=False)
    try:
        trainer.run()
        trainer.reconfigure(tiny(tmp_path, **second))
        summary = trainer.run()
        params = ray.get(trainer.workers[0].parameters.remote())
    finally:
        trainer.shutdown()
    assert params.tobytes() == expected_params.tobytes()
    assert losses(summary) == losses(expected)
    assert summary.test_accuracy == expected.test_accuracy


def test_reconfigure_refuses_a_change_of_shape(ray_session, tmp_path):
    trainer = SignSGDTrainer(tiny(tmp_path, max_steps=1), progress=False)
    try:
        with pytest.raises(RuntimeError, match="start"):
            trainer.reconfigure(tiny(tmp_path))
        trainer.run()
        with pytest.raises(ValueError, match="num_workers, vote_shards"):
            trainer.reconfigure(tiny(tmp_path, num_workers=3, vote_shards=2))
    finally:
        trainer.shutdown()


def test_actors_restarted_after_reconfigure_get_the_current_configuration(ray_session,
                                                                          tmp_path):
    """From majority vote (1-bit payloads) to the fp32 mean: a worker and a vote actor that die
    are restarted by Ray with the vote configuration; the trainer hands them the mean's. A
    worker left on the vote's payload kind would have its messages rejected (fewer voters), a
    vote actor left on it would reject every fp32 message."""
    second = tiny(tmp_path, aggregator="mean", lr=0.05, seed=3, vote_shards=2, max_steps=6)

    def crash(trainer):
        def hook(record):
            if record["step"] == 1:
                ray.get(trainer.votes[1].crash_at.remote(2))
            if record["step"] == 3:
                trainer.workers[2].crash.remote()
        return hook

    trainer = SignSGDTrainer(tiny(tmp_path, vote_shards=2, max_steps=2), progress=False)
    try:
        trainer.run()
        trainer.reconfigure(second)
        summary = trainer.run(on_record=crash(trainer))
    finally:
        trainer.shutdown()
    records = read_jsonl(f"{summary.run_dir}/metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert records[1]["voters"] == 4 and records[1]["rejected"] == 0  # vote retried, fp32 kind
    failed = [r for r in records if r["failed_workers"]]
    assert failed and failed[0]["failed_workers"] == [2] and failed[0]["voters"] == 3
    assert all(r["voters"] == 4 and r["rejected"] == 0 for r in records if r["step"] > 4)
    assert summary.replicas_identical
