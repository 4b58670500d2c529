"""The README's cluster commands, copied from the README, on a real 4-node cluster.

``scripts/netns_cluster.py`` builds four Ray nodes in network namespaces (1 Gbit/s links, token
authentication, the head's dashboard and job server on 10.77.0.1:8265). The fenced blocks
after ``<!-- cluster-commands -->`` and ``<!-- cluster-resume -->`` in README.md are extracted
(as ``.ci/run`` extracts the test command) and run with bash inside node 0's namespace, in a
fresh copy of the repository's files (what a clone holds, the folder ``--working-dir .``
uploads), with the client variables the README names set to the cluster's and ``DATA``,
``STORAGE``, ``RUN`` set as the README says.

Phase 1: both jobs succeed; the signSGD run (config.json, metrics.jsonl, checkpoint.pt) and
the crowd run land under ``$STORAGE`` (a ``file://`` URI outside every job's working
directory), read back with json / csv / torch.load; none of their files is anywhere under the
cluster's Ray session folders (searched). The same command without ``RAY_AUTH_MODE=token`` is
refused with Ray's own message, which the README quotes.

Phase 2, on a new cluster whose node 3 does not see one folder (an empty tmpfs covers it in a
private mount namespace): the resume block continues the stored run to step 80, and every
worker's final state in checkpoint.pt, and every step's loss, equal those of an uninterrupted
80-step run of the same command on a local Ray (started beside the second cluster, whose
start and jobs leave the CPUs idle much of the time). The README's command with a relative
``--data-dir``, and a crowd job whose data folder node 3 lacks, each fail with raysign's one
line naming the fix (and the node), without a traceback.

Skipped where namespaces cannot be built (not root, or no ``ip`` / ``tc``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_spec = importlib.util.spec_from_file_location("netns_cluster", ROOT / "scripts/netns_cluster.py")
netns_cluster = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("netns_cluster", netns_cluster)
_spec.loader.exec_module(netns_cluster)

# One network-namespace cluster at a time: these run in one pytest-xdist process.
pytestmark = pytest.mark.xdist_group("netns")

NODES = 4
BIN = str(Path(sys.executable).parent)
# Ray's own messages (ray/dashboard/modules/job/sdk.py; ray/_private/authentication/
# http_token_authentication.py and authentication_constants.py, Ray 2.60).
NO_RAY_DEFAULT = ("The Ray jobs CLI & SDK require the ray[default] installation: "
                  "`pip install 'ray[default]'`")
NO_TOKEN = "Unauthorized: Missing authentication token"
NO_TOKEN_MODE = "RAY_AUTH_MODE is currently 'disabled' (not 'token')"
# What the signSGD and crowd runs write (their pages' file lists).
FINISHED = {"SUCCEEDED", "FAILED", "STOPPED"}
RUN_FILES = {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "accuracy.png",
             "time_split.png", "accuracy.csv"}
# Lists every job of the cluster with its logs, from inside node 0 (the REST API `ray job`
# uses, with the cluster's token).
JOBS_PROBE = """
import json, sys, urllib.request
address, token = sys.argv[1], open(sys.argv[2]).read().strip()
def get(path):
    request = urllib.request.Request(address + path, headers={"Authorization": "Bearer " + token})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())
jobs = [{"id": j["submission_id"], "status": j["status"], "entrypoint": j["entrypoint"],
         "logs": get("/api/jobs/" + j["submission_id"] + "/logs")["logs"]}
        for j in get("/api/jobs/") if j.get("submission_id")]  # not plain drivers
print(json.dumps(jobs))
"""


def readme_commands(marker: str) -> list[str]:
    """The commands of the fenced block right after ``marker`` in README.md, ``\\``
    continuation lines joined (one string per command)."""
    lines = README.read_text().splitlines()
    tag = f"<!-- {marker} -->"
    assert tag in lines, f"README.md has no {tag} line"
    rest = lines[lines.index(tag) + 1:]
    while rest and not rest[0].strip():
        rest.pop(0)
    assert rest and rest[0].startswith("```"), f"no fenced block right after {tag} in README.md"
    body = rest[1:rest.index("```", 1)] if "```" in rest[1:] else []
    assert body, f"the block after {tag} in README.md is empty or not closed"
    commands, current = [], ""
    for line in body:
        text = line.strip()
        if text.endswith("\\"):
            current += text[:-1].strip() + " "
            continue
        current += text
        if current.strip() and not current.startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def cluster_section() -> str:
    text = README.read_text()
    start = text.index("## On a cluster")
    return text[start:text.index("\n## ", start + 1)]


def fresh_clone(destination: Path) -> Path:
    """The files a clone holds, as this working tree has them: the tracked files and new ones
    git does not ignore (so that uncommitted work is what runs; in CI, exactly the clone)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


def client_env(state, **variables: str) -> dict[str, str]:
    """The submitting shell: the README's client variables set to the cluster's, plus
    ``variables`` (DATA, STORAGE, RUN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return {**env, **state.job_env(), **variables}


def in_node0(script: str, cwd: Path, env: dict[str, str],
             timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns_cluster.node_namespace(0), "bash",
                           "-e", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def jobs_of(state) -> list[dict]:
    out = subprocess.run(["ip", "netns", "exec", netns_cluster.node_namespace(0),
                          sys.executable, "-c", JOBS_PROBE, state.dashboard_address,
                          state.token_path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def wait_for_jobs(state, count: int, timeout: float = 240) -> list[dict]:
    """The cluster's ``count`` jobs once every one has finished."""
    deadline = time.time() + timeout
    while True:
        jobs = jobs_of(state)
        if len(jobs) >= count and all(j["status"] in FINISHED for j in jobs):
            return jobs
        assert time.time() < deadline, [(j["id"], j["status"]) for j in jobs]
        time.sleep(1.0)


def the_job(jobs: list[dict], script: str) -> dict:
    found = [j for j in jobs if script in j["entrypoint"]]
    assert len(found) == 1, f"expected one job running {script}: {jobs}"
    return found[0]


def results_line(logs: str) -> str:
    lines = [line for line in logs.splitlines() if line.startswith("results: ")]
    assert lines, f"the job printed no 'results: <location>' line:\n{logs[-3000:]}"
    return lines[-1].removeprefix("results: ").strip()


def local_path(location: str) -> Path:
    return Path(urlsplit(location).path) if location.startswith("file://") else Path(location)


def run_files_in_ray_sessions(state, clone: Path) -> tuple[list[Path], list[Path]]:
    """(files under the nodes' Ray temp dirs named like a run's files or ending in .png,
    except the repository's own files inside an uploaded working dir; the uploaded working
    dirs holding scripts/run_signsgd.py)."""
    tracked = {p.relative_to(clone).as_posix() for p in clone.rglob("*") if p.is_file()}
    found, packages = [], []
    for temp_dir in state.temp_dirs():
        for path in temp_dir.rglob("*"):
            if path.name.startswith("_ray_pkg_") and (path / "scripts/run_signsgd.py").is_file():
                packages.append(path)
            if not path.is_file() or not (path.name in RUN_FILES or path.suffix == ".png"):
                continue
            package = next((p for p in path.parents if p.name.startswith("_ray_pkg_")), None)
            if package is not None and path.relative_to(package).as_posix() in tracked:
                continue
            found.append(path)
    return found, packages


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_worker_states(resumed: dict, reference: dict) -> None:
    import torch

    assert len(resumed["workers"]) == len(reference["workers"])
    for rank, (mine, theirs) in enumerate(zip(resumed["workers"], reference["workers"],
                                              strict=True)):
        assert torch.equal(mine["flat"], theirs["flat"]), f"worker {rank}: parameters differ"
        assert torch.equal(mine["momentum"], theirs["momentum"]), f"worker {rank}: momentum"
        assert mine["buffers"].keys() == theirs["buffers"].keys()
        for name in mine["buffers"]:
            assert torch.equal(mine["buffers"][name], theirs["buffers"][name]), (rank, name)
        assert (mine["epoch"], mine["cursor"]) == (theirs["epoch"], theirs["cursor"])
        assert torch.equal(mine["order"], theirs["order"])
        assert mine["batch_rng"] == theirs["batch_rng"], f"worker {rank}: batch generator"


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """``up(**options)`` brings a 4-node cluster up (taking down the one this test brought up
    before); whatever this test brought up is taken down at the end, even on failure."""
    # The nodes (and so every job's driver and tasks) inherit this environment: this
    # interpreter's `python` and `ray`, and a node cache the test removes.
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ.get('PATH', '')}")
    monkeypatch.setenv("RAYSIGN_CACHE", str(tmp_path / "node-cache"))
    ours = []

    def up(**options):
        if ours:
            netns_cluster.down(quiet=True)
        state = netns_cluster.up(NODES, rate="1gbit", cpus_per_node=1, object_store_mb=256,
                                 dashboard=True, **options)
        ours.append(state)
        return state

    yield up
    if ours:
        netns_cluster.down(quiet=True)
        assert not namespaces() & {netns_cluster.BRIDGE_NS, *map(netns_cluster.node_namespace,
                                                                 range(NODES))}
        assert not ray_processes_of_the_cluster()


def ray_processes_of_the_cluster() -> list[str]:
    """Command lines of live processes started for the namespace cluster (its temp dirs)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The state folder as a path prefix: not the lock file beside it, which a command
        # line taking the cluster's lock names (flock /tmp/raysign-netns.lock pytest ...).
        if proc.name.isdigit() and f"{netns_cluster.STATE_DIR}/" in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
@pytest.mark.skipif(netns_cluster.missing_requirements() is not None,
                    reason=f"netns cluster unavailable: {netns_cluster.missing_requirements()}")
def test_readme_cluster_commands_store_runs_and_resume_bit_identically_on_a_new_cluster(
        cluster, tmp_path, data_dir, request):
    submit = readme_commands("cluster-commands")
    resume = readme_commands("cluster-resume")
    assert any("run_signsgd.py" in c for c in submit) and any("run_crowd.py" in c for c in submit)
    assert len(resume) == 1 and "--resume" in resume[0]
    clone = fresh_clone(tmp_path / "clone")
    data = str(Path(data_dir).resolve())
    storage_dir = tmp_path / "shared-storage"
    storage = storage_dir.as_uri()  # file:///.../shared-storage, outside every working dir
    hidden = tmp_path / "data-copy"  # a data folder node 3 of the second cluster lacks
    hidden.mkdir()
    (hidden / "fashion-mnist").symlink_to(Path(data) / "fashion-mnist")

    started = time.time()

    def lap(what: str) -> None:  # shown with pytest -s
        print(f"[test_cluster_jobs] {time.time() - started:6.1f} s  {what}")

    # Phase 1: the README's submit block.
    state = cluster()
    lap("cluster up")
    env = client_env(state, DATA=data, STORAGE=storage)
    refused = in_node0(submit[0], clone, {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"},
                       timeout=60)
    assert refused.returncode != 0
    assert NO_TOKEN in refused.stderr and NO_TOKEN_MODE in refused.stderr, refused.stderr[-3000:]
    block = in_node0("\n".join(submit), clone, env)
    assert block.returncode == 0, (block.stdout + block.stderr)[-6000:]
    lap("README submit block")
    jobs = jobs_of(state)
    assert len(jobs) == sum(c.startswith("ray job submit") for c in submit)
    assert all(j["status"] == "SUCCEEDED" for j in jobs), [(j["id"], j["status"]) for j in jobs]
    signsgd, crowd = the_job(jobs, "run_signsgd.py"), the_job(jobs, "run_crowd.py")
    run = results_line(signsgd["logs"])
    crowd_run = results_line(crowd["logs"])
    assert run.startswith(storage + "/") and crowd_run.startswith(storage + "/"), (run, crowd_run)

    run_path = local_path(run)
    config = json.loads((run_path / "config.json").read_text())
    assert (config["num_workers"], config["vote_shards"], config["transport"],
            config["max_steps"]) == (4, 4, "direct", 40)
    assert (config["data_dir"], config["results_dir"]) == (data, storage)
    first_metrics = read_jsonl(run_path / "metrics.jsonl")
    assert [m["step"] for m in first_metrics] == list(range(1, 41))
    checkpoint = load_checkpoint(run_path / "checkpoint.pt")
    assert checkpoint["step"] == 40 and len(checkpoint["workers"]) == 4
    crowd_path = local_path(crowd_run)
    with open(crowd_path / "accuracy.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["dataset"] for r in rows} == {"bluebirds", "rte", "temp"}
    assert all(0.5 < float(r["accuracy"]) <= 1.0 for r in rows)
    assert json.loads((crowd_path / "config.json").read_text())["datasets"] == [
        "bluebirds", "rte", "temp"]
    stray, packages = run_files_in_ray_sessions(state, clone)
    assert packages, "no uploaded working dir under the cluster's Ray temp dirs: searched the "\
                     f"wrong place ({state.temp_dirs()})"
    assert not stray, f"run files under Ray's session folders: {stray}"
    # The nodes' cache (staging of the file:// run) is this test's, and was emptied.
    staged = tmp_path / "node-cache" / "staging"
    assert staged.is_dir() and not any(p.is_file() for p in staged.rglob("*"))

    old_sessions = set(state.temp_dirs()[0].glob("session_2*"))
    # The reference: the resume command's options, uninterrupted, on a private local Ray (no
    # address given, none in the environment), run beside phase 2 and read after it.
    words = shlex.split(resume[0].split(" -- ", 1)[1])[2:]  # after `python scripts/run_...py`
    at = words.index("--resume")
    del words[at:at + 2]
    values = {"$DATA": data, "$STORAGE": str(tmp_path / "reference")}
    reference_log = tmp_path / "reference.log"
    with open(reference_log, "w") as log:
        reference_job = subprocess.Popen(
            [sys.executable, "-m", "raysign.cli", "signsgd",
             *[values.get(w, w) for w in words], "--no-progress"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("RAY_")})

    def stop_reference() -> None:  # on a failure before it is read: SIGTERM lets its driver
        if reference_job.poll() is None:  # shut its private Ray down
            reference_job.terminate()
            try:
                reference_job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reference_job.kill()

    request.addfinalizer(stop_reference)

    # Phase 2: a new cluster (node 3 without `hidden`). While the README's resume block runs,
    # two jobs that must stop at once: the README's first command with a relative --data-dir,
    # and a crowd job whose data folder node 3 (10.77.0.4) lacks (its tasks read it there).
    state = cluster(hide={3: [str(hidden)]})
    lap("old cluster down, new cluster up")
    assert old_sessions and not any(p.exists() for p in old_sessions)
    relative = submit[0].replace('"$DATA"', "shared/data").replace("--max-steps 40",
                                                                   "--max-steps 1")
    missing = (f"ray job submit --working-dir . -- python scripts/run_crowd.py train "
               f"--data-dir {hidden} --results-dir {shlex.quote(str(storage_dir))} "
               "--methods mv --epochs 1")
    assert "--data-dir shared/data" in relative
    no_wait = [c.replace("ray job submit", "ray job submit --no-wait", 1)
               for c in (relative, missing)]
    env = client_env(state, DATA=data, STORAGE=storage, RUN=run)
    submitted = in_node0("\n".join(no_wait), clone, env)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    block = in_node0("\n".join(resume), clone, env)
    assert block.returncode == 0, (block.stdout + block.stderr)[-6000:]
    lap("README resume block")
    jobs = wait_for_jobs(state, 3)
    resumed = the_job(jobs, "--resume")
    assert resumed["status"] == "SUCCEEDED" and results_line(resumed["logs"]) == run
    assert f"resumed {run} after step 40" in resumed["logs"]
    metrics = read_jsonl(run_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 81))
    assert metrics[:40] == first_metrics
    final = load_checkpoint(run_path / "checkpoint.pt")
    assert final["step"] == 80
    stray, packages = run_files_in_ray_sessions(state, clone)
    assert packages and not stray, (packages, stray)

    job = the_job(jobs, "--data-dir shared/data")
    assert job["status"] == "FAILED", job
    assert "raysign train: data_dir='shared/data' resolves to" in job["logs"], job["logs"]
    assert "pass an absolute path on storage every node reaches" in job["logs"]
    assert "Traceback" not in job["logs"], job["logs"]
    job = the_job(jobs, "run_crowd.py train")
    assert job["status"] == "FAILED", job
    assert (f"raysign crowd: data_dir='{hidden}/fashion-mnist' does not exist on node "
            f"{netns_cluster.node_ip(3)} (of {NODES} that run tasks); put it at that path on "
            "every node") in job["logs"], job["logs"]
    assert "Traceback" not in job["logs"], job["logs"]

    lap("results read back, one-line failures checked")
    assert reference_job.wait(timeout=600) == 0, reference_log.read_text()[-6000:]
    reference_run = next((tmp_path / "reference" / "signsgd").iterdir())
    reference = load_checkpoint(reference_run / "checkpoint.pt")
    assert reference["step"] == 80
    assert_same_worker_states(final, reference)
    reference_metrics = read_jsonl(reference_run / "metrics.jsonl")
    assert [m["loss"] for m in metrics] == [m["loss"] for m in reference_metrics]
    lap("reference run")


def test_ray_job_submit_without_ray_default_fails_with_the_message_the_readme_quotes(tmp_path):
    """Ray's own message for `ray job submit` where ray[default] is missing (aiohttp, which
    only ray[default] brings, made unimportable), quoted in the README's cluster section with
    its fix."""
    hide = tmp_path / "no-ray-default" / "aiohttp"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('ray[default] is not installed')\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "PYTHONPATH": str(hide.parent), "RAY_ADDRESS": "http://127.0.0.1:8265",
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    out = subprocess.run(["ray", "job", "submit", "--", "echo", "hello"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == f"RuntimeError: {NO_RAY_DEFAULT}", out.stderr
    section = " ".join(cluster_section().split())
    assert "The Ray jobs CLI & SDK require the ray[default] installation" in section
    assert NO_TOKEN in section and NO_TOKEN_MODE in section


def test_readme_cluster_blocks_are_found():
    """The blocks the cluster test runs exist where it looks (cheap; also where no cluster can
    be built): signSGD and crowd jobs, then a resume from $RUN."""
    submit = readme_commands("cluster-commands")
    resume = readme_commands("cluster-resume")
    assert [c.split(" -- ")[0].split()[:3] for c in submit if "submit" in c] == [
        ["ray", "job", "submit"]] * 2
    assert '--resume "$RUN"' in resume[0] and '--results-dir "$STORAGE"' in resume[0]
    assert all(not c.endswith("\\") for c in submit + resume)
