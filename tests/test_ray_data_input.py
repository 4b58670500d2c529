"""A ``ray.data.Dataset`` as the vote trainer's training and test set (issue #18 item 1).

The Dataset's blocks are generated inside the cluster (``ray.data.range(n).map_batches``);
every worker reads it and keeps its shard (``raysign.actors.ray_data``). What the driver holds
is read from Ray's own accounting: the driver's reference table (its core worker) and each
object's size as its owner reports it (``ray.experimental.get_object_locations``), never from
raysign's counters. The same data given as numpy arrays is the reference for the results; a
run resumed from its checkpoint is compared with the same run left alone.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import torch
from torch import nn
from torch.nn import functional

from raysign.actors.ray_data import RayDataSource, read_shard
from raysign.actors.trainer import SignSGDTrainer
from raysign.config import ConfigError
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.workload import Workload

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 6000
FEATURES = 32
SMALL_ROWS = 600  # the training set of the cheaper tests below
TEST_ROWS = 20500  # 21 evaluation batches of 1000 rows, the last one shorter
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ the user's code and data
def features_of(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Row i: 32 fp32 features and a label in {0, 1, 2}, a function of i alone."""
    phase = ids[:, None].astype(np.float64) * (np.arange(FEATURES) + 1) * 0.001
    x = np.sin(phase).astype(np.float32)
    y = ((x[:, 0] + x[:, 3] > 0).astype(np.int64) + (x[:, 5] > 0.5)).astype(np.int64)
    return {"x": x, "y": y}


def make_xy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return features_of(batch["id"])


def linear_classifier() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 3))


def make_test_xy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return features_of(batch["id"] + ROWS)  # rows ROWS, ROWS + 1, ...: unseen in training


def generated_dataset(rows: int = ROWS, make=make_xy):
    return ray.data.range(rows, override_num_blocks=6).map_batches(make)


def config_for(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(num_workers=2, batch_size=16, lr=0.01, momentum=0.9, max_steps=4,
                  checksum_every=4, results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


# ------------------------------------------------------------------------ Ray's accounting
def driver_references() -> set:
    """The object ids in the driver's reference table."""
    return set(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


def driver_object_bytes(before: set) -> int:
    """Bytes of every object in the driver's reference table (owned or borrowed, in its own
    memory or in the object store) that was not there ``before`` (the objects of earlier tests
    in this process are not this run's), sized by the objects' owners."""
    refs = [ray.ObjectRef(bytes.fromhex(oid.decode())) for oid in driver_references() - before]
    locations = ray.experimental.get_object_locations(refs)
    return sum(int(info.get("object_size") or 0) for info in locations.values())


def train(config: SignSGDConfig, workload: Workload) -> tuple[list[np.ndarray], int]:
    """The workers' final parameters and the most the driver referenced after any step."""
    before = driver_references()
    trainer = SignSGDTrainer(config, progress=False, workload=workload)
    peak = 0

    def measure(record: dict) -> None:
        nonlocal peak
        peak = max(peak, driver_object_bytes(before))

    try:
        trainer.run(on_record=measure)
        return ray.get([w.parameters.remote() for w in trainer.workers]), peak
    finally:
        trainer.shutdown()


# ------------------------------------------------------------------------------- the tests
@pytest.mark.ray
def test_generated_dataset_trains_without_the_driver_holding_it_and_equals_arrays(
        ray_session, tmp_path):
    data = features_of(np.arange(ROWS))
    data_bytes = data["x"].nbytes + data["y"].nbytes
    config = config_for(tmp_path)
    streamed, streamed_peak = train(config, Workload(
        linear_classifier, functional.cross_entropy, generated_dataset(), columns=("x", "y")))
    arrays, arrays_peak = train(config, Workload(
        linear_classifier, functional.cross_entropy, (data["x"], data["y"])))
    # Same rows, same shards, same batches: the same run, bit for bit.
    for mine, theirs in zip(streamed, arrays, strict=True):
        assert mine.tobytes() == theirs.tobytes()
    assert not np.array_equal(streamed[0], _initial_parameters())  # it did train
    # Arrays go through the driver's object store (the accounting sees them); the Dataset not.
    assert arrays_peak >= data_bytes, (arrays_peak, data_bytes)
    assert streamed_peak < data_bytes / 50, (streamed_peak, data_bytes)


def _initial_parameters() -> np.ndarray:
    torch.manual_seed(SignSGDConfig().seed)
    return torch.cat([p.detach().reshape(-1) for p in linear_classifier().parameters()]).numpy()


@pytest.mark.ray
def test_missing_column_is_refused_naming_the_datasets_columns(ray_session, tmp_path):
    workload = Workload(linear_classifier, functional.cross_entropy, generated_dataset(),
                        columns=("x", "label"))
    with pytest.raises(ConfigError, match=r"no column \['label'\]; its columns are \['x', 'y'\]"):
        SignSGDTrainer(config_for(tmp_path), progress=False, workload=workload)


@pytest.mark.parametrize("columns,message", [
    (None, "needs columns=\\(inputs column, targets column\\)"),
    (("x",), "needs columns="),
])
def test_dataset_without_two_column_names_is_refused_when_built(ray_session, columns, message):
    with pytest.raises(ConfigError, match=message):
        Workload(linear_classifier, functional.cross_entropy, ray.data.range(10),
                 columns=columns)


def test_columns_without_a_ray_dataset_and_a_ray_test_set_without_columns_are_refused(
        ray_session):
    arrays = (np.zeros((4, FEATURES), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="workload.columns=.*only for a ray.data.Dataset"):
        Workload(linear_classifier, functional.cross_entropy, arrays, columns=("x", "y"),
                 test_data=arrays)
    with pytest.raises(ConfigError, match="a ray.data.Dataset test_data needs columns="):
        Workload(linear_classifier, functional.cross_entropy, arrays,
                 test_data=ray.data.range(10))


class ListedDataset:
    """Stands in for a ray.data.Dataset in ``read_shard``: numpy batches from a list."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self.batches = batches
        self.context = type("Context", (), {"execution_options": type("Options", (), {})()})()

    def iter_batches(self, batch_size=None, batch_format="numpy"):
        yield from self.batches


def test_read_shard_keeps_the_rows_of_its_indices_in_their_order_and_refuses_a_new_count():
    data = features_of(np.arange(50))
    batches = [{k: v[start:start + 7] for k, v in data.items()} for start in range(0, 50, 7)]
    indices = np.random.default_rng(3).permutation(50)[:17]
    x, y = read_shard(RayDataSource(ListedDataset(batches), ("x", "y"), 50), indices)
    np.testing.assert_array_equal(x, data["x"][indices])
    np.testing.assert_array_equal(y, data["y"][indices])
    with pytest.raises(RuntimeError, match="yielded 49 rows where the driver's probe counted 50"):
        read_shard(RayDataSource(ListedDataset(
            [{k: v[:49] for k, v in data.items()}]), ("x", "y"), 50), indices)
    with pytest.raises(RuntimeError, match="yielded at least 57 rows .* counted 50"):
        read_shard(RayDataSource(ListedDataset(batches + batches[:1]), ("x", "y"), 50), indices)



# ------------------------------------- a test set as a ray.data.Dataset, and a resumed run
@dataclass
class LeftAlone:
    """A 4-step run on generated training and test Datasets, left alone: its summary, the
    driver's referenced bytes after every step, every worker's final state, worker 0's
    metrics on the test rows given as arrays, and a copy of its step-2 checkpoint."""

    summary: Any
    peaks: list[int]
    states: list[dict]
    metrics_of_arrays: dict[str, float]
    parameters: np.ndarray
    checkpoint_at_step_2: Path


def ray_data_workload() -> Workload:
    return Workload(linear_classifier, functional.cross_entropy, generated_dataset(SMALL_ROWS),
                    test_data=generated_dataset(TEST_ROWS, make_test_xy), columns=("x", "y"))


def resumable_config(folder: Path) -> SignSGDConfig:
    return config_for(folder, max_steps=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def left_alone(ray_session, tmp_path_factory) -> LeftAlone:
    folder = tmp_path_factory.mktemp("left-alone")
    saved = folder / "saved-at-step-2"
    saved.mkdir()
    before = driver_references()
    trainer = SignSGDTrainer(resumable_config(folder), progress=False,
                             workload=ray_data_workload())
    peaks = []

    def after_each_step(record: dict) -> None:
        peaks.append(driver_object_bytes(before))
        if record["step"] == 2:
            shutil.copy(trainer.run_dir.file("checkpoint.pt"), saved / "checkpoint.pt")

    test = features_of(np.arange(ROWS, ROWS + TEST_ROWS))
    try:
        summary = trainer.run(on_record=after_each_step)
        # The same rows as arrays, evaluated by the same worker (worker 0 is the first honest
        # replica, which the trainer's evaluation uses).
        as_arrays = ray.get(trainer.workers[0].evaluate.remote(test["x"], test["y"]))
        states = ray.get([w.state.remote() for w in trainer.workers])
        parameters = ray.get(trainer.workers[0].parameters.remote())
    finally:
        trainer.shutdown()
    return LeftAlone(summary, peaks, states, as_arrays, parameters, saved / "checkpoint.pt")


@pytest.mark.ray
@pytest.mark.xdist_group("ray-data-left-alone")  # one run for both
def test_generated_test_set_is_evaluated_in_the_cluster_with_the_metrics_of_arrays(
        left_alone):
    test = features_of(np.arange(ROWS, ROWS + TEST_ROWS))
    assert left_alone.summary.test_metrics == left_alone.metrics_of_arrays
    # Plain torch on the trained parameters: the mean cross-entropy over all test rows.
    model = linear_classifier()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(left_alone.parameters.copy()),
                                        model.parameters())
    with torch.no_grad():
        reference = float(functional.cross_entropy(model(torch.from_numpy(test["x"])),
                                                   torch.from_numpy(test["y"])))
    assert left_alone.summary.test_metrics["test_loss"] == pytest.approx(reference, rel=1e-5)
    # Neither Dataset's rows reach the driver: less than 1/50 of the test set after every step.
    test_bytes = test["x"].nbytes + test["y"].nbytes
    assert max(left_alone.peaks) < test_bytes / 50, (left_alone.peaks, test_bytes)


@pytest.mark.ray
@pytest.mark.xdist_group("ray-data-left-alone")  # one run for both
def test_ray_data_run_resumed_from_its_checkpoint_ends_bit_identical_to_the_run_left_alone(
        left_alone, tmp_path):
    resumed = SignSGDTrainer(resumable_config(tmp_path), progress=False,
                             workload=ray_data_workload())
    try:
        summary = resumed.run(resume=left_alone.checkpoint_at_step_2)
        states = ray.get([w.state.remote() for w in resumed.workers])
    finally:
        resumed.shutdown()
    assert summary.steps == 2  # steps 3 and 4, after the checkpoint of step 2
    for mine, theirs in zip(states, left_alone.states, strict=True):
        assert mine["flat"].numpy().tobytes() == theirs["flat"].numpy().tobytes()
        assert mine["momentum"].numpy().tobytes() == theirs["momentum"].numpy().tobytes()
        # Each worker read its own shard again and continued from its own position in it:
        # 4 batches of 16 into the first pass over its 300 rows.
        assert (mine["epoch"], mine["cursor"]) == (theirs["epoch"], theirs["cursor"]) == (0, 64)
        assert torch.equal(mine["order"], theirs["order"])
    assert summary.test_metrics == left_alone.summary.test_metrics
