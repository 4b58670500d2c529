"""Sweep of the majority-vote DDP hook under Ray Train: learning rate x momentum.

Each trial runs one ``TorchTrainer`` (Ray Train, gloo on CPU, NCCL when the cluster has a GPU
per worker) whose ``NUM_WORKERS`` workers train an MLP on Fashion-MNIST through DDP with
``raysign.comm_hooks.signum_vote_hook`` (``raysign.actors.ray_train.prepare_vote_hook``) and a
plain ``torch.optim.SGD``. Every ``eval_every`` steps and at the end the workers report the
test accuracy with a checkpoint (model, optimizer and every rank's hook momentum,
``raysign.actors.ray_train.save_checkpoint``); Ray Tune receives rank 0's report through Ray
Train's ``TuneReportCallback``. A Train run restarted after a worker failure continues from its
latest checkpoint (``ray.train.get_checkpoint()``).

    raysign sweep ddp_hook            # 3 lr x 2 momentum, 1 epoch of Fashion-MNIST each
    raysign sweep ddp_hook --quick    # 2 trials of 20 steps on 2048 images

The trial itself only starts the Train run and waits (``DRIVER_CPUS``); the Train workers get
the rest of the trial's CPU budget (``MAX_TRIAL_CPUS`` at most), so trials never wait on each
other's workers. The Train run's own folder (its checkpoints) is ``train/`` in the trial's
folder of the sweep's results.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import torch
from ray import tune
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from raysign.data import default_data_dir, load_fashion_mnist

DESCRIPTION = "the majority-vote DDP hook under Ray Train (TorchTrainer): lr x momentum"
METRIC = "test_accuracy"
MODE = "max"
NUM_SAMPLES = 1
NUM_WORKERS = 2
MAX_TRIAL_CPUS = 8.0
DRIVER_CPUS = 0.05

_BASE: dict[str, Any] = dict(hidden=64, batch_size=32, topology="allgather", weight_decay=0.0,
                             seed=0)


def param_space(quick: bool) -> dict[str, Any]:
    # The data folder as the driver sees it: every trial runs in its own folder.
    data = {"data_dir": str(default_data_dir().resolve())}
    if quick:
        return {**_BASE, **data, "train_subset": 2048, "test_subset": 500, "steps": 20,
                "eval_every": 10, "lr": tune.grid_search([1e-3, 3e-3]), "momentum": 0.9}
    return {**_BASE, **data, "train_subset": 0, "test_subset": 0, "steps": 937,
            "eval_every": 200, "lr": tune.grid_search([3e-4, 1e-3, 3e-3]),
            "momentum": tune.grid_search([0.0, 0.9])}


def _trial_cpus(cpus: float) -> float:
    return min(cpus, MAX_TRIAL_CPUS)


def _use_gpu(gpus: float) -> bool:
    return gpus >= NUM_WORKERS


def worker_cpus(cpus: float) -> float:
    """CPUs each Train worker reserves, given the cluster's CPUs."""
    return math.floor(1000 * (_trial_cpus(cpus) - DRIVER_CPUS) / NUM_WORKERS) / 1000


def trial_resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"cpu": DRIVER_CPUS}


def max_concurrent_trials(cpus: float, gpus: float) -> int:
    fits = int(cpus // _trial_cpus(cpus))
    if _use_gpu(gpus):
        fits = min(fits, int(gpus // NUM_WORKERS))
    return max(1, fits)


def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _tensors(split: Any, subset: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = subset or len(split.labels)
    return (torch.from_numpy(split.images[:n]).float(),
            torch.from_numpy(split.labels[:n]).long())


def train_loop(config: dict[str, Any]) -> None:
    """One Train worker: DDP with the vote hook, SGD, test accuracy and a checkpoint every
    ``eval_every`` steps. The batches are a function of the step (a seeded
    ``DistributedSampler``, epoch by epoch), so a resumed run sees the same ones."""
    import ray.train

    from raysign.actors.ray_train import load_checkpoint, prepare_vote_hook, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    train, test = load_fashion_mnist(config["data_dir"])
    train_x, train_y = _tensors(train, config["train_subset"])
    test_x, test_y = _tensors(test, config["test_subset"])
    model, state = prepare_vote_hook(_mlp(config["hidden"]), momentum=config["momentum"],
                                     topology=config["topology"])
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"],
                                weight_decay=config["weight_decay"])
    checkpoint = ray.train.get_checkpoint()
    step = load_checkpoint(checkpoint, model, optimizer, state) if checkpoint else 0

    context = ray.train.get_context()
    data = TensorDataset(train_x, train_y)
    sampler = DistributedSampler(data, num_replicas=context.get_world_size(),
                                 rank=context.get_world_rank(), shuffle=True,
                                 seed=config["seed"], drop_last=True)
    loader = DataLoader(data, batch_size=config["batch_size"], sampler=sampler, drop_last=True)
    per_epoch = len(loader)
    while step < config["steps"]:
        epoch, done = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        for x, y in loader if done == 0 else _skip(loader, done):
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()  # the gradient DDP leaves is the majority vote
            optimizer.step()
            step += 1
            if step % config["eval_every"] == 0 or step == config["steps"]:
                metrics = {"test_accuracy": _accuracy(model, test_x, test_y, device),
                           "loss": loss.item(), "step": step, "epoch": epoch}
                with tempfile.TemporaryDirectory() as tmp:
                    ray.train.report(metrics, checkpoint=save_checkpoint(
                        tmp, model, optimizer, state, step))
            if step == config["steps"]:
                break


def _skip(loader: DataLoader, done: int):
    for i, batch in enumerate(loader):
        if i >= done:
            yield batch


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    predictions = model.module(x.to(device)).argmax(1).cpu()
    return float((predictions == y).double().mean())


def trainable(config: dict[str, Any]) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cluster = ray.cluster_resources()
    use_gpu = _use_gpu(cluster.get("GPU", 0.0))
    # The Train run's checkpoints go beside the trial's Tune results, on the sweep's storage
    # (a path or a URI), not into the Ray session's staging folder.
    storage = tune.get_context().get_storage()
    trainer = TorchTrainer(
        train_loop, train_loop_config=dict(config),
        scaling_config=ScalingConfig(
            num_workers=NUM_WORKERS, use_gpu=use_gpu,
            resources_per_worker={"CPU": worker_cpus(cluster.get("CPU", 1.0)),
                                  **({"GPU": 1.0} if use_gpu else {})}),
        run_config=RunConfig(name="train", storage_path=storage.trial_fs_path,
                             storage_filesystem=storage.storage_filesystem,
                             callbacks=[TuneReportCallback()]))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
