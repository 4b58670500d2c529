"""A real multi-node Ray cluster on one machine: network namespaces, a bridge, ``tc`` limits.

``up --nodes N --rate 1gbit --delay 0.2ms`` (as root) builds::

    namespace rsbr:  bridge rsbr0 ── rsh0 ── rsh1 ── ... ── rsh{N-1}    (host ends of the veths)
                                      │       │                │
    namespace rs0:   rsn0 10.77.0.1   │  rs1: rsn1 10.77.0.2   ...  rs{N-1}: 10.77.0.N

Every node's link is shaped in both directions with a token bucket (``tbf``) at ``--rate``: the
node-side veth end limits what the node sends, the bridge-side end what it receives, like a
full-duplex NIC. ``--delay`` adds ``netem`` delay where the kernel has ``sch_netem`` (it is
skipped with a warning where it does not). Addresses are private (10.77.0.0/24) and live only
inside the namespaces this script creates: nothing is routed anywhere else, and the root
namespace is not touched.

Then a Ray head starts in ``rs0`` and one Ray worker node in each other namespace, each on its
own address, with token authentication on (``RAY_AUTH_MODE=token``) and a fresh token in
``/tmp/raysign-netns/auth_token`` that every node and driver reads through
``RAY_AUTH_TOKEN_PATH``. A driver must run inside a namespace to reach those addresses::

    python scripts/netns_cluster.py exec -- python scripts/bench_signsgd_step.py --attach ...

``up --dashboard`` also starts the head's dashboard on ``http://10.77.0.1:8265``, the job
server ``ray job submit`` talks to (it needs ``ray[default]``); ``ClusterState.job_env()`` is
what a submitting shell inside a namespace needs::

    python scripts/netns_cluster.py up --dashboard
    python scripts/netns_cluster.py exec --jobs -- ray job submit --working-dir . -- python ...

``up --hide 3:/data/copy`` starts node 3's Ray inside a private mount namespace where an empty
``tmpfs`` covers ``/data/copy``: the namespaces share one filesystem, and this is a node that
lacks a path the others have (the other nodes and the root namespace still see it).

``down`` stops the Ray processes of each namespace by their ids (``ip netns pids``; never
``ray stop``, which would kill every Ray process on the machine, since the process ids are
shared), deletes the namespaces (which deletes the veths and the bridge) and the state folder.
It works from the state file ``/tmp/raysign-netns/state.json``, written after each step, so it
also cleans up after a partial ``up``. ``status`` shows what is up.

``kill-node N`` SIGKILLs every process of worker node ``N``'s namespace (a node that dies at
once; the namespace and its link stay) and ``restart-node N`` starts that node's Ray again, a
new Ray node on the same address (``scripts/chaos.py``'s ``node_kill``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path("/tmp/raysign-netns")
STATE_FILE = STATE_DIR / "state.json"
BRIDGE_NS = "rsbr"
BRIDGE = "rsbr0"
SUBNET = "10.77.0"
RAY_PORT = 6379
DASHBOARD_PORT = 8265
# = raysign.actors.cluster.DIRECT_CALL_BYTES (this script imports only the standard library)
DIRECT_CALL_BYTES = 8 * 2**20
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")
_DELAY = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")


def node_namespace(i: int) -> str:
    return f"rs{i}"


def node_ip(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


@dataclass
class ClusterState:
    """What ``up`` made (so far); ``down`` removes exactly this."""

    nodes: int
    rate: str
    delay: str
    cpus_per_node: float
    namespaces: list[str] = field(default_factory=list)
    ray_started: list[str] = field(default_factory=list)
    delay_applied: bool = False
    # Ray's max_direct_call_object_size on every node and driver (0: Ray's default, 100 KiB);
    # the default matches raysign.actors.cluster.DIRECT_CALL_BYTES, which the direct transport
    # needs.
    direct_call_bytes: int = DIRECT_CALL_BYTES
    token_path: str = str(STATE_DIR / "auth_token")
    address: str = f"{SUBNET}.1:{RAY_PORT}"
    # The job server on the head's dashboard ("" without --dashboard).
    dashboard_address: str = ""
    # [node, path]: that node's Ray runs where an empty tmpfs covers the path (--hide).
    hidden: list[list] = field(default_factory=list)
    # Each node's object store (restart-node starts a node with the size up gave it).
    object_store_bytes: int = 2**30

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> ClusterState | None:
        if not STATE_FILE.exists():
            return None
        return cls(**json.loads(STATE_FILE.read_text()))

    def driver_env(self) -> dict[str, str]:
        """Environment a driver inside a namespace needs to join this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": self.token_path, **self.ray_config_env()}

    def job_env(self) -> dict[str, str]:
        """Environment a ``ray job submit`` client inside a namespace needs (the dashboard's
        job server, the token); empty without a dashboard."""
        if not self.dashboard_address:
            return {}
        return {"RAY_ADDRESS": self.dashboard_address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": self.token_path}

    def temp_dirs(self) -> list[Path]:
        """Every node's Ray temp dir (its session folders: logs, uploaded working dirs)."""
        return [STATE_DIR / f"n{i}" for i in range(self.nodes)]

    def ray_config_env(self) -> dict[str, str]:
        if not self.direct_call_bytes:
            return {}
        return {"RAY_max_direct_call_object_size": str(self.direct_call_bytes)}


def missing_requirements() -> str | None:
    """Why this machine cannot build the cluster, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command (iproute2) is missing"
    return None


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def _ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run("ip", "netns", "exec", ns, *cmd, check=check)


def _rate_bytes(rate: str) -> float:
    value, unit = re.match(r"^(\d+(?:\.\d+)?)(\w+)$", rate).groups()
    return float(value) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[unit] / 8


def _shape(ns: str, dev: str, rate: str, delay: str) -> bool:
    """Limit ``dev``'s egress to ``rate`` (tbf), with netem ``delay`` first if the kernel can.
    Returns whether the delay was applied."""
    # A bucket of ~4 ms at the rate (>= 64 KiB) lets TSO segments through without stalls.
    burst = max(65536, int(_rate_bytes(rate) / 250))
    tbf = ["tbf", "rate", rate, "burst", str(burst), "latency", "50ms"]
    if delay and delay != "0ms":
        netem = _ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                    "delay", delay, "limit", "100000", check=False)
        if netem.returncode == 0:
            _ns(ns, "tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf)
            return True
    _ns(ns, "tc", "qdisc", "add", "dev", dev, "root", *tbf)
    return False


def _ray_executable() -> str:
    local = Path(sys.executable).with_name("ray")
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def _ray_env(state: ClusterState) -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.token_path,
            "RAY_USAGE_STATS_ENABLED": "0", **state.ray_config_env()}


def _ray_start_command(state: ClusterState, i: int, object_store_bytes: int) -> list[str]:
    # One temp dir per node keeps these sessions apart from other local Ray instances.
    ray = [_ray_executable(), "start",
           "--node-ip-address", node_ip(i), "--num-cpus", str(int(state.cpus_per_node)),
           "--object-store-memory", str(object_store_bytes),
           "--temp-dir", str(STATE_DIR / f"n{i}"), "--disable-usage-stats"]
    if i == 0 and state.dashboard_address:
        ray += ["--head", "--port", str(RAY_PORT), "--include-dashboard", "true",
                "--dashboard-host", node_ip(0), "--dashboard-port", str(DASHBOARD_PORT)]
    elif i == 0:
        ray += ["--head", "--port", str(RAY_PORT), "--include-dashboard", "false"]
    else:
        ray += ["--address", state.address]
    hidden = [path for node, path in state.hidden if node == i]
    if hidden:
        # A private mount namespace (unshare -m, nothing propagates back) where tmpfs covers
        # each path; ray start's daemons keep it, and it goes away with them.
        mounts = " && ".join(f"mount -t tmpfs -o size=1m raysign-hidden {shlex.quote(p)}"
                             for p in hidden)
        ray = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'{mounts} && exec "$@"', "sh", *ray]
    return ["ip", "netns", "exec", node_namespace(i), *ray]


def _start_ray(state: ClusterState, object_store_bytes: int) -> None:
    """The head first, then every worker node at once. Their working directory is the state
    folder, not the caller's: a job submitted without --working-dir finds no files there, as
    on a real cluster."""
    for batch in ([0], list(range(1, state.nodes))):
        started = {i: subprocess.Popen(_ray_start_command(state, i, object_store_bytes),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=_ray_env(state), cwd=STATE_DIR)
                   for i in batch}
        state.ray_started += [node_namespace(i) for i in batch]
        state.save()
        for i, process in started.items():
            output, _ = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"ray start on {node_namespace(i)} failed:\n"
                                   f"{output[-3000:]}")


def _wait_for_nodes(state: ClusterState, timeout: float = 90.0) -> None:
    probe = ("import ray; ray.init(log_to_driver=False); "
             "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.time() + timeout
    alive = "0"
    while time.time() < deadline:
        result = subprocess.run(["ip", "netns", "exec", node_namespace(0), sys.executable,
                                 "-c", probe], capture_output=True, text=True,
                                env={**_ray_env(state), **state.driver_env()})
        alive = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "0"
        if alive == str(state.nodes):
            return
        time.sleep(2.0)
    raise RuntimeError(f"only {alive} of {state.nodes} Ray nodes alive after {timeout:.0f} s")


def _wait_for_dashboard(state: ClusterState, timeout: float = 90.0) -> None:
    """Until the head's job server answers an authenticated request (from node 0)."""
    probe = ("import sys, urllib.request; request = urllib.request.Request(sys.argv[1] + "
             "'/api/version', headers={'Authorization': 'Bearer ' + open(sys.argv[2]).read()"
             ".strip()}); urllib.request.urlopen(request, timeout=5).read()")
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = _ns(node_namespace(0), sys.executable, "-c", probe, state.dashboard_address,
                     state.token_path, check=False)
        if result.returncode == 0:
            return
        time.sleep(1.0)
    raise RuntimeError(f"the dashboard at {state.dashboard_address} did not answer within "
                       f"{timeout:.0f} s: {result.stderr.strip().splitlines()[-1:]}")


def up(nodes: int, rate: str = "none", delay: str = "", cpus_per_node: int = 1,
       object_store_mb: int = 1024, direct_call_bytes: int = DIRECT_CALL_BYTES,
       dashboard: bool = False, hide: dict[int, list[str]] | None = None) -> ClusterState:
    """Build the namespaces, links and Ray nodes; on any failure remove what was made.
    ``dashboard``: the head also serves the dashboard and job server on its namespace
    address; ``hide``: node -> absolute paths that node's Ray does not see (an empty tmpfs
    covers each, in a private mount namespace)."""
    if not 2 <= nodes <= 32:
        raise ValueError(f"nodes={nodes} must be in [2, 32]")
    if rate != "none" and not _RATE.match(rate):
        raise ValueError(f"rate={rate!r} must look like 1gbit / 100mbit, or be 'none'")
    if delay and not _DELAY.match(delay):
        raise ValueError(f"delay={delay!r} must look like 0.2ms / 50us, or be empty")
    if cpus_per_node < 1:
        raise ValueError(f"cpus_per_node={cpus_per_node} must be >= 1")
    why = missing_requirements()
    if why:
        raise RuntimeError(f"cannot build the cluster: {why}")
    if ClusterState.load() is not None:
        raise RuntimeError(f"a cluster is already up ({STATE_FILE}); run `down` first")
    if direct_call_bytes < 0:
        raise ValueError(f"direct_call_bytes={direct_call_bytes} must be >= 0")
    hidden = [[node, path] for node, paths in sorted((hide or {}).items()) for path in paths]
    for node, path in hidden:
        if not 0 <= node < nodes:
            raise ValueError(f"hide: node {node} must be in [0, {nodes - 1}]")
        if not (os.path.isabs(path) and os.path.isdir(path)):
            raise ValueError(f"hide: {path!r} must be an absolute path to an existing folder")
    state = ClusterState(nodes=nodes, rate=rate, delay=delay, cpus_per_node=cpus_per_node,
                         direct_call_bytes=direct_call_bytes, hidden=hidden,
                         object_store_bytes=object_store_mb * 2**20,
                         dashboard_address=(f"http://{node_ip(0)}:{DASHBOARD_PORT}"
                                            if dashboard else ""))
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state.save()
    try:
        _build_network(state)
        token = Path(state.token_path)
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        _start_ray(state, state.object_store_bytes)
        _wait_for_nodes(state)
        if state.dashboard_address:
            _wait_for_dashboard(state)
    except BaseException:
        down(quiet=True)
        raise
    return state


def _build_network(state: ClusterState) -> None:
    _run("ip", "netns", "add", BRIDGE_NS)
    state.namespaces.append(BRIDGE_NS)
    state.save()
    _run("ip", "-n", BRIDGE_NS, "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "-n", BRIDGE_NS, "link", "set", BRIDGE, "up")
    for i in range(state.nodes):
        ns, host_end, node_end = node_namespace(i), f"rsh{i}", f"rsn{i}"
        _run("ip", "netns", "add", ns)
        state.namespaces.append(ns)
        state.save()
        _run("ip", "-n", BRIDGE_NS, "link", "add", host_end, "type", "veth",
             "peer", "name", node_end, "netns", ns)
        _run("ip", "-n", BRIDGE_NS, "link", "set", host_end, "master", BRIDGE)
        _run("ip", "-n", BRIDGE_NS, "link", "set", host_end, "up")
        _run("ip", "-n", ns, "addr", "add", f"{node_ip(i)}/24", "dev", node_end)
        _run("ip", "-n", ns, "link", "set", node_end, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        if state.rate != "none":
            sent = _shape(ns, node_end, state.rate, state.delay)
            received = _shape(BRIDGE_NS, host_end, state.rate, state.delay)
            state.delay_applied = sent and received
    if state.delay and state.rate != "none" and not state.delay_applied:
        print(f"[netns_cluster] warning: this kernel has no sch_netem; --delay {state.delay} "
              "is NOT applied (rate limits are)", file=sys.stderr)
    state.save()


def _kill_namespace_processes(namespaces: list[str], grace: float = 5.0,
                              first: int = signal.SIGTERM) -> dict[str, int]:
    """``first`` (SIGTERM), then after ``grace`` seconds SIGKILL, every process in
    ``namespaces`` (by process id). Returns how many processes each namespace had."""
    def pids(ns: str) -> list[int]:
        return [p for p in namespace_pids(ns) if p != os.getpid()]

    def signal_all(sig: int) -> None:
        for ns in namespaces:
            for pid in pids(ns):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    found = {ns: len(pids(ns)) for ns in namespaces}
    for sig in dict.fromkeys((first, signal.SIGKILL)):
        signal_all(sig)
        deadline = time.time() + grace
        while any(pids(ns) for ns in namespaces) and time.time() < deadline:
            if sig == signal.SIGKILL:  # a process forked after the listing is killed too
                signal_all(sig)
            time.sleep(0.2)
    return found


def down(quiet: bool = False) -> None:
    """Remove everything the state file says ``up`` made (safe to call twice)."""
    state = ClusterState.load()
    existing = set(_run("ip", "netns", "list", check=False).stdout.split())
    namespaces = [ns for ns in (state.namespaces if state else []) if ns in existing]
    killed = _kill_namespace_processes(namespaces)
    # The node namespaces first, the bridge namespace (the other veth ends) last.
    for ns in sorted(namespaces, key=lambda n: n == BRIDGE_NS):
        _run("ip", "netns", "del", ns, check=False)
        if not quiet:
            print(f"[netns_cluster] {ns}: stopped {killed[ns]} processes, namespace deleted")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)


def _worker_node(node: int) -> ClusterState:
    state = ClusterState.load()
    if state is None:
        raise RuntimeError("no cluster is up; run `up` first")
    if not 1 <= node < state.nodes:
        raise ValueError(f"node={node} must be a worker node, in [1, {state.nodes - 1}] (the "
                         "head, node 0, holds the cluster's state)")
    return state


def kill_node(node: int) -> int:
    """SIGKILL every process in worker node ``node``'s namespace (its raylet, object store,
    workers and actors), as a machine that loses power; the namespace and its link stay.
    Returns how many processes were killed."""
    _worker_node(node)
    return _kill_namespace_processes([node_namespace(node)], first=signal.SIGKILL)[
        node_namespace(node)]


def restart_node(node: int, timeout: float = 90.0) -> None:
    """Start worker node ``node``'s Ray again (a new Ray node on the same address, joining
    the head), after ``kill_node``; waits until the head counts a new alive node at that
    node's address."""
    state = _worker_node(node)
    if namespace_pids(node_namespace(node)):
        raise RuntimeError(f"{node_namespace(node)} still runs processes; kill-node first")
    before = set(_node_ids(state, node))
    process = subprocess.run(_ray_start_command(state, node, state.object_store_bytes),
                             capture_output=True, text=True, env=_ray_env(state),
                             cwd=STATE_DIR)
    if process.returncode != 0:
        raise RuntimeError(f"ray start on {node_namespace(node)} failed:\n"
                           f"{(process.stdout + process.stderr)[-3000:]}")
    deadline = time.time() + timeout
    while not set(_node_ids(state, node)) - before:
        if time.time() > deadline:
            raise RuntimeError(f"{node_namespace(node)}'s new Ray node not alive after "
                               f"{timeout:.0f} s")
        time.sleep(1.0)


def _node_ids(state: ClusterState, node: int) -> list[str]:
    """The ids of the alive Ray nodes at ``node``'s address (asked from node 0)."""
    probe = ("import sys, ray; ray.init(log_to_driver=False); print(' '.join(n['NodeID'] for n "
             "in ray.nodes() if n['Alive'] and n['NodeManagerAddress'] == sys.argv[1]))")
    result = subprocess.run(["ip", "netns", "exec", node_namespace(0), sys.executable, "-c",
                             probe, node_ip(node)], capture_output=True, text=True,
                            env={**_ray_env(state), **state.driver_env()})
    lines = result.stdout.strip().splitlines()
    return lines[-1].split() if lines else []


def status() -> int:
    state = ClusterState.load()
    if state is None:
        print("no cluster is up")
        return 1
    existing = set(_run("ip", "netns", "list", check=False).stdout.split())
    print(f"nodes={state.nodes} rate={state.rate} delay={state.delay or 'none'} "
          f"(applied: {state.delay_applied}) address={state.address}"
          + (f" jobs={state.dashboard_address}" if state.dashboard_address else ""))
    for node, path in state.hidden:
        print(f"  {node_namespace(node)} does not see {path}")
    for i in range(state.nodes):
        ns = node_namespace(i)
        if ns not in existing:
            print(f"  {ns}: MISSING")
            continue
        pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
        qdisc = _ns(ns, "tc", "qdisc", "show", "dev", f"rsn{i}", check=False).stdout.strip()
        print(f"  {ns}: {node_ip(i)}  {len(pids)} processes  qdisc: {qdisc or '-'}")
    return 0


def namespace_pids(ns: str) -> list[int]:
    """Process ids of the processes inside namespace ``ns``."""
    out = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have spent so far (``/proc/<pid>/stat``;
    a process that has exited counts 0): the cluster's own work, whatever else the machine runs."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def tbf_stats(ns: str, dev: str) -> dict | None:
    """The token bucket on ``dev`` in namespace ``ns`` as ``tc -s -j`` shows it (its rate,
    bytes sent and drops), or None where it has none."""
    shown = _ns(ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev, check=False).stdout
    for qdisc in json.loads(shown or "[]"):
        if qdisc.get("kind") == "tbf":
            return qdisc
    return None


def exec_in(node: int, command: list[str], jobs: bool = False) -> int:
    """Run ``command`` inside node ``node``'s namespace with the driver environment (``jobs``:
    the environment of a ``ray job`` client, ``ClusterState.job_env``)."""
    state = ClusterState.load()
    if state is None:
        raise RuntimeError("no cluster is up; run `up` first")
    if not 0 <= node < state.nodes:
        raise ValueError(f"node={node} must be in [0, {state.nodes - 1}]")
    if jobs and not state.dashboard_address:
        raise RuntimeError("this cluster has no job server; bring it up with --dashboard")
    env = {**os.environ, **(state.job_env() if jobs else state.driver_env())}
    return subprocess.run(["ip", "netns", "exec", node_namespace(node), *command],
                          env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="create namespaces, links and Ray nodes")
    p_up.add_argument("--nodes", type=int, default=4)
    p_up.add_argument("--rate", default="1gbit", help="per-link rate, e.g. 1gbit, or none")
    p_up.add_argument("--delay", default="", help="per-link netem delay, e.g. 0.2ms")
    p_up.add_argument("--cpus-per-node", type=int, default=1)
    p_up.add_argument("--object-store-mb", type=int, default=1024)
    p_up.add_argument("--direct-call-bytes", type=int, default=DIRECT_CALL_BYTES,
                      help="Ray's max_direct_call_object_size on every node (0: Ray's "
                           "default); the direct transport sends messages up to it inline")
    p_up.add_argument("--dashboard", action="store_true",
                      help="the head serves the dashboard and job server (ray job submit) on "
                           f"http://{node_ip(0)}:{DASHBOARD_PORT}; needs ray[default]")
    p_up.add_argument("--hide", action="append", default=[], metavar="NODE:PATH",
                      help="node NODE's Ray does not see the folder PATH (an empty tmpfs "
                           "covers it there); repeatable")
    sub.add_parser("down", help="stop Ray in the namespaces and delete them")
    sub.add_parser("status", help="show what is up")
    p_kill = sub.add_parser("kill-node", help="SIGKILL every process of a worker node")
    p_kill.add_argument("node", type=int)
    p_restart = sub.add_parser("restart-node", help="start a killed worker node's Ray again")
    p_restart.add_argument("node", type=int)
    p_exec = sub.add_parser("exec", help="run a command (a driver) inside a node's namespace")
    p_exec.add_argument("--node", type=int, default=0)
    p_exec.add_argument("--jobs", action="store_true",
                        help="the environment of a `ray job` client (RAY_ADDRESS = the job "
                             "server) instead of a driver's")
    p_exec.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "up":
        hide: dict[int, list[str]] = {}
        for spec in args.hide:
            node, sep, path = spec.partition(":")
            if not (sep and node.isdigit() and path):
                parser.error(f"--hide {spec!r}: use NODE:PATH, e.g. 3:/data/copy")
            hide.setdefault(int(node), []).append(path)
        try:
            state = up(args.nodes, args.rate, args.delay, args.cpus_per_node,
                       args.object_store_mb, args.direct_call_bytes, args.dashboard, hide)
        except (ValueError, RuntimeError) as err:  # one line, what to change
            raise SystemExit(f"netns_cluster up: {err}") from None
        env = " ".join(f"{k}={v}" for k, v in state.driver_env().items())
        print(f"RAY_ADDRESS={state.address}\n"
              f"run a driver inside node 0's namespace:\n"
              f"  python {sys.argv[0]} exec -- python your_driver.py\n"
              f"or by hand:\n  ip netns exec rs0 env {env} python your_driver.py")
        if state.dashboard_address:
            print(f"submit jobs to {state.dashboard_address} from inside a namespace:\n"
                  f"  python {sys.argv[0]} exec --jobs -- ray job submit --working-dir . -- "
                  "python scripts/run_signsgd.py ...")
        return 0
    if args.command == "down":
        down()
        return 0
    if args.command == "status":
        return status()
    if args.command in ("kill-node", "restart-node"):
        try:
            if args.command == "kill-node":
                print(f"[netns_cluster] {node_namespace(args.node)}: killed "
                      f"{kill_node(args.node)} processes")
            else:
                restart_node(args.node)
                print(f"[netns_cluster] {node_namespace(args.node)}: Ray restarted")
        except (ValueError, RuntimeError) as err:
            raise SystemExit(f"netns_cluster {args.command}: {err}") from None
        return 0
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("exec needs a command, e.g. exec -- python driver.py")
    return exec_in(args.node, command, jobs=args.jobs)


if __name__ == "__main__":
    sys.exit(main())
