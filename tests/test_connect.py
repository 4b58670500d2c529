"""Which Ray a run uses (``raysign.actors.cluster.connect``): without ``--address`` or
``$RAY_ADDRESS`` always a private local instance, whatever Ray is up on the machine or recorded
in Ray's temp folder; an existing cluster only when asked, with one line when it is not there.

Every run here is a ``raysign signsgd`` subprocess whose Ray temp folder (``$RAY_TMPDIR``) is a
fresh folder of the test, so the cluster file it reads or ``ray start`` writes is the test's,
never the machine's ``/tmp/ray/ray_current_cluster``. The one Ray head (``ray start --head``)
runs in its own process group, which the module kills at the end; nothing calls ``ray stop``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["--dataset", "mnist", "--model", "mlp", "--num-workers", "2", "--max-steps", "2",
            "--train-subset", "900", "--test-subset", "300", "--no-progress"]
RUN_TIMEOUT_S = 300
# The head's nodes return objects inline up to this many bytes (an odd value, so a warning that
# quotes it read the cluster's setting rather than a default): above the MLP's vote message
# (32 + 203,530 / 8 bytes), below its fp32 message (32 + 4 * 203,530 bytes).
HEAD_INLINE_BYTES = 200_000


def mlp_parameters() -> int:
    from raysign.signsgd.models import build_model

    return sum(p.numel() for p in build_model("mlp").parameters())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_temp_dir() -> Path:
    """A folder under /tmp with a short name: Ray's socket paths under it must stay within the
    107-character limit of a Unix socket path."""
    return Path(tempfile.mkdtemp(prefix="rsc", dir="/tmp"))


def ray_env(ray_tmpdir: Path, **extra: str) -> dict[str, str]:
    """This environment with Ray's temp folder moved to ``ray_tmpdir`` and no $RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_max_direct_call_object_size")}
    env["RAY_TMPDIR"] = str(ray_tmpdir)
    env.update(extra)
    return env


def run_signsgd(env: dict[str, str], results: Path, *options: str) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, driver pid) of a tiny ``raysign signsgd`` run."""
    proc = subprocess.Popen([sys.executable, "-m", "raysign.cli", "signsgd", *TINY_RUN,
                             "--results-dir", str(results), *options],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err, proc.pid


def sessions(ray_tmpdir: Path) -> set[str]:
    return {p.name for p in (ray_tmpdir / "ray").glob("session_2*")}


def driver_logs(session: Path, pid: int) -> list[Path]:
    """Ray's log of a driver process ``pid`` that connected to the node of ``session``."""
    return sorted((session / "logs").glob(f"python-core-driver-*_{pid}.log"))


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group, then SIGKILL what is left of it after a few seconds
    (a head drains for up to 30 s)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def live_head():
    """A Ray head as a user leaves one up (``ray start --head --block``), 1 CPU, with
    ``RAY_max_direct_call_object_size=HEAD_INLINE_BYTES`` in its environment and its cluster
    file in the test's Ray temp folder. Yields (that folder, its GCS address, its session
    folder); kills the head's process group at the end."""
    tmp = short_temp_dir()
    env = ray_env(tmp, RAY_max_direct_call_object_size=str(HEAD_INLINE_BYTES))
    port = free_port()
    log = (tmp / "head.log").open("w")
    head = subprocess.Popen(["ray", "start", "--head", "--port", str(port), "--num-cpus", "1",
                             "--include-dashboard=false", "--block"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        cluster_file = tmp / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 120
        while not (cluster_file.exists() and cluster_file.read_text().strip()):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up: "
                                   f"{(tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        address = cluster_file.read_text().strip()
        (session,) = sessions(tmp)
        yield tmp, address, tmp / "ray" / session
    finally:
        stop_process_group(head)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


# The tests that join ``live_head`` run in one pytest-xdist process: split over two, each
# process would start a head of its own.
ONE_HEAD = pytest.mark.xdist_group("connect-live-head")


@pytest.fixture
def ray_tmpdir():
    tmp = short_temp_dir()
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@ONE_HEAD
def test_a_run_without_address_starts_its_own_instance_beside_a_live_head(live_head):
    tmp, _, head_session = live_head
    before = sessions(tmp)
    code, out, err, pid = run_signsgd(ray_env(tmp), tmp / "runs-private")
    assert code == 0, err[-3000:]
    assert "test accuracy" in out
    # Its own Ray instance: a new session folder with its own raylet and this driver's log;
    # the head never saw the driver.
    (own,) = sessions(tmp) - before
    assert (tmp / "ray" / own / "logs" / "raylet.out").exists()
    assert driver_logs(tmp / "ray" / own, pid)
    assert not driver_logs(head_session, pid)


def test_a_run_without_address_ignores_a_stale_cluster_file(ray_tmpdir):
    cluster_file = ray_tmpdir / "ray" / "ray_current_cluster"
    cluster_file.parent.mkdir()
    dead = f"127.0.0.1:{free_port()}"
    cluster_file.write_text(dead)
    code, out, err, pid = run_signsgd(ray_env(ray_tmpdir), ray_tmpdir / "runs")
    assert code == 0, err[-3000:]
    assert "test accuracy" in out
    (own,) = sessions(ray_tmpdir)
    assert driver_logs(ray_tmpdir / "ray" / own, pid)
    assert cluster_file.read_text() == dead


@pytest.mark.parametrize("cluster_file, address, expected", [
    (None, "auto", ["ray_current_cluster", "ray start --head", "--address host:port",
                    "drop --address"]),
    ("dead", "auto", ["no Ray cluster answers at 127.0.0.1:", "ray_current_cluster",
                      "ray start --head --port", "drop --address"]),
    (None, "dead", ["no Ray cluster answers at 127.0.0.1:", "ray start --head --port",
                    "drop --address"]),
    (None, "nonsense", ["--address 'nonsense' is not a Ray address", "'auto'", "host:port"]),
], ids=["auto-no-cluster", "auto-stale-file", "dead-host-port", "malformed"])
def test_joining_a_cluster_that_is_not_there_fails_in_one_line_naming_the_fix(
        ray_tmpdir, cluster_file, address, expected):
    dead = f"127.0.0.1:{free_port()}"
    if cluster_file == "dead":
        (ray_tmpdir / "ray").mkdir()
        (ray_tmpdir / "ray" / "ray_current_cluster").write_text(dead)
    address = dead if address == "dead" else address
    start = time.monotonic()
    code, out, err, _ = run_signsgd(ray_env(ray_tmpdir), ray_tmpdir / "runs", "--address",
                                    address)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err and not sessions(ray_tmpdir)
    assert time.monotonic() - start < 60


@ONE_HEAD
def test_address_auto_joins_the_head_and_warns_that_fp32_messages_exceed_its_inline_size(
        live_head):
    tmp, _, head_session = live_head
    before = sessions(tmp)
    code, out, err, pid = run_signsgd(ray_env(tmp), tmp / "runs-auto", "--address", "auto",
                                      "--transport", "direct", "--aggregator", "mean")
    assert code == 0, err[-3000:]
    assert "test accuracy" in out
    assert sessions(tmp) == before and driver_logs(head_session, pid)
    message = 32 + 4 * mlp_parameters()
    (warning,) = [line for line in err.splitlines() if line.startswith("raysign: warning")]
    assert f"{message:,}-byte messages" in warning
    assert "1 of 1 nodes" in warning and f"{HEAD_INLINE_BYTES:,} bytes" in warning
    assert "RAY_max_direct_call_object_size=8388608 ray start" in warning


@ONE_HEAD
def test_ray_address_joins_the_head_without_warning_when_vote_messages_fit(live_head):
    tmp, address, head_session = live_head
    # As `ray job submit` runs a driver: $RAY_ADDRESS, and token authentication on.
    env = ray_env(tmp, RAY_ADDRESS=address, RAY_AUTH_MODE="token")
    before = sessions(tmp)
    code, out, err, pid = run_signsgd(env, tmp / "runs-env", "--transport", "direct")
    assert code == 0, err[-3000:]
    assert "test accuracy" in out
    assert sessions(tmp) == before and driver_logs(head_session, pid)
    assert 32 + -(-mlp_parameters() // 64) * 8 < HEAD_INLINE_BYTES
    assert "raysign: warning" not in err
