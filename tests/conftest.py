"""Shared fixtures: one local Ray for the whole session, the real data folder, one torch
thread for modules of small models, and one started signSGD trainer that consecutive tests of
the same shape reuse."""

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


class StartedTrainer:
    """One started ``SignSGDTrainer`` at a time (its workers share out all of Ray's CPUs, so a
    second could not start beside it). ``for_config`` reconfigures it when the shape
    (``SignSGDTrainer.RESHAPING_FIELDS``) is the same: every worker gets a fresh replica in
    its process, as if started anew (``reconfigure``), which saves the start of every worker
    and vote process, far longer than a tiny run; else it shuts it down and starts one for
    ``config``."""

    def __init__(self):
        self.trainer = None

    def for_config(self, config):
        from raysign.actors.trainer import SignSGDTrainer

        held = self.trainer
        if held is not None and held.workers and all(
                getattr(held.config, f) == getattr(config, f)
                for f in SignSGDTrainer.RESHAPING_FIELDS):
            held.reconfigure(config)
            return held
        self.close()
        self.trainer = SignSGDTrainer(config, progress=False)
        self.trainer.start()
        return self.trainer

    def close(self) -> None:
        if self.trainer is not None:
            trainer, self.trainer = self.trainer, None
            trainer.shutdown()


_STARTED = StartedTrainer()


@pytest.fixture
def started_trainer(ray_session) -> StartedTrainer:
    """The process's ``StartedTrainer``; it stays up for the next test only if that test asks
    for it too (see ``release_started_trainer``)."""
    return _STARTED


@pytest.fixture(autouse=True)
def release_started_trainer(request):
    """Before a test that does not ask for ``started_trainer``, shut the held trainer down,
    so that the test's own actors find the CPUs free."""
    if "started_trainer" not in request.fixturenames:
        _STARTED.close()
    yield


@pytest.fixture(scope="module", autouse=True)
def release_started_trainer_after_the_module():
    """At the end of every module too, before the next module's fixtures start actors."""
    yield
    _STARTED.close()
