"""A user's own model, loss and data, defined in this file, trained by the vote trainer.

The user code below (a regression MLP with a squared-error loss on the real ETTh1 transformer
readings, a lazily read Fashion-MNIST ``Dataset`` with a hand-written label-smoothed loss)
goes to ``SignSGDTrainer`` as a ``Workload``. Each run is compared round by round with
Algorithm 1 of Bernstein et al. (ICLR 2019) written again here in numpy (``reference_run``):
momentum ``m <- beta m + (1 - beta) g``, ``sign`` with sign(0) = +1, the majority vote with
ties -> +1, and ``x <- x - lr_t (V + lambda x)`` with the scheduled rate lr_t, computed here
from the schedule's own formula. From the project the reference takes nothing: the gradient
of each mini-batch comes from torch autograd on the user's model, seeded and sharded as the
documentation says (``torch.manual_seed(seed)`` before ``model_fn()``, shards of a seeded
permutation, batches of a fresh permutation from ``default_rng([seed, rank])`` whenever the
next batch no longer fits), and the gradient accumulation, autocast, loss scaling and
clipping are applied here as the documentation defines them.

The run is observed after every step (worker 0's parameters through ``on_record``); the
vote of step t is read back from the parameter change, since every coordinate moves by
exactly lr_t: ``V_t = sign((1 - lr_t lambda) x_{t-1} - x_t)``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import math
import pickle
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset, IterableDataset

from raysign.actors import signsgd_job
from raysign.actors import trainer as trainer_module
from raysign.actors.trainer import SignSGDTrainer
from raysign.config import ConfigError, to_dict
from raysign.signsgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.replica import Replica
from raysign.signsgd.workload import Workload

# The workers cannot import this test module: its functions and classes travel by value, as
# those of a user's script (__main__) do.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


# ------------------------------------------------------------------ the user's code and data
def ett_regression(data_dir: Path, rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """The first ``rows`` hours of ETTh1: the six load readings (standardised, float32 [rows,
    6]) and the oil temperature to predict (standardised, float32 [rows])."""
    with open(data_dir / "forecast" / "ETTh1.csv", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        values = np.array([[float(v) for v in row[1:]] for _, row in zip(range(rows), reader,
                                                                        strict=False)])
    values = ((values - values.mean(0)) / values.std(0)).astype(np.float32)
    return np.ascontiguousarray(values[:, :6]), np.ascontiguousarray(values[:, 6])


def regression_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs[:, 0] - targets) ** 2).mean()


def warmup_then_halve(k: int) -> float:
    """The user's learning-rate factor after k steps: 3 steps of warm-up, halved every 4."""
    return min(1.0, (k + 1) / 3) * 0.5 ** (k // 4)


def warmup_then_halve_scheduler(optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_halve)


class LazyFashion(Dataset):
    """Fashion-MNIST test images [start, start + count) as (float32 [784], int label), read
    from the IDX files on first access in each process; what is pickled is the path and the
    range, never the pixels. ``reads`` counts the items this instance handed out."""

    def __init__(self, folder: Path, start: int, count: int):
        self.folder, self.start, self.count = Path(folder), start, count
        self.reads = 0
        self._arrays = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None, "reads": 0}

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = read_fashion(self.folder, self.start, self.count)
        return self._arrays

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        images, labels = self._load()
        self.reads += 1
        return torch.from_numpy(images[i]), int(labels[i])


def read_fashion(folder: Path, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 [count, 784] in [0, 1] and int64 [count] from the t10k IDX files."""
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    part = slice(start, start + count)
    return (images[part] / np.float32(255)).astype(np.float32), labels[part].astype(np.int64)


def small_classifier() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def smoothed_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against labels smoothed by 0.1, written out."""
    log_p = torch.log_softmax(outputs, dim=1)
    soft = torch.full_like(log_p, 0.1 / 10).scatter(1, targets[:, None], 0.9 + 0.1 / 10)
    return -(soft * log_p).sum(dim=1).mean()


def accuracy_and_loss(model: nn.Module, batches) -> dict[str, float]:
    correct = total = 0
    loss = 0.0
    for x, y in batches:
        out = model(x)
        correct += int((out.argmax(1) == y).sum())
        loss += float(smoothed_cross_entropy(out, y)) * len(y)
        total += len(y)
    return {"test_accuracy": correct / total, "test_loss": loss / total}


# ------------------------------------------------------------------ the in-process reference
def numpy_vote(messages: np.ndarray) -> np.ndarray:
    """sign(sum of signs) of float32 messages [M, d], with sign(0) = +1 and ties -> +1."""
    total = np.where(messages < 0, -1, 1).sum(axis=0)
    return np.where(total < 0, -1.0, 1.0).astype(np.float32)


def numpy_shards(n: int, workers: int, seed: int) -> list[np.ndarray]:
    """Disjoint sorted shards of range(n): a seeded permutation split into near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, workers)]


@dataclass
class Options:
    """How the reference computes a worker's gradient (the documented training features)."""

    accumulation: int = 1
    autocast: torch.dtype | None = None
    loss_scale: float = 1.0
    clip: float = 0.0


class GradientOracle:
    """Worker ``rank``'s gradients: the user's model (seeded as every replica), its shard and
    its batch order."""

    def __init__(self, config: SignSGDConfig, rank: int, model_fn, loss_fn,
                 inputs: np.ndarray, targets: np.ndarray, options: Options):
        torch.manual_seed(config.seed)
        self.model = model_fn()
        self.loss_fn = loss_fn
        shard = numpy_shards(len(targets), config.num_workers, config.seed)[rank]
        self.inputs, self.targets = inputs[shard], targets[shard]
        self.batch_size = config.batch_size
        self.rng = np.random.default_rng([config.seed, rank])
        self.order = self.rng.permutation(len(self.targets))
        self.cursor = 0
        self.options = options
        self.norms: list[float] = []

    def initial_parameters(self) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).numpy()

    def _micro_gradient(self, x: np.ndarray) -> np.ndarray:
        if self.cursor + self.batch_size > len(self.order):
            self.order, self.cursor = self.rng.permutation(len(self.targets)), 0
        batch = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        torch.nn.utils.vector_to_parameters(torch.from_numpy(x.copy()), self.model.parameters())
        self.model.zero_grad(set_to_none=True)
        inputs = torch.from_numpy(self.inputs[batch])
        targets = torch.from_numpy(self.targets[batch])
        if self.options.autocast is None:
            loss = self.loss_fn(self.model(inputs), targets)
        else:
            with torch.autocast("cpu", dtype=self.options.autocast):
                loss = self.loss_fn(self.model(inputs), targets)
        (loss * self.options.loss_scale if self.options.loss_scale != 1 else loss).backward()
        return torch.cat([p.grad.reshape(-1) for p in self.model.parameters()]).numpy()

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """The step's gradient float32 [d]: the mean of ``accumulation`` micro-batch gradients
        (summed in order, divided once), unscaled, clipped to global norm ``clip``."""
        total = self._micro_gradient(x)
        for _ in range(self.options.accumulation - 1):
            total = total + self._micro_gradient(x)
        if self.options.accumulation > 1:
            total = total / np.float32(self.options.accumulation)
        if self.options.loss_scale != 1:
            total = total / np.float32(self.options.loss_scale)
        if self.options.clip:
            norm = math.sqrt(float(np.sum(total.astype(np.float64) ** 2)))
            self.norms.append(norm)
            if norm > self.options.clip:
                total = total * np.float32(self.options.clip / norm)
        return total


@dataclass
class Reference:
    parameters: list[np.ndarray]  # x_0 .. x_T
    votes: list[np.ndarray]  # V_1 .. V_T
    ties: int
    oracles: list[GradientOracle]


def reference_run(config: SignSGDConfig, model_fn, loss_fn, inputs: np.ndarray,
                  targets: np.ndarray, lrs: list[float], options: Options) -> Reference:
    """Algorithm 1 in numpy with every worker in this process; step t uses ``lrs[t - 1]``."""
    oracles = [GradientOracle(config, rank, model_fn, loss_fn, inputs, targets, options)
               for rank in range(config.num_workers)]
    x = oracles[0].initial_parameters()
    beta, one_minus_beta = np.float32(config.momentum), np.float32(1.0 - config.momentum)
    momenta = np.zeros((config.num_workers, x.size), np.float32)
    result = Reference([x], [], 0, oracles)
    for lr_t in lrs:
        for rank, oracle in enumerate(oracles):
            momenta[rank] = beta * momenta[rank] + one_minus_beta * oracle.gradient(x)
        vote = numpy_vote(momenta)
        result.ties += int((np.where(momenta < 0, -1, 1).sum(axis=0) == 0).sum())
        # (1 - lr lambda) x - lr V: the workers' order of float operations.
        x = np.float32(1.0 - lr_t * config.weight_decay) * x - np.float32(lr_t) * vote
        result.parameters.append(x)
        result.votes.append(vote)
    return result


# --------------------------------------------------------------------- observing the run
@dataclass
class ObservedRun:
    summary: object
    parameters: list[np.ndarray]  # worker 0's x_0 .. x_T
    records: list[dict]
    digests: list[str]


def observe_run(config: SignSGDConfig, workload: Workload | None,
                started: SignSGDTrainer | None = None) -> ObservedRun:
    """Run ``config`` on a new trainer of ``workload``, or on the ``started`` trainer (its
    workload, its processes, a fresh replica in each: ``reconfigure``), which stays up."""
    if started is not None:
        started.reconfigure(config)
    trainer = started or SignSGDTrainer(config, progress=False, workload=workload)
    records: list[dict] = []
    try:
        if started is None:
            trainer.start()
        worker0 = trainer.workers[0]
        parameters = [ray.get(worker0.parameters.remote())]

        def on_record(record: dict) -> None:
            records.append(record)
            parameters.append(ray.get(worker0.parameters.remote()))

        summary = trainer.run(on_record=on_record)
        digests = ray.get([w.checksum.remote() for w in trainer.workers])
    finally:
        if started is None:
            trainer.shutdown()
    return ObservedRun(summary, parameters, records, digests)


def assert_run_equals_reference(config: SignSGDConfig, run: ObservedRun, expected: Reference,
                                lrs: list[float]) -> None:
    """Every round's vote exactly the reference's; parameters equal bit for bit."""
    assert len(run.parameters) == len(expected.parameters) == len(lrs) + 1
    assert run.parameters[0].tobytes() == expected.parameters[0].tobytes()
    for step, lr_t in enumerate(lrs, start=1):
        assert run.records[step - 1]["lr"] == lr_t, f"the learning rate of step {step}"
        before, after = run.parameters[step - 1], run.parameters[step]
        change = (np.float32(1.0 - lr_t * config.weight_decay) * before - after) / np.float32(lr_t)
        assert np.abs(np.abs(change) - 1).max() < 1e-3, f"step {step}: a move other than lr_t"
        np.testing.assert_array_equal(np.where(change < 0, -1.0, 1.0), expected.votes[step - 1],
                                      err_msg=f"the vote of step {step}")
        np.testing.assert_array_equal(after, expected.parameters[step],
                                      err_msg=f"the parameters after step {step}")
    assert len(set(run.digests)) == 1 and run.summary.replicas_identical


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ett(data_dir) -> dict[str, np.ndarray]:
    inputs, targets = ett_regression(data_dir)
    return {"train": (inputs[:500], targets[:500]), "test": (inputs[500:], targets[500:])}


def regression_workload(ett, **changes) -> Workload:
    fields = dict(model_fn=regression_mlp, loss_fn=squared_error, train_data=ett["train"],
                  test_data=ett["test"]) | changes
    return Workload(**fields)


def config_for(tmp_path, **overrides) -> SignSGDConfig:
    fields = dict(num_workers=4, batch_size=8, lr=0.01, momentum=0.9, checksum_every=4,
                  results_dir=str(tmp_path)) | overrides
    return SignSGDConfig(**fields)


# ------------------------------------------------------------------------------- the tests
@pytest.mark.ray
def test_user_regression_trains_with_majority_vote_equal_to_numpy_algorithm_every_round(
        ray_session, one_torch_thread, tmp_path, ett):
    """The first 'must show' of issue 18: the user's model, loss and arrays, with weight
    decay, the user's learning-rate schedule and gradient accumulation over 3 batches."""
    config = config_for(tmp_path, weight_decay=0.05, accumulation_steps=3, max_steps=8,
                        eval_every=4)
    workload = regression_workload(ett, lr_scheduler_fn=warmup_then_halve_scheduler)
    run = observe_run(config, workload)
    lrs = [config.lr * warmup_then_halve(k) for k in range(8)]
    expected = reference_run(config, regression_mlp, squared_error, *ett["train"], lrs,
                             Options(accumulation=3))
    assert expected.ties > 0  # four voters: the tie rule is exercised
    assert len(set(lrs)) >= 4  # the schedule moves
    # 125 samples per worker = 15 batches = 5 steps an epoch: step 6 starts epoch 2.
    assert [r["epoch"] for r in run.records] == [0] * 5 + [1] * 3
    assert_run_equals_reference(config, run, expected, lrs)
    # The default eval_fn: the test set's mean squared error at the step's parameters.
    test_inputs, test_targets = map(torch.from_numpy, ett["test"])
    model = expected.oracles[0].model
    for step in (4, 8):
        torch.nn.utils.vector_to_parameters(torch.from_numpy(expected.parameters[step].copy()),
                                            model.parameters())
        with torch.no_grad():
            mse = float(((model(test_inputs)[:, 0] - test_targets) ** 2).mean())
        assert run.records[step - 1]["test_loss"] == pytest.approx(mse, rel=1e-5)
    assert run.summary.test_metrics == {"test_loss": run.records[-1]["test_loss"]}
    assert math.isnan(run.summary.test_accuracy)


@pytest.mark.ray
def test_lazy_dataset_with_custom_loss_and_cosine_schedule_equals_numpy_algorithm(
        ray_session, one_torch_thread, tmp_path, data_dir):
    """A torch Dataset read by index on the workers (the driver reads one validation batch),
    a hand-written loss and eval_fn, the command line's cosine schedule with warm-up, the
    direct transport and two vote shards."""
    folder = data_dir / "fashion-mnist"
    train, test = LazyFashion(folder, 0, 400), LazyFashion(folder, 400, 200)
    config = config_for(tmp_path, lr=0.003, max_steps=6, eval_every=3, lr_schedule="cosine",
                        lr_warmup_steps=2, lr_min=0.0005, transport="direct", vote_shards=2)
    workload = Workload(small_classifier, smoothed_cross_entropy, train, test,
                        eval_fn=accuracy_and_loss)
    assert len(pickle.dumps(train)) < 1000  # what ships is a path and a range
    run = observe_run(config, workload)
    assert train.reads == config.batch_size  # the driver's check, nothing more
    # The documented schedule: warm-up times the cosine from lr to lr_min over max_steps.
    lrs = [(0.0005 + (0.003 - 0.0005) * (1 + math.cos(math.pi * k / 6)) / 2)
           * (min(k + 1, 2) / 2) for k in range(6)]
    images, labels = read_fashion(folder, 0, 400)
    expected = reference_run(config, small_classifier, smoothed_cross_entropy, images, labels,
                             lrs, Options())
    for step, lr_t in enumerate(lrs, start=1):
        assert run.records[step - 1]["lr"] == pytest.approx(lr_t, rel=1e-12)
    lrs = [r["lr"] for r in run.records]  # the same rates to the last bit, for bitwise checks
    assert_run_equals_reference(config, run, expected, lrs)
    test_images, test_labels = read_fashion(folder, 400, 200)
    model = expected.oracles[0].model
    torch.nn.utils.vector_to_parameters(torch.from_numpy(expected.parameters[6].copy()),
                                        model.parameters())
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_images)).argmax(1).numpy()
    assert run.summary.test_accuracy == pytest.approx(float((predicted == test_labels).mean()))
    assert set(run.summary.test_metrics) == {"test_accuracy", "test_loss"}


@pytest.mark.xdist_group("user-workload-regression-trainer")  # one process, one trainer
class TestOneStartedTrainer:
    """Runs of the plain regression workload on 3 workers that differ only in fields a
    started trainer can take (``reconfigure``: a fresh replica in every worker process): one
    trainer for them all, shut down when the class is done (its workers hold every CPU)."""

    @pytest.fixture(scope="class")
    def regression_trainer(self, ray_session, ett, tmp_path_factory):
        config = config_for(tmp_path_factory.mktemp("regression"), num_workers=3)
        trainer = SignSGDTrainer(config, progress=False, workload=regression_workload(ett))
        try:
            trainer.start()
            yield trainer
        finally:
            trainer.shutdown()

    @pytest.mark.ray
    @pytest.mark.parametrize("feature", ["bf16", "clip"])
    def test_autocast_and_clipping_change_the_run_as_the_reference_does(
            self, regression_trainer, one_torch_thread, tmp_path, ett, feature):
        """bf16 autocast: the run is the reference with a bf16 forward pass and loss, and leaves
        the fp32 trajectory. Clipping to a tiny norm: the reference with every gradient scaled to
        that norm, and also a different trajectory."""
        base = dict(num_workers=3, max_steps=5, weight_decay=0.01)
        if feature == "bf16":
            config = config_for(tmp_path, precision="bf16", **base)
            options = Options(autocast=torch.bfloat16)
        else:
            config = config_for(tmp_path, clip_grad_norm=1e-3, **base)
            options = Options(clip=1e-3)
        lrs = [config.lr] * 5
        run = observe_run(config, None, started=regression_trainer)
        train = ett["train"]
        expected = reference_run(config, regression_mlp, squared_error, *train, lrs, options)
        assert_run_equals_reference(config, run, expected, lrs)
        plain = reference_run(config, regression_mlp, squared_error, *train, lrs, Options())
        differing = sum(int((a != b).sum())
                        for a, b in zip(expected.votes, plain.votes, strict=True))
        assert differing > 0 and not np.array_equal(run.parameters[-1], plain.parameters[-1])
        if feature == "clip":
            norms = [n for oracle in expected.oracles for n in oracle.norms]
            assert len(norms) == 15 and min(norms) > 1e-3  # every gradient was clipped
        else:  # bf16 rounds the forward pass; most coordinates still vote as in fp32
            assert differing < 0.25 * sum(v.size for v in plain.votes)


def test_accumulated_gradient_is_the_mean_of_consecutive_micro_batch_gradients(
        one_torch_thread, ett):
    """On one replica, without Ray (the vote alone cannot tell a mean from a sum: the signs of
    the momentum do not change when every gradient is scaled)."""
    config = SignSGDConfig(num_workers=1, batch_size=8, accumulation_steps=3)
    inputs, targets = ett["train"]
    replica = Replica(config, 0, inputs, targets, functions=regression_workload(ett).functions)
    oracle = GradientOracle(config, 0, regression_mlp, squared_error, inputs, targets,
                            Options(accumulation=3))
    x = oracle.initial_parameters()
    for _ in range(25):  # 62 batches an epoch: the 21st step's batches span two epochs
        grad, _ = replica.gradient()
        np.testing.assert_array_equal(grad.numpy(), oracle.gradient(x))
    assert replica.epoch == 1


def test_fp16_autocast_gradient_is_the_loss_scaled_fp16_gradient(one_torch_thread, ett):
    """fp16 on one replica, without Ray: the gradient of the loss times 2^12 under fp16
    autocast, divided by 2^12 (so it is not the fp32 gradient)."""
    config = SignSGDConfig(num_workers=1, batch_size=8, precision="fp16")
    workload = regression_workload(ett)
    inputs, targets = ett["train"]
    replica = Replica(config, 0, inputs, targets, functions=workload.functions)
    oracle = GradientOracle(config, 0, regression_mlp, squared_error, inputs, targets,
                            Options(autocast=torch.float16, loss_scale=2.0**12))
    fp32 = GradientOracle(config, 0, regression_mlp, squared_error, inputs, targets, Options())
    x = oracle.initial_parameters()
    for _ in range(3):
        grad, _ = replica.gradient()
        expected = oracle.gradient(x)
        np.testing.assert_array_equal(grad.numpy(), expected)
        assert not np.array_equal(expected, fp32.gradient(x))


@pytest.mark.ray
def test_resume_mid_schedule_is_bit_identical_to_an_uninterrupted_run(ray_session,
                                                                     one_torch_thread,
                                                                     tmp_path, ett):
    config = config_for(tmp_path, num_workers=3, accumulation_steps=2, max_steps=7,
                        checkpoint_every=3, weight_decay=0.01)
    workload = regression_workload(ett, lr_scheduler_fn=warmup_then_halve_scheduler)

    def final_parameters(trainer: SignSGDTrainer, **run_args) -> list[np.ndarray]:
        try:
            trainer.run(**run_args)
            return ray.get([w.parameters.remote() for w in trainer.workers])
        finally:
            trainer.shutdown()

    class Stop(Exception):
        pass

    def stop_after_step_4(record: dict) -> None:
        if record["step"] == 4:
            raise Stop  # the driver dies after step 4; the last checkpoint is step 3

    # The uninterrupted and the interrupted run share the started worker processes
    # (``reconfigure``: a fresh replica in each); the resume is a new driver, new processes.
    interrupted = SignSGDTrainer(config, progress=False, workload=workload)
    try:
        interrupted.run()
        uninterrupted = ray.get([w.parameters.remote() for w in interrupted.workers])
        interrupted.reconfigure(config)
        with pytest.raises(Stop):
            interrupted.run(on_record=stop_after_step_4)
    finally:
        interrupted.shutdown()
    checkpoint = interrupted.run_dir.file("checkpoint.pt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["step"] == 3
    for state in saved["workers"]:  # the schedule's place: after 3 steps, the rate of step 4
        assert state["schedule"]["steps_done"] == 3
        assert state["schedule"]["lr"] == config.lr * warmup_then_halve(3)
    resumed = final_parameters(SignSGDTrainer(config, progress=False, workload=workload),
                               resume=checkpoint)
    for mine, theirs in zip(resumed, uninterrupted, strict=True):
        assert mine.tobytes() == theirs.tobytes()
    # The checkpoint belongs to this workload: another model is refused, naming the difference.
    wider = regression_workload(ett, model_fn=lambda: nn.Sequential(
        nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1)),
        lr_scheduler_fn=warmup_then_halve_scheduler)
    with pytest.raises(CheckpointError, match="from another workload .*num_parameters: 129 vs 257"):
        final_parameters(SignSGDTrainer(config, progress=False, workload=wider),
                         resume=checkpoint)


@pytest.mark.ray
def test_restarted_worker_rejoins_at_the_same_batch_and_learning_rate(ray_session,
                                                                     one_torch_thread,
                                                                     tmp_path, ett):
    """A worker that dies is restarted and re-synced: its data stream moves by
    ``accumulation_steps`` batches per step missed, and its schedule is the others'."""
    config = config_for(tmp_path, num_workers=3, accumulation_steps=2, max_steps=6)
    trainer = SignSGDTrainer(config, progress=False, workload=regression_workload(
        ett, lr_scheduler_fn=warmup_then_halve_scheduler))
    states = []

    def crash_worker_1_then_read_states(record: dict) -> None:
        if record["step"] == 2:
            trainer.workers[1].crash.remote()
        if record["step"] == 6:
            states.extend(ray.get([w.state.remote() for w in trainer.workers]))

    try:
        summary = trainer.run(on_record=crash_worker_1_then_read_states)
    finally:
        trainer.shutdown()
    assert summary.resyncs >= 1 and summary.replicas_identical
    for state in states:  # 166 samples a worker: 6 steps of 2 batches of 8 in epoch 0
        assert (state["epoch"], state["cursor"]) == (0, 6 * 2 * 8)
        assert state["schedule"]["steps_done"] == 6
        assert state["schedule"]["lr"] == config.lr * warmup_then_halve(6)


# ------------------------------------------------------------- checks before any actor starts
class Endless(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.zeros(6), 0.0


class Unpaired(Dataset):
    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int):
        return torch.zeros(6)


_LOCK = threading.Lock()


def _locked_model() -> nn.Module:
    with _LOCK:  # pickled by value with this module, so the lock would have to travel
        return regression_mlp()


BROKEN = {
    "unpicklable model_fn": (dict(model_fn=_locked_model),
                             r"workload\.model_fn cannot be shipped .*lock"),
    "model_fn returns no module": (dict(model_fn=lambda: "mlp"),
                                   r"workload\.model_fn must return a torch\.nn\.Module, got str"),
    "model fails on the batch": (dict(model_fn=lambda: nn.Linear(5, 1)),
                                 r"workload\.model_fn: the model fails on a training batch "
                                 r"\(inputs tensor torch\.float32 \[8, 6\]\)"),
    "loss raises": (dict(loss_fn=lambda out, y: functional.cross_entropy(out, y)),
                    r"workload\.loss_fn fails on \(outputs tensor torch\.float32 \[8, 1\], "
                    r"targets tensor torch\.float32 \[8\]\)"),
    "loss not scalar": (dict(loss_fn=lambda out, y: (out[:, 0] - y) ** 2),
                        r"workload\.loss_fn must return a scalar tensor \(0-d\), got tensor "
                        r"torch\.float32 \[8\]"),
    "loss a float": (dict(loss_fn=lambda out, y: float(((out[:, 0] - y) ** 2).mean().detach())),
                     r"workload\.loss_fn must return a scalar tensor \(0-d\), got float"),
    "loss not finite": (dict(loss_fn=lambda out, y: ((out[:, 0] - y) ** 2).mean() / 0.0),
                        r"workload\.loss_fn returned inf .* must be finite"),
    "loss without gradient": (dict(loss_fn=lambda out, y: ((out[:, 0] - y) ** 2).mean()
                                   .detach()),
                              r"workload\.loss_fn returned a tensor with no gradient"),
    "eval_fn returns a number": (dict(eval_fn=lambda model, batches: 0.5),
                                 r"workload\.eval_fn must return a non-empty dict .* got float"),
    "eval_fn returns text": (dict(eval_fn=lambda model, batches: {"quality": "good"}),
                             r"workload\.eval_fn must return a dict of str -> float; "
                             r"'quality' maps to str"),
    "eval_fn raises": (dict(eval_fn=lambda model, batches: {"n": len(batches)}),
                       r"workload\.eval_fn failed: TypeError"),
    "scheduler is a number": (dict(lr_scheduler_fn=lambda opt: 0.1),
                              r"workload\.lr_scheduler_fn must return a torch LRScheduler .*"
                              r"got float"),
    "scheduler needs a metric": (
        dict(lr_scheduler_fn=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt)),
        r"workload\.lr_scheduler_fn must return .*ReduceLROnPlateau needs a metric"),
    "too few samples": (dict(train_data=(np.zeros((20, 6), np.float32),
                                         np.zeros(20, np.float32))),
                        r"workload\.train_data has 20 samples: 6 per worker for num_workers=3, "
                        r"fewer than batch_size=8"),
    "dataset items not pairs": (dict(train_data=Unpaired()),
                                r"workload\.train_data\[0\] must be an \(input, target\) pair, "
                                r"got tensor torch\.float32 \[6\]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_workload_fails_in_one_line_naming_the_callable_before_ray_is_used(
        tmp_path, ett, monkeypatch, case):
    def no_ray(*args, **kwargs):
        raise AssertionError("the trainer used Ray before checking the workload")

    monkeypatch.setattr(trainer_module.ray, "put", no_ray)
    monkeypatch.setattr(trainer_module.ray, "remote", no_ray)
    changes, message = BROKEN[case]
    config = config_for(tmp_path, num_workers=3)
    with pytest.raises(ConfigError, match=message) as err:
        SignSGDTrainer(config, progress=False, workload=regression_workload(ett, **changes))
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # no run folder either


@pytest.mark.parametrize("changes,message", [
    (dict(train_data=[[0.0] * 10, [1.0] * 10]),
     r"workload\.train_data must be \(inputs, targets\) numpy arrays, got a list of "
     r"\['list', 'list'\]"),
    (dict(train_data=(np.zeros((10, 6)), np.zeros(9))),
     r"workload\.train_data: inputs \(10, 6\) and targets \(9,\) must have the same first"),
    (dict(train_data=Endless()), r"workload\.train_data is an IterableDataset \(Endless\)"),
    (dict(test_data=None, eval_fn=lambda model, batches: {}),
     r"workload\.eval_fn is given but workload\.test_data is None"),
    (dict(loss_fn="mse"), r"workload\.loss_fn='mse' is not callable"),
])
def test_malformed_workload_is_refused_when_built(ett, changes, message):
    with pytest.raises(ConfigError, match=message):
        regression_workload(ett, **changes)


def test_schedule_of_the_config_and_of_the_workload_cannot_both_be_set(tmp_path, ett):
    config = config_for(tmp_path, lr_schedule="step", lr_step_size=5)
    with pytest.raises(ConfigError, match=r"workload\.lr_scheduler_fn and lr_schedule='step'"):
        SignSGDTrainer(config, progress=False,
                       workload=regression_workload(
                           ett, lr_scheduler_fn=warmup_then_halve_scheduler))


@pytest.mark.parametrize("overrides,field", [
    (dict(accumulation_steps=0), "accumulation_steps"),
    (dict(precision="fp8"), "precision"),
    (dict(clip_grad_norm=-1.0), "clip_grad_norm"),
    (dict(lr_schedule="linear"), "lr_schedule"),
    (dict(lr_schedule="cosine"), "lr_decay_steps"),  # no horizon: neither it nor max_steps
    (dict(lr_schedule="step"), "lr_step_size"),
    (dict(lr_gamma=0.0), "lr_gamma"),
    (dict(lr_min=0.1), "lr_min"),  # above lr
    (dict(lr_warmup_steps=-1), "lr_warmup_steps"),
])
def test_training_feature_fields_are_validated_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        SignSGDConfig(**overrides)


def test_training_features_are_command_line_options():
    parser = argparse.ArgumentParser()
    signsgd_job.add_arguments(parser)
    args = parser.parse_args(["--lr-schedule", "cosine", "--lr-decay-steps", "50",
                              "--lr-warmup-steps", "5", "--lr-min", "1e-5",
                              "--accumulation-steps", "4", "--precision", "bf16",
                              "--clip-grad-norm", "1.5"])
    config = signsgd_job.config_from_args(args)
    assert (config.lr_schedule, config.lr_decay_steps, config.lr_warmup_steps, config.lr_min,
            config.accumulation_steps, config.precision, config.clip_grad_norm) == (
        "cosine", 50, 5, 1e-5, 4, "bf16", 1.5)


def test_checkpoint_from_before_the_training_features_resumes_only_with_their_defaults(
        tmp_path):
    config = SignSGDConfig(results_dir=str(tmp_path))
    older = {k: v for k, v in to_dict(config).items()
             if k not in ("lr_schedule", "lr_warmup_steps", "lr_decay_steps", "lr_min",
                          "lr_step_size", "lr_gamma", "accumulation_steps", "precision",
                          "clip_grad_norm")}
    path = save_checkpoint(tmp_path / "checkpoint.pt", config=older, step=2, workers=[])
    assert load_checkpoint(path, to_dict(config))["step"] == 2
    with pytest.raises(CheckpointError, match="accumulation_steps: 1 vs 2"):
        load_checkpoint(path, to_dict(dataclasses.replace(config, accumulation_steps=2)))


# ------------------------------------------------------------------- docs/api.md, as written
def api_examples() -> list[str]:
    text = API_PAGE.read_text()
    return re.findall(r"<!-- api-example -->\s*```python\n(.*?)```", text, flags=re.DOTALL)


def test_api_page_has_runnable_examples():
    assert len(api_examples()) >= 3


@pytest.mark.ray
@pytest.mark.parametrize("index", [0, 1, 2])
def test_api_page_example_runs_as_written(ray_session, one_torch_thread, tmp_path,
                                          monkeypatch, index):
    monkeypatch.chdir(tmp_path)
    code = api_examples()[index]
    namespace = {"__name__": "__main__"}
    exec(compile(code, f"docs/api.md example {index + 1}", "exec"), namespace)
    summary = namespace["summary"]
    assert summary.steps >= 3 and summary.replicas_identical
    assert summary.test_metrics and all(math.isfinite(v) for v in summary.test_metrics.values())
