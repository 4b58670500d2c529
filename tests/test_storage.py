"""Results, checkpoints and data on storage every node reaches: a ``file://`` URI stands for any
``pyarrow.fs`` URI (s3://, gs://, ...). Every destination is read back with plain Python
(``json``, ``torch.load``, file bytes), never with the code under test; paths inside a Ray
job's temporary working directory are refused before Ray starts."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysign import cli
from raysign.config import ConfigError
from raysign.results import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "mnist", "--model", "mlp", "--num-workers", "3", "--train-subset", "900",
        "--test-subset", "300", "--batch-size", "16", "--lr", "0.002", "--checksum-every", "2",
        "--no-progress"]


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def only_run_folder(root: Path) -> Path:
    [folder] = list(root.iterdir())
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This process's cache and staging root ($RAYSIGN_CACHE), empty."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RAYSIGN_CACHE", str(folder))
    return folder


def staged_folders(cache: Path) -> list[Path]:
    staging = cache / "staging"
    return list(staging.iterdir()) if staging.is_dir() else []


# --------------------------------------------------------------------------- RunDir on a URI
def test_uri_run_dir_stages_locally_and_uploads_what_changed_on_sync(tmp_path, cache):
    run = RunDir.create(f"file://{tmp_path}/store", "demo")
    destination = only_run_folder(tmp_path / "store" / "demo")
    assert run.location == f"file://{destination}"
    assert not run.path.is_relative_to(tmp_path / "store")  # written locally, elsewhere
    run.write_json("config.json", {"lr": 0.5})
    run.log({"step": 1})
    torch.save({"step": 1}, run.file("checkpoint.pt"))
    assert list(destination.iterdir()) == []  # nothing is uploaded before a sync
    run.sync()
    assert json.loads((destination / "config.json").read_text()) == {"lr": 0.5}
    assert read_checkpoint(destination / "checkpoint.pt") == {"step": 1}
    config_mtime = (destination / "config.json").stat().st_mtime_ns
    run.log({"step": 2})
    run.sync()
    assert read_records(destination / "metrics.jsonl") == [{"step": 1}, {"step": 2}]
    # Unchanged files are not uploaded again; no temporary names are left behind.
    assert (destination / "config.json").stat().st_mtime_ns == config_mtime
    assert sorted(p.name for p in destination.iterdir()) == ["checkpoint.pt", "config.json",
                                                            "metrics.jsonl"]
    run.close()
    assert not run.path.exists() and staged_folders(cache) == []


def test_opening_a_uri_run_folder_replaces_stale_staging_with_the_destination(tmp_path, cache):
    run = RunDir.create(f"file://{tmp_path}/store", "demo")
    run.log({"step": 1})
    run.sync()
    run.log({"step": 2})  # never synced: the process dies here, its staging left behind
    reopened = RunDir.open(run.location)
    assert reopened.path == run.path  # the same staging folder, reused ...
    assert read_records(reopened.file("metrics.jsonl")) == [{"step": 1}]  # ... refreshed
    reopened.log({"step": 2})
    reopened.close()
    destination = only_run_folder(tmp_path / "store" / "demo")
    assert read_records(destination / "metrics.jsonl") == [{"step": 1}, {"step": 2}]


def test_local_results_dir_is_written_in_place_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir.create("runs", "signsgd")
    assert run.path.parent == Path("runs") / "signsgd" and run.location == str(run.path)
    run.log({"step": 1})
    run.close()  # nothing to upload, nothing removed
    assert read_records(only_run_folder(tmp_path / "runs" / "signsgd") / "metrics.jsonl") == [
        {"step": 1}]


# ------------------------------------------------------------------- signSGD on a URI (Ray)
@pytest.mark.ray
def test_signsgd_run_with_a_uri_results_dir_writes_everything_there(ray_session, tmp_path,
                                                                   cache, capsys):
    store = tmp_path / "store"
    code = cli.main(["signsgd", *TINY, "--max-steps", "4", "--eval-every", "2",
                     "--checkpoint-every", "2", "--results-dir", f"file://{store}"])
    assert code == 0
    run = only_run_folder(store / "signsgd")
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["num_workers"], config["results_dir"]) == (
        "mnist", 3, f"file://{store}")
    assert [r["step"] for r in read_records(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    for figure in ("accuracy.png", "time_split.png"):
        assert (run / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = read_checkpoint(run / "checkpoint.pt")
    assert checkpoint["step"] == 4 and len(checkpoint["workers"]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == f"results: file://{run}"  # the last human line; then the JSON line
    assert staged_folders(cache) == []  # the staging folder is gone after the run


def tiny_config(results_dir: str, **overrides):
    from raysign.signsgd.config import SignSGDConfig

    fields = dict(dataset="mnist", model="mlp", num_workers=3, train_subset=900,
                  test_subset=300, batch_size=16, lr=0.002, checksum_every=2,
                  results_dir=results_dir) | overrides
    return SignSGDConfig(**fields)


class Stop(Exception):
    pass


@pytest.mark.ray
@pytest.mark.xdist_group("storage-started-trainer")  # one trainer for both
def test_sync_after_a_checkpoint_leaves_a_loadable_checkpoint_while_the_run_goes_on(
        started_trainer, tmp_path, cache):
    store = tmp_path / "store"
    # Its worker processes stay up for the next test, of the same shape (reconfigure).
    trainer = started_trainer.for_config(tiny_config(f"file://{store}", max_steps=5,
                                                     checkpoint_every=2))
    seen = {}

    def look_at_the_destination(record):
        if record["step"] == 3:  # the run is between its checkpoints of steps 2 and 4
            run = only_run_folder(store / "signsgd")
            seen["checkpoint"] = read_checkpoint(run / "checkpoint.pt")
            seen["steps"] = [r["step"] for r in read_records(run / "metrics.jsonl")]

    try:
        summary = trainer.run(on_record=look_at_the_destination)
    except BaseException:
        started_trainer.close()
        raise
    assert seen["checkpoint"]["step"] == 2 and len(seen["checkpoint"]["workers"]) == 3
    assert seen["steps"] == [1, 2]
    assert summary.steps == 5 and summary.run_dir.startswith(f"file://{store}/signsgd/")
    run = only_run_folder(store / "signsgd")
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 5


@pytest.mark.ray
@pytest.mark.xdist_group("storage-started-trainer")  # one trainer for both
def test_resume_from_a_uri_is_bit_identical_to_an_uninterrupted_run(started_trainer, tmp_path,
                                                                    cache, capsys):
    local = tmp_path / "local"
    store = tmp_path / "store"
    # The uninterrupted run and the interrupted one run on the started worker processes
    # (``reconfigure``: a fresh replica in each, the only other change the results_dir);
    # the resume below is a new driver with new processes.
    trainer = started_trainer.for_config(tiny_config(str(local), max_steps=7,
                                                     checkpoint_every=3))

    def die_after_step_4(record):
        if record["step"] == 4:
            raise Stop  # the driver dies after step 4; the last checkpoint is step 3

    try:
        trainer.run()
        expected = read_checkpoint(only_run_folder(local / "signsgd") / "checkpoint.pt")
        trainer.reconfigure(tiny_config(f"file://{store}", max_steps=7, checkpoint_every=3))
        with pytest.raises(Stop):
            trainer.run(on_record=die_after_step_4)
    finally:
        started_trainer.close()
    run = only_run_folder(store / "signsgd")
    assert read_checkpoint(run / "checkpoint.pt")["step"] == 3
    shutil.rmtree(cache)  # the machine is lost: only the destination remains

    code = cli.main(["signsgd", *TINY, "--max-steps", "7", "--checkpoint-every", "3",
                     "--results-dir", f"file://{store}", "--resume", f"file://{run}"])
    assert code == 0
    assert only_run_folder(store / "signsgd") == run  # it went on writing into the same folder
    resumed = read_checkpoint(run / "checkpoint.pt")
    assert resumed["step"] == 7
    for mine, theirs in zip(resumed["workers"], expected["workers"], strict=True):
        assert mine["flat"].numpy().tobytes() == theirs["flat"].numpy().tobytes()
        assert mine["momentum"].numpy().tobytes() == theirs["momentum"].numpy().tobytes()
    assert [r["step"] for r in read_records(run / "metrics.jsonl")] == list(range(1, 8))
    assert capsys.readouterr().out.strip().splitlines()[-2] == f"results: file://{run}"


# ------------------------------------------------------------------------ data on a URI
def write_small_mnist(folder: Path, n_train: int, n_test: int) -> Path:
    """An MNIST pickle in the layout of ``mnist.pkl.gz`` ((train, valid, test) pairs of
    float32 [N, 784] images and int64 labels), with few images."""
    rng = np.random.default_rng(0)

    def split(n):
        return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)

    path = folder / "mnist" / "mnist.pkl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as fh:
        pickle.dump((split(n_train - 60), split(60), split(n_test)), fh)
    return path


@pytest.mark.ray
def test_data_dir_uri_is_fetched_once_into_the_cache_and_read_from_there(ray_session,
                                                                         tmp_path, cache):
    from raysign.data import load_images

    source = write_small_mnist(tmp_path / "bucket", n_train=960, n_test=100)
    uri = f"file://{tmp_path}/bucket"
    # 960 images / 3 workers / 16 per batch = 20 steps per epoch: a quarter epoch is 5 steps
    # (the real MNIST would give 313).
    assert cli.main(["signsgd", *TINY, "--train-subset", "0", "--test-subset", "0",
                     "--epochs", "0.25", "--data-dir", uri,
                     "--results-dir", str(tmp_path / "runs")]) == 0
    run = only_run_folder(tmp_path / "runs" / "signsgd")
    assert [r["step"] for r in read_records(run / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert json.loads((run / "config.json").read_text())["data_dir"] == uri
    [copy] = list((cache / "data").glob("*/mnist/mnist.pkl.gz"))
    assert copy.read_bytes() == source.read_bytes()
    # Copied once: later reads use the cache even if the source changes.
    source.write_bytes(b"not a pickle")
    train, test = load_images("mnist", uri)
    assert (len(train), len(test)) == (960, 100)


@pytest.mark.ray
def test_forecast_tasks_fetch_a_data_uri_into_their_nodes_cache(tmp_path, data_dir):
    """The forecast job's tasks read ETTh1 themselves: with a URI, each task copies it into its
    node's cache (own Ray in a subprocess, so that the workers see $RAYSIGN_CACHE)."""
    source = data_dir / "forecast" / "ETTh1.csv"
    bucket = tmp_path / "bucket" / "forecast"
    bucket.mkdir(parents=True)
    shutil.copy(source, bucket / "ETTh1.csv")
    env = {**os.environ, "RAYSIGN_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "raysign.cli", "forecast", "--dataset", "etth1",
         "--models", "persistence", "--seeds", "1", "--epochs", "1", "--num-cpus", "1",
         "--data-dir", f"file://{tmp_path}/bucket", "--results-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [copy] = list((tmp_path / "cache" / "data").glob("*/forecast/ETTh1.csv"))
    assert copy.read_bytes() == source.read_bytes()
    run = only_run_folder(tmp_path / "runs" / "forecast")
    assert [r["model"] for r in read_records(run / "metrics.jsonl")] == ["persistence"]
    assert result.stdout.strip().splitlines()[-1] == f"results: {run}"


@pytest.mark.ray
def test_a_path_missing_on_a_node_is_named_with_the_nodes_ip(ray_session, tmp_path):
    import ray

    from raysign.actors.cluster import require_path_on_nodes
    from raysign.actors.crowd_job import compare
    from raysign.crowd.config import CrowdConfig

    ip = ray.util.get_node_ip_address()
    require_path_on_nodes(str(tmp_path))  # present on the one node: no error
    missing = str(tmp_path / "no-such-data")
    with pytest.raises(ConfigError, match=rf"^data_dir='{missing}' does not exist on node "
                                          rf"{ip} .*s3://bucket/data"):
        require_path_on_nodes(missing)
    # The crowd job's tasks read the images: it stops before starting any, writing nothing.
    with pytest.raises(ConfigError, match=rf"fashion-mnist' does not exist on node {ip}"):
        compare(CrowdConfig(data_dir=missing), ["mv"], 1, results_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------- never into a job's temporary working dir
def simulated_job_dir(tmp_path: Path) -> Path:
    """Where ``ray job submit --working-dir .`` runs a driver."""
    folder = (tmp_path / "session_1" / "runtime_resources" / "working_dir_files"
              / "_ray_pkg_0123456789abcdef")
    folder.mkdir(parents=True)
    return folder


JOB_COMMANDS = {
    "signsgd": ["signsgd", "--max-steps", "1"],
    "crowd": ["crowd", "train", "--methods", "mv"],
    "topics": ["topics"],
    "forecast": ["forecast", "--models", "persistence"],
    "lander": ["lander"],
    "sweep": ["sweep", "lander", "--quick"],
}


@pytest.mark.parametrize("name", JOB_COMMANDS)
def test_relative_results_dir_in_a_ray_job_working_dir_is_refused_before_ray_starts(
        tmp_path, name):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-m", "raysign.cli", *JOB_COMMANDS[name],
                             "--results-dir", "runs"], capture_output=True, text=True,
                            cwd=simulated_job_dir(tmp_path), env=env, timeout=300)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "results_dir='runs'" in line and "temporary working directory" in line
    assert "pass an absolute path on storage every node reaches, or a URI such as " \
           "s3://bucket/runs or file:///shared/runs" in line
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr


def test_relative_data_dir_in_a_ray_job_working_dir_is_refused_before_ray_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-m", "raysign.cli", "signsgd", "--data-dir",
                             "data", "--results-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=simulated_job_dir(tmp_path),
                            env=env, timeout=300)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "data_dir='data'" in line and "s3://bucket/data or file:///shared/data" in line
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_ray_job_driver_is_recognised_by_its_environment_too(tmp_path, monkeypatch):
    from raysign.signsgd.config import SignSGDConfig

    monkeypatch.chdir(tmp_path)
    SignSGDConfig(results_dir="runs")  # outside a Ray job a relative path is fine
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123456789abcdef.zip"}}))
    with pytest.raises(ConfigError, match="^results_dir='runs' resolves to"):
        SignSGDConfig(results_dir="runs")
    SignSGDConfig(results_dir=f"file://{tmp_path}/runs")  # a URI is fine
    # A job run in place (working_dir "local://...") writes into the user's own folder.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(
        {"runtime_env": {"working_dir": f"local://{tmp_path}"}}))
    SignSGDConfig(results_dir="runs")


def test_an_unknown_uri_scheme_is_refused_naming_the_known_ones():
    from raysign.signsgd.config import SignSGDConfig

    with pytest.raises(ConfigError, match=r"^results_dir='nope://x' has the scheme 'nope'.*'s3'"):
        SignSGDConfig(results_dir="nope://x")
