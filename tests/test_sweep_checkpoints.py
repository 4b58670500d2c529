"""Ray Tune checkpoints of the signSGD sweep (``tune_configs/signsgd.py``): a trial whose
process is killed is restored by Tune from its last reported checkpoint and ends with exactly
the parameters of an undisturbed trial, and Population Based Training clones checkpoints
between trials, the exploited trial training on with its new learning rate. Everything is read
back from Tune's own files (``result.json``, ``pbt_global.txt``, the checkpoint folders) with
plain ``json`` / ``torch.load``, not with the code under test. Tiny runs: an MLP on 1200 MNIST
images, 2 workers, 8 steps."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysign.config import to_dict
from raysign.signsgd.checkpoint import save_checkpoint
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.replica import Replica
from raysign.tune_configs import signsgd as sweep_module

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="mnist", model="mlp", train_subset=1200, test_subset=200, max_steps=8,
            eval_every=2, batch_size=16, num_workers=2, num_byzantine=0, momentum=0.9,
            lr=3e-3, trial_cpus=1.0)


def rows(trial_dir: Path) -> list[dict]:
    """Tune's results of one trial, one row per report."""
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def final_checkpoint(trial_dir: Path) -> dict:
    """The trial's last Tune checkpoint, read with plain torch."""
    folder = max(trial_dir.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))
    return torch.load(folder / "checkpoint.pt", weights_only=True)


def test_adopted_checkpoint_takes_the_trials_lr_and_momentum_and_keeps_the_rest(tmp_path):
    """What a PBT exploit hands the trainer: the donor's parameters, momentum and data
    position, with the trial's own lr and momentum (config and each worker's current lr);
    a cosine schedule's current lr is the closed form at the saved step."""
    donor = SignSGDConfig(dataset="mnist", model="mlp", lr=0.01, momentum=0.5,
                          lr_schedule="cosine", max_steps=10, num_workers=2)
    images = torch.zeros(64, 1, 28, 28).numpy()
    labels = torch.zeros(64, dtype=torch.long).numpy()
    replica = Replica(donor, 0, images, labels)
    for step in (1, 2, 3):
        replica.finish_step(step)
    state = replica.state()
    folder = tmp_path / "tune-checkpoint"
    folder.mkdir()
    save_checkpoint(folder / "checkpoint.pt", config=to_dict(donor), step=3,
                    workers=[state, state], extra={"curve": []})
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')

    trial = {**to_dict(donor), "lr": 0.002, "momentum": 0.9}
    path = sweep_module.adopt_checkpoint(folder, tmp_path / "run", trial)
    got = torch.load(path, weights_only=True)
    assert got["config"]["lr"] == 0.002 and got["config"]["momentum"] == 0.9
    assert got["config"]["lr_schedule"] == "cosine" and got["step"] == 3
    expected_lr = 0.002 * (1 + math.cos(math.pi * 3 / 10)) / 2
    for worker in got["workers"]:
        assert worker["schedule"]["lr"] == pytest.approx(expected_lr, rel=1e-12)
        assert torch.equal(worker["flat"], state["flat"])
        assert torch.equal(worker["momentum"], state["momentum"])
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n'
    # A fresh replica of the trial's config loads it and trains on at the trial's rate.
    fresh = Replica(SignSGDConfig(**{k: v for k, v in trial.items()
                                     if k in SignSGDConfig.__dataclass_fields__}), 0, images,
                    labels)
    fresh.load_state(got["workers"][0])
    fresh.finish_step(4)
    assert fresh.lr == pytest.approx(0.002 * (1 + math.cos(math.pi * 4 / 10)) / 2, rel=1e-12)


@pytest.mark.slow
@pytest.mark.ray
def test_killed_trial_is_restored_from_its_last_checkpoint_and_ends_like_an_undisturbed_one(
        ray_session, tmp_path):
    from ray import tune

    # Two trials side by side, identical but for the drill: one kills its own process (and
    # so its worker and vote actors) at its evaluation after step 4, before reporting it.
    tuner = tune.Tuner(
        tune.with_resources(sweep_module.trainable, sweep_module.trial_resources(2.0, 0.0)),
        param_space={**TINY, "kill_after_step": tune.grid_search([None, 4])},
        tune_config=tune.TuneConfig(metric="test_accuracy", mode="max"),
        run_config=tune.RunConfig(name="kill", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    assert [r.error for r in results] == [None, None]
    trials = {r.config["kill_after_step"]: Path(r.path) for r in results}
    undisturbed, killed = trials[None], trials[4]

    # Two attempts (one run folder each): the first died after step 5's round, before its
    # step-6 report. Tune's own count: the killed trial ended at iteration 4 after 2
    # iterations since its restore, i.e. it continued from the step-4 checkpoint (iteration
    # 2); a restart from scratch would have run all 4 again.
    attempts = sorted((killed / "sweep-signsgd").iterdir())
    assert len(attempts) == 2
    first = [json.loads(line)["step"] for line in
             (attempts[0] / "metrics.jsonl").read_text().splitlines()]
    assert first[-1] == 6 and 8 not in first
    final = {r.config["kill_after_step"]: r.metrics for r in results}
    assert final[4]["training_iteration"] == 4 and final[4]["iterations_since_restore"] == 2
    assert final[None]["training_iteration"] == final[None]["iterations_since_restore"] == 4

    expected, got = final_checkpoint(undisturbed), final_checkpoint(killed)
    assert expected["step"] == got["step"] == 8
    for rank in range(2):
        for name in ("flat", "momentum"):
            assert torch.equal(got["workers"][rank][name], expected["workers"][rank][name]), \
                (rank, name)
    assert not torch.equal(got["workers"][0]["flat"], parameters_at(killed, 4))


def parameters_at(trial_dir: Path, step: int) -> torch.Tensor:
    for folder in trial_dir.glob("checkpoint_*"):
        payload = torch.load(folder / "checkpoint.pt", weights_only=True)
        if payload["step"] == step:
            return payload["workers"][0]["flat"]
    raise AssertionError(f"no checkpoint of step {step} in {trial_dir}")


@pytest.mark.slow
@pytest.mark.ray
def test_pbt_sweep_exploits_and_the_exploited_trial_trains_on_with_its_new_lr(
        ray_session, tmp_path):
    """``raysign sweep signsgd --quick --scheduler pbt`` with its population cut to 2 trials
    (lr 1e-6, which barely moves, and 1e-2) and 6 steps (a synchronous perturbation after the
    2nd of 3 evaluations): Tune logs at least one exploit in its
    ``pbt_global.txt``, and the exploited trial's workers then apply the new config's lr, not
    the donor's (their own records, and every report Tune logged)."""
    from ray import tune

    from raysign.actors.sweep import run_sweep

    summary = run_sweep("signsgd", quick=True, scheduler="pbt", results_root=tmp_path,
                        fixed={"lr": tune.grid_search([1e-6, 1e-2]), "trial_cpus": 1.0,
                               "max_steps": 6})
    assert not summary["errors"] and summary["num_trials"] == 2
    experiment = Path(summary["run_dir"]) / "tune" / "signsgd"
    exploits = [json.loads(line) for line in
                (experiment / "pbt_global.txt").read_text().splitlines()]
    assert exploits
    # [target tag, donor tag, target iteration, donor iteration, donor config, new config]
    assert all(policy[5]["lr"] != policy[4]["lr"] for policy in exploits)
    # An exploit that cloned a donor before its last report (3 evaluations in 6 steps)
    # leaves the clone steps to train: the workers' own records (every attempt's
    # metrics.jsonl) then show the new lr applied.
    early = [policy for policy in exploits if policy[3] < 3]
    assert early
    applied = {json.loads(line)["lr"]
               for metrics in experiment.glob("trainable_*/sweep-signsgd/*/metrics.jsonl")
               for line in metrics.read_text().splitlines()}
    assert {policy[5]["lr"] for policy in early} <= applied
    for trial in experiment.glob("trainable_*"):
        for row in rows(trial):
            # Every report: the lr the workers applied is the trial's config at that report.
            assert row["lr"] == pytest.approx(row["config"]["lr"], rel=1e-12)


def test_sweep_refuses_a_scheduler_the_sweep_does_not_offer_before_starting_ray():
    result = subprocess.run(
        [sys.executable, "-m", "raysign.cli", "sweep", "crowd", "--scheduler", "pbt"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert ("scheduler='pbt' is not offered by tune_configs/crowd.py; valid: none"
            in result.stderr)
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
