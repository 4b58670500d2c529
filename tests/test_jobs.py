"""The entry points users type: the CLI, the main job and the sweeps."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysign import cli
from raysign.actors import sweep
from raysign.data import load_images
from raysign.results import read_jsonl
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_every_sweep_module_follows_the_protocol():
    names = sweep.available_sweeps()
    assert "signsgd" in names
    for name in names:
        module = sweep.load_sweep(name)
        assert module.MODE in ("min", "max")
        assert isinstance(module.param_space(True), dict)
        assert module.trial_resources(2.0, 0.0) is not None


def test_unknown_sweep_names_the_choices():
    with pytest.raises(ValueError, match="signsgd"):
        sweep.load_sweep("no-such-sweep")


def test_train_rejects_bad_configuration_before_starting_ray():
    result = subprocess.run(
        [sys.executable, "-m", "raysign.cli", "train", "--num-workers", "4",
         "--num-byzantine", "2"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert "num_byzantine=2" in result.stderr
    assert "Started a local Ray" not in result.stderr


@pytest.mark.parametrize("command, message", [
    (["topics", "--k", "0"], "k=0 is outside the allowed range [1, inf)"),
    (["topics", "--heldout", "1.5"], "heldout=1.5 is outside the allowed range (0.0, 1.0)"),
    (["lander", "--gamma", "-1"], "gamma=-1.0"),
    (["land", "--tasks", "landing,takeoff"], "task='takeoff'"),
])
def test_command_rejects_bad_configuration_in_one_line_before_starting_ray(command, message):
    result = subprocess.run([sys.executable, "-m", "raysign.cli", *command],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "Started a local Ray" not in result.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_train_command_writes_results(ray_session, tmp_path, capsys):
    code = cli.main(["train", "--dataset", "mnist", "--model", "mlp", "--num-workers", "3",
                     "--max-steps", "5", "--eval-every", "5", "--train-subset", "900",
                     "--test-subset", "300", "--results-dir", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["compression_ratio"] > 25
    run_dir = next((tmp_path / "signsgd").iterdir())
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 5
    assert (run_dir / "time_split.png").stat().st_size > 0


def untrained_accuracy(config: SignSGDConfig) -> float:
    """Test accuracy of ``config``'s model as initialised, before any step."""
    _, test = load_images(config.dataset, config.data_dir)
    images = torch.from_numpy(test.images[: config.test_subset])
    labels = torch.from_numpy(test.labels[: config.test_subset])
    torch.manual_seed(config.seed)
    with torch.no_grad():
        predictions = build_model(config.model)(images).argmax(1)
    return float((predictions == labels).double().mean())


@pytest.mark.slow
@pytest.mark.ray
def test_quick_signsgd_sweep_reports_its_most_accurate_trial(ray_session, tmp_path):
    summary = sweep.run_sweep("signsgd", quick=True, results_root=tmp_path)
    assert not summary["errors"]
    with open(Path(summary["run_dir"]) / "results.csv", newline="") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == summary["num_trials"] > 1
    # Every row is its trial's last report, at its last step.
    assert {int(t["step"]) for t in trials} == {summary["best_config"]["max_steps"]}
    best = max(trials, key=lambda t: float(t["test_accuracy"]))
    assert summary["best_result"]["test_accuracy"] == pytest.approx(float(best["test_accuracy"]))
    assert summary["best_config"]["lr"] == pytest.approx(float(best["config/lr"]))
    # The best trial learned: well above chance (0.1) and above its model as initialised,
    # which a trainer that does not apply its votes (or applies them with the wrong sign)
    # stays near.
    config = SignSGDConfig(**{k: v for k, v in summary["best_config"].items()
                              if k in SignSGDConfig.__dataclass_fields__})
    accuracy, before = float(best["test_accuracy"]), untrained_accuracy(config)
    assert accuracy > 0.1 + 0.3 and accuracy > before + 0.2
