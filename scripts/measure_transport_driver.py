"""What passes through the driver with each transport, from Ray's own accounting (issue #18.5).

Runs a few vote rounds of a model with ResNet-18's parameter count (11,689,512; an embedding
table, so the gradient is cheap) on local Ray, once per transport, while a thread on the
driver polls the driver's reference table (its core worker) every millisecond. Every object
that appears there is sized by its owner (``ray.experimental.get_object_locations``): those
with no node location live in the driver's own memory (Ray's in-process store, where small
task returns go), the others in a node's object store. Prints, per transport, the objects of
at least one message's size that the driver referenced per round, their bytes, and the peak
bytes of the driver's in-process store; with the load average.

    python scripts/measure_transport_driver.py [--workers 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import ray
import torch
from torch import nn

from raysign.actors.cluster import start_local
from raysign.actors.trainer import SignSGDTrainer
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.workload import Workload

RESNET18_PARAMETERS = 11_689_512
WIDTH = 8


class Table(nn.Module):
    """RESNET18_PARAMETERS parameters whose gradient costs one embedding lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(RESNET18_PARAMETERS // WIDTH, WIDTH)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids).sum(1)


def squared(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs - targets) ** 2).mean()


class DriverObjects:
    """Polls the driver's reference table; sizes every object seen there once."""

    def __init__(self, period_s: float = 0.001):
        self.core = ray._private.worker.global_worker.core_worker
        self.seen: dict[bytes, tuple[int, bool]] = {}  # id -> (bytes, in the driver's memory)
        self.peak_in_process = 0
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> DriverObjects:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_in_process = max(self.peak_in_process,
                                       self.core.get_local_memory_store_bytes_used())
            new = [oid for oid in self.core.get_all_reference_counts() if oid not in self.seen]
            if new:
                for oid in new:
                    try:  # the object may be gone by now: Ray then knows no owner for it
                        ref = ray.ObjectRef(bytes.fromhex(oid.decode()))
                        info = ray.experimental.get_object_locations([ref]).get(ref, {})
                    except ValueError:
                        continue
                    if info.get("object_size"):  # None while the task that makes it runs
                        self.seen[oid] = (int(info["object_size"]), not info.get("node_ids"))
            time.sleep(self.period_s)


def measure(transport: str, workers: int, rounds: int, results: str) -> dict[str, float]:
    ids = torch.randint(0, RESNET18_PARAMETERS // WIDTH, (64 * workers, 4)).numpy()
    targets = torch.randn(64 * workers, WIDTH).numpy()
    config = SignSGDConfig(num_workers=workers, batch_size=4, max_steps=rounds,
                           checksum_every=rounds, transport=transport, results_dir=results,
                           lr=1e-3)
    trainer = SignSGDTrainer(config, progress=False, workload=Workload(Table, squared,
                                                                       (ids, targets)))
    message = RESNET18_PARAMETERS // 8
    try:
        trainer.start()
        with DriverObjects() as seen:
            for step in range(1, rounds + 1):
                trainer.round(step)
    finally:
        trainer.shutdown()
    big = [(size, local) for size, local in seen.seen.values() if size >= message]
    return {"messages_per_round": len(big) / rounds,
            "bytes_per_round": sum(size for size, _ in big) / rounds,
            "in_driver_memory_per_round": sum(size for size, local in big if local) / rounds,
            "peak_in_process_bytes": seen.peak_in_process, "message_bytes": message}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    start_local(num_cpus=os.cpu_count(), log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as results:
            for transport in ("objects", "direct"):
                row = measure(transport, args.workers, args.rounds, results)
                print(f"{transport}: M={args.workers} " + " ".join(
                    f"{k}={v:,.0f}" for k, v in row.items())
                      + f" load={os.getloadavg()[0]:.1f}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
