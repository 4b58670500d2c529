"""What passes through the driver with each transport, from Ray's own accounting (issue #18.5).

During two rounds a thread on the driver polls the bytes held by the driver's in-process
object store (its core worker's own count, ``get_local_memory_store_bytes_used``). With the
raised inline size raysign sets (``start_local``), a message a worker returns on the
``objects`` transport is a small task return: it lives in the memory of its owner, the
driver, which then inlines it into the vote actor's call. With ``direct`` the workers call
the vote actors themselves, and the driver's store never holds one message's worth of bytes.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import ray
import torch
from torch import nn

from raysign.actors.trainer import SignSGDTrainer
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.workload import Workload

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS, WIDTH = 4096, 8  # 32,768 parameters: 4,096-byte sign messages


def table_model() -> nn.Module:
    return nn.Embedding(ROWS, WIDTH)


def squared(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.sum((1, 2)) - targets) ** 2).mean()


def peak_driver_memory_store_bytes(action) -> int:
    """The most bytes the driver's in-process object store (Ray's core worker, where small
    task returns live at their owner) held while ``action()`` ran, polled every millisecond."""
    core = ray._private.worker.global_worker.core_worker
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, core.get_local_memory_store_bytes_used())
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        action()
    finally:
        stop.set()
        thread.join()
    return peak


def peak_during_two_rounds(transport: str, tmp_path) -> int:
    config = SignSGDConfig(num_workers=2, batch_size=4, max_steps=2, checksum_every=2, lr=0.01,
                           transport=transport, results_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    data = (rng.integers(0, ROWS, (64, 3)), rng.standard_normal(64).astype(np.float32))
    trainer = SignSGDTrainer(config, progress=False, workload=Workload(table_model, squared,
                                                                       data))
    try:
        trainer.start()
        return peak_driver_memory_store_bytes(lambda: [trainer.round(step) for step in (1, 2)])
    finally:
        trainer.shutdown()


@pytest.mark.ray
def test_objects_transport_holds_messages_in_the_driver_and_direct_holds_none(ray_session,
                                                                           tmp_path):
    message_bytes = ROWS * WIDTH // 8
    # objects: a vote needs both workers' messages, held in the driver's memory meanwhile.
    assert peak_during_two_rounds("objects", tmp_path) >= 2 * message_bytes
    # direct: never one message's worth (only the stats dicts pass).
    assert peak_during_two_rounds("direct", tmp_path) < message_bytes


def test_direct_is_the_default_transport():
    assert SignSGDConfig().transport == "direct"
