"""The entry points users type: the CLI, the main job and the sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raysign import cli
from raysign.actors import sweep
from raysign.results import read_jsonl

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


@pytest.mark.slow
@pytest.mark.ray
def test_quick_signsgd_sweep_reports_best_config(ray_session, tmp_path):
    summary = sweep.run_sweep("signsgd", quick=True, results_root=tmp_path)
    assert not summary["errors"]
    assert summary["best_config"]["lr"] in (1e-3, 3e-3)
    assert 0.0 < summary["best_result"]["test_accuracy"] <= 1.0
    assert (Path(summary["run_dir"]) / "results.csv").is_file()
