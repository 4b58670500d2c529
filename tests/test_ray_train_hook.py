"""The majority-vote hook under Ray Train: ``TorchTrainer`` on 2 gloo workers with a user MLP
and a plain torch Dataset of real Fashion-MNIST images, a checkpoint every step, and a second
trainer resuming from the first run's step-3 checkpoint ending bit-identical (parameters and
every rank's hook momentum) to the uninterrupted run. The checkpoints are read back with
plain ``torch.load``, not with the code under test."""

from __future__ import annotations

import sys
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from raysign.data import load_fashion_mnist


@pytest.fixture(autouse=True)
def ship_this_module_by_value():
    """Ray Train's workers cannot import this test module: send its functions and classes
    with the trainer, by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def poll_ray_train_often(monkeypatch):
    """Ray Train's controller polls its workers every 2 s by default (so a run of a few tiny
    steps waits far longer than it computes) and starts a preemption watcher (one more actor
    process). Both are Ray Train's own knobs, which it passes from the driver's environment to
    its controller; nothing this module checks depends on them."""
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


STEPS, RESUME_AT, BATCH, LR = 6, 3, 32, 1e-3


class FashionSlice(Dataset):
    """A user's own Dataset: flattened images and labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).flatten(), int(self.labels[i])


def train_loop(config: dict) -> None:
    import ray.train

    from raysign.actors.ray_train import load_checkpoint, prepare_vote_hook, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    model, state = prepare_vote_hook(model, momentum=0.9, topology="allgather")
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    checkpoint = ray.train.get_checkpoint() or config.get("resume_from")
    start = load_checkpoint(checkpoint, model, optimizer, state) if checkpoint else 0

    context = ray.train.get_context()
    data = config["dataset"]
    sampler = DistributedSampler(data, num_replicas=context.get_world_size(),
                                 rank=context.get_world_rank(), shuffle=False)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler, drop_last=True)
    for step, (x, y) in enumerate(islice(loader, start, config["steps"]), start=start + 1):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with tempfile.TemporaryDirectory() as tmp:
            ray.train.report({"step": step, "loss": loss.item()},
                             checkpoint=save_checkpoint(tmp, model, optimizer, state, step),
                             checkpoint_dir_name=f"step-{step}")


def fit(storage: Path, name: str, images, labels, resume_from=None):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {"dataset": FashionSlice(images, labels), "steps": STEPS}
    if resume_from is not None:
        config["resume_from"] = resume_from
    trainer = TorchTrainer(
        train_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False,
                                     resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=name, storage_path=str(storage)))
    return trainer.fit()


def read(folder: Path) -> dict:
    main = torch.load(folder / "model.pt", weights_only=True)
    hooks = [torch.load(folder / f"hook-rank{r}.pt", weights_only=True) for r in range(2)]
    return {"step": main["step"], "model": main["model"],
            "momentum": [h["hook"]["momentum"] for h in hooks],
            "hook_steps": [h["step"] for h in hooks]}


@pytest.mark.slow
def test_resumed_ray_train_run_ends_bit_identical_to_uninterrupted_run(
        ray_session, data_dir, tmp_path):
    train, _ = load_fashion_mnist(data_dir)
    images, labels = train.images[:512], train.labels[:512]

    full = fit(tmp_path, "full", images, labels)
    assert full.error is None
    saved = {int(Path(c.path).name.removeprefix("step-")): Path(c.path)
             for c, _ in full.best_checkpoints}
    assert sorted(saved) == list(range(1, STEPS + 1))

    resumed = fit(tmp_path, "resumed", images, labels,
                  resume_from=ray_session.train.Checkpoint(str(saved[RESUME_AT])))
    assert resumed.error is None
    resumed_dirs = sorted(Path(c.path).name for c, _ in resumed.best_checkpoints)
    assert resumed_dirs == [f"step-{s}" for s in range(RESUME_AT + 1, STEPS + 1)]

    expected = read(saved[STEPS])
    got = read(tmp_path / "resumed" / f"step-{STEPS}")
    assert got["step"] == expected["step"] == STEPS
    assert got["hook_steps"] == expected["hook_steps"] == [STEPS, STEPS]
    assert expected["model"].keys() == got["model"].keys()
    for name, value in expected["model"].items():
        assert torch.equal(got["model"][name], value), name
    for rank in range(2):
        assert expected["momentum"][rank].keys() == got["momentum"][rank].keys() == {
            "0.weight", "0.bias", "2.weight", "2.bias"}
        for name, value in expected["momentum"][rank].items():
            assert torch.equal(got["momentum"][rank][name], value), (rank, name)
    # The momentum is per rank (each follows its own batches), so each rank's must be saved.
    assert not torch.equal(expected["momentum"][0]["0.weight"],
                           expected["momentum"][1]["0.weight"])

    # The hook was in the loop: SGD without weight decay moved every coordinate by exactly
    # lr per step (the gradient is the vote, +-1), which DDP's averaged gradient would not.
    before, after = read(saved[STEPS - 1])["model"], expected["model"]
    for name in before:
        moved = (after[name].double() - before[name].double()).abs().numpy()
        np.testing.assert_allclose(moved, LR, rtol=0, atol=1e-7, err_msg=name)


def test_load_checkpoint_refuses_other_worker_count_naming_the_ranks(tmp_path):
    """A 2-worker checkpoint loaded on 1 worker: one line naming the saved ranks and the
    world size, before anything is restored."""
    import torch.distributed as dist
    from ray.train import Checkpoint

    from raysign.actors.ray_train import load_checkpoint
    from raysign.comm_hooks import SignumVoteState

    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    torch.save({"step": 4, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
               tmp_path / "model.pt")
    for rank in range(2):
        torch.save({"step": 4, "hook": {"momentum": {}, "error": {}}},
                   tmp_path / f"hook-rank{rank}.pt")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}",
                            rank=0, world_size=1)
    try:
        state = SignumVoteState(module=model)
        with pytest.raises(ValueError, match=r"ranks \[0, 1\]; this run has 1 workers"):
            load_checkpoint(Checkpoint.from_directory(str(tmp_path)), model, optimizer, state)
    finally:
        dist.destroy_process_group()
