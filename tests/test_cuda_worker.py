"""A signSGD worker actor pinned to a GPU: its replica lives on CUDA, and a run of two such
workers votes every step and keeps the replicas identical. Skipped where no CUDA device exists
(``scripts/gpu_check.py`` runs it on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from raysign.actors.cluster import ActorResources
from raysign.actors.trainer import SignSGDTrainer
from raysign.signsgd.config import SignSGDConfig

pytestmark = pytest.mark.ray

GPU_SHARE = ActorResources(num_cpus=0.5, num_gpus=0.5)  # two workers on one GPU


def run_two_workers(tmp_path, resources: ActorResources) -> tuple[list, np.ndarray, np.ndarray,
                                                                   bool]:
    """Three steps of two workers with ``resources`` each: (each worker's replica device and
    Ray GPU ids, worker 0's parameters before and after, replicas identical)."""
    config = SignSGDConfig(results_dir=str(tmp_path), dataset="mnist", model="mlp",
                           train_subset=1400, test_subset=500, batch_size=16, lr=0.002,
                           num_workers=2, max_steps=3, eval_every=3, checksum_every=3)
    trainer = SignSGDTrainer(config, progress=False, worker_options=resources)
    try:
        trainer.start()
        placed = ray.get([w.__ray_call__.remote(
            lambda self: (str(self.replica.device), ray.get_gpu_ids())) for w in trainer.workers])
        before = ray.get(trainer.workers[0].parameters.remote())
        summary = trainer.run()
        after = ray.get(trainer.workers[0].parameters.remote())
    finally:
        trainer.shutdown()
    return placed, before, after, summary.replicas_identical


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here: the worker actor needs a GPU")
def test_worker_actor_pinned_to_the_gpu_trains_on_cuda(ray_session, tmp_path):
    placed, before, after, identical = run_two_workers(tmp_path, GPU_SHARE)
    for device, gpu_ids in placed:
        assert device.startswith("cuda") and len(gpu_ids) == 1, (device, gpu_ids)
    assert identical
    # Three voted steps: every coordinate moves, by at most 3 lr.
    step = np.abs(after - before)
    assert step.min() > 0 and step.max() <= 3 * 0.002 * (1 + 1e-4)
