"""Shared fixtures: one local Ray for the whole session, the real data folder, and one torch
thread for modules of small models."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysign.data import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"the shared data folder {path} is missing (set $RAYSIGN_DATA)")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance with 2 CPUs for every test that needs it, started as the
    trainer's own ``connect`` starts one (``raysign.actors.cluster.start_local``: the same
    ``max_direct_call_object_size``, so messages travel inline as in production); shut down at
    the end so no Ray process outlives the test session."""
    import ray

    from raysign.actors.cluster import start_local

    if not ray.is_initialized():
        start_local(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_torch_thread():
    """Small models run many times slower with two intra-op threads on a loaded 2-core box;
    modules of them use this with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
