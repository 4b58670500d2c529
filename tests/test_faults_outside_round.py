"""Faults outside the round (issue 20): a replica that diverges is re-synced from the
majority of the replicas' digests (not from rank 0); a worker that dies during evaluation,
the replica check or a checkpoint save does not end the run; a worker Ray restarts between
rounds abstains instead of voting from a fresh replica and is re-synced. One trainer on local
Ray runs the three cases back to back (``reconfigure`` reuses its processes); the reference
is the same configuration run undisturbed on the same actors."""

from __future__ import annotations

import time

import pytest
import ray

from raysign.actors.trainer import SignSGDTrainer
from raysign.results import read_jsonl
from raysign.signsgd.checkpoint import load_checkpoint
from raysign.signsgd.config import SignSGDConfig

pytestmark = pytest.mark.ray


def tiny(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(dataset="mnist", model="mlp", train_subset=600, test_subset=100,
                  batch_size=16, lr=0.002, num_workers=3, max_steps=4, checksum_every=2,
                  eval_every=4, checkpoint_every=4, transport="direct",
                  results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


def wait_restarted(worker, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            ray.get(worker.num_parameters.remote())
            return
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_faults_outside_the_round_leave_the_run_equal_to_an_undisturbed_one(ray_session,
                                                                            tmp_path):
    config = tiny(tmp_path)
    trainer = SignSGDTrainer(config, progress=False)
    positions = {}

    def diverge_rank_0(record):
        # Rank 0 silently diverges after applying the last vote: the final check must re-sync
        # it from ranks 1 and 2, not them from it.
        if record["step"] == 3:
            ray.get(trainer.workers[0].corrupt_after.remote(4))

    def die_outside_the_round(record):
        # After the last round: worker 1 dies in the replica check, worker 0 in the
        # evaluation, worker 2 in the checkpoint save.
        if record["step"] == 3:
            ray.get([trainer.workers[1].crash_during.remote("checksum"),
                     trainer.workers[0].crash_during.remote("evaluate"),
                     trainer.workers[2].crash_during.remote("state")])

    def restart_between_rounds(record):
        if record["step"] == 2:
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(trainer.workers[1].crash.remote())
            wait_restarted(trainer.workers[1])  # Ray restarted it before round 3
        if record["step"] == 4:
            states = ray.get([w.state.remote() for w in trainer.workers])
            positions.update({r: (s["epoch"], s["cursor"]) for r, s in enumerate(states)})

    def final_parameters():
        return [ray.get(w.parameters.remote()).tobytes() for w in trainer.workers]

    try:
        trainer.run()
        undisturbed = final_parameters()[0]
        trainer.reconfigure(config)
        diverged = trainer.run(on_record=diverge_rank_0)
        resynced = final_parameters()
        trainer.reconfigure(config)
        died = trainer.run(on_record=die_outside_the_round)
        survived = final_parameters()
        trainer.reconfigure(config)
        restarted = trainer.run(on_record=restart_between_rounds)
    finally:
        trainer.shutdown()

    # The diverged rank 0 is re-synced from the majority: every replica is the undisturbed one.
    assert resynced == [undisturbed] * 3
    records = read_jsonl(f"{diverged.run_dir}/metrics.jsonl")
    assert records[3]["replicas_identical"] is False and diverged.resyncs == 1

    # Deaths in the check, the evaluation and the save: the run completes, equal bit for bit.
    assert survived == [undisturbed] * 3
    records = read_jsonl(f"{died.run_dir}/metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4] and "test_accuracy" in records[3]
    assert died.replicas_identical
    saved = load_checkpoint(f"{died.run_dir}/checkpoint.pt")
    assert saved["step"] == 4
    assert [w["flat"].numpy().tobytes() for w in saved["workers"]] == [undisturbed] * 3

    # A worker restarted between rounds abstains from round 3 and is re-synced after it.
    records = read_jsonl(f"{restarted.run_dir}/metrics.jsonl")
    assert records[2]["failed_workers"] == [1] and records[2]["voters"] == 2
    assert all(r["voters"] == 3 for r in records if r["step"] != 3)
    assert all(r.get("replicas_identical", True) for r in records)
    assert positions[1] == positions[0] == (0, 4 * 16)
