"""Measure the parameters of ``raysign.costmodel.Machine`` on this machine and write them as JSON.

Nothing is typed in:

- kernel throughputs: ``pack_signs``, ``unpack_signs`` and ``majority_vote`` (M = 7) timed with
  ``scripts/bench_signsgd_kernels.py``'s ``best_time``, the fp32 sum of M = 7 gradients and an
  fp32 matrix product (PowerSGD's projections), one thread, as the workers run;
- the Ray paths' worker and vote-actor steps, the trainer's own code on one thread: a worker's
  compress (``exchange.all_finite`` of the gradient, then ``exchange.encode_shard`` with
  Signum's momentum and the MAC) and apply (``exchange.apply_vote``), for signs and for fp32,
  and a vote actor's check of one arriving message (``VoteActor.read``: header and MAC);
- per-call Ray overhead and the rate at which Ray moves message bytes: an actor ping-pong on a
  local Ray (2 CPUs) with an empty message and with a ``--payload-mb`` message, with the
  direct transport's inline-argument limit (``netns_cluster.DIRECT_CALL_BYTES``); and the
  user + system CPU seconds that the driver and its local Ray's processes spend per call and per
  message byte there (``/proc/<pid>/stat`` over the driver's process tree);
- network latency: half the round trip of a 1-byte TCP ping-pong over loopback (the namespace
  cluster's veths add no delay: this kernel has no ``sch_netem``);
- link rates: what one TCP stream carries between two namespaces across a bridge, both links
  shaped as ``netns_cluster.py`` shapes a node's (``tbf`` at the rate, both ends), for the rates
  the cluster is run at (``--measure-rates``; as root); the rates ``tc`` is given for the
  others, and where the stream cannot be measured.

    python scripts/costmodel_params.py --out docs/results/scaling/params.json

Prints every figure with the load average (the machine is shared; figures are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import netns_cluster  # noqa: E402
from bench_signsgd_kernels import best_time  # noqa: E402

from raysign.signs import majority_vote, pack_signs, packed_nbytes, unpack_signs  # noqa: E402

VOTERS = 7


def kernel_rates(d: int, repeats: int) -> dict[str, float]:
    """Bytes per second of each kernel, on the side ``raysign.costmodel.Machine`` names."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(d, dtype=np.float32))
    packed_out = torch.empty(packed_nbytes(d), dtype=torch.uint8)
    t_pack = best_time(lambda: pack_signs(x, out=packed_out), repeats)
    values = torch.empty(d)
    t_unpack = best_time(lambda: unpack_signs(packed_out, d, out=values), repeats)
    inputs = [torch.from_numpy(rng.integers(0, 256, packed_nbytes(d), dtype=np.uint8))
              for _ in range(VOTERS)]
    t_vote = best_time(lambda: majority_vote(inputs), repeats)
    grads = [torch.from_numpy(rng.standard_normal(d, dtype=np.float32)) for _ in range(VOTERS)]
    total = torch.empty(d)

    def fp32_sum() -> None:
        total.copy_(grads[0])
        for g in grads[1:]:
            total.add_(g)

    t_sum = best_time(fp32_sum, repeats)
    a, b = torch.randn(2048, 1024), torch.randn(1024, 4)
    t_mm = best_time(lambda: a @ b, repeats * 4)
    return {"pack_bytes_per_s": 4 * d / t_pack, "unpack_bytes_per_s": 4 * d / t_unpack,
            "vote_bytes_per_s": VOTERS * packed_nbytes(d) / t_vote,
            "sum_bytes_per_s": VOTERS * 4 * d / t_sum,
            "flops_per_s": 2 * 2048 * 1024 * 4 / t_mm}


def worker_rates(d: int, repeats: int) -> dict[str, float]:
    """Bytes per second of the Ray paths' worker and vote-actor steps (one thread): compress
    and apply per fp32 byte of the worker's [d], the message check per message byte."""
    import secrets

    from raysign import wire
    from raysign.actors.vote import VoteActor
    from raysign.signsgd.exchange import all_finite, apply_vote, encode_shard

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    grad = torch.from_numpy(rng.standard_normal(d, dtype=np.float32))
    momentum, params = torch.zeros(d), torch.zeros(d)
    key = secrets.token_bytes(32)
    out: dict[str, float] = {}
    for name, kind in (("", wire.KIND_SIGNS), ("_fp32", wire.KIND_FP32)):
        def compress(kind: int = kind) -> np.ndarray:
            all_finite(grad)
            return encode_shard(kind, grad, sender=0, step=1, shard=0, key=key,
                                momentum=momentum, beta=0.9)

        t_encode = best_time(compress, repeats)
        message = compress()
        actor = VoteActor(0, 0, d, kind, keys=[key])
        t_check = best_time(lambda actor=actor, message=message: actor.read(message, 1, 0),
                            repeats)
        voted, _ = actor.vote(1, message, authenticated=True)
        scratch = torch.empty(d)
        t_apply = best_time(lambda kind=kind, voted=voted, scratch=scratch: apply_vote(
            voted, params, kind=kind, step=1, shard=0, lr=1e-3, weight_decay=1e-4,
            scratch=scratch), repeats)
        out[f"encode{name}_bytes_per_s"] = 4 * d / t_encode
        out[f"apply{name}_bytes_per_s"] = 4 * d / t_apply
        if not name:
            out["check_bytes_per_s"] = message.nbytes / t_check
        else:
            out["check_bytes_per_s"] = min(out["check_bytes_per_s"], message.nbytes / t_check)
    return out


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and every process below it (a local Ray's
    GCS, raylet and workers all descend from the driver that started it)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return netns_cluster.cpu_seconds(sorted(tree))


def ray_ping_pong(payload_bytes: int, calls: int) -> dict[str, float]:
    """Median seconds of an actor call with an empty and with a ``payload_bytes`` argument, and
    the CPU seconds per call of each kind that the driver and the local Ray it starts spend
    (every process of the tree: the other work on the machine is not counted)."""
    os.environ.setdefault("RAY_max_direct_call_object_size", str(netns_cluster.DIRECT_CALL_BYTES))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_cpus=0)
        class Echo:
            def ping(self, message: np.ndarray) -> int:
                return int(message.nbytes)

        echo = Echo.remote()
        small = np.zeros(8, dtype=np.uint8)
        big = np.zeros(payload_bytes, dtype=np.uint8)
        ray.get(echo.ping.remote(small))

        def median_call(message: np.ndarray, n: int) -> tuple[float, float]:
            times, cpu0 = [], tree_cpu_seconds(os.getpid())
            for _ in range(n):
                t0 = time.perf_counter()
                ray.get(echo.ping.remote(message))
                times.append(time.perf_counter() - t0)
            return float(np.median(times)), (tree_cpu_seconds(os.getpid()) - cpu0) / n

        t_small, cpu_small = median_call(small, calls)
        t_big, cpu_big = median_call(big, max(5, calls // 20))
        ray.kill(echo)
    finally:
        ray.shutdown()
    if t_big <= t_small or cpu_big <= cpu_small:
        raise RuntimeError(f"the {payload_bytes}-byte call ({t_big:.6f} s, {cpu_big:.6f} CPU s) "
                           f"is not longer than the empty one ({t_small:.6f} s, "
                           f"{cpu_small:.6f} CPU s): more --calls or a larger --payload-mb")
    return {"message_overhead": t_small,
            "host_bytes_per_s": payload_bytes / (t_big - t_small),
            "call_cpu": cpu_small,
            "cpu_bytes_per_s": payload_bytes / (cpu_big - cpu_small),
            "ping_pong_small_s": t_small, "ping_pong_payload_s": t_big,
            "cpu_small_s": cpu_small, "cpu_payload_s": cpu_big,
            "payload_bytes": payload_bytes}


def tcp_latency(rounds: int = 2000) -> float:
    """Half the median round trip of a 1-byte TCP ping-pong over loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(1):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    with socket.create_connection(server.getsockname()) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            client.sendall(b"x")
            client.recv(1)
            times.append(time.perf_counter() - t0)
    server.close()
    return float(np.median(times)) / 2


CALIBRATION_NS = ("rscalbr", "rscal0", "rscal1")  # never the cluster's rs*: both may be up


def tcp_goodput(rate: str, seconds: float = 4.0) -> float:
    """Bytes per second one TCP stream carries from one namespace to another across a bridge,
    both nodes' links shaped as ``netns_cluster.py`` shapes a cluster node's (``_shape``: a
    token bucket at ``rate`` on each veth end, so the bytes pass two buckets, as between two
    cluster nodes): what a link of ``rate`` gives a transfer, headers and pacing included."""
    bridge_ns, nodes = CALIBRATION_NS[0], CALIBRATION_NS[1:]
    ips = ("10.79.0.1", "10.79.0.2")
    nbytes = int(netns_cluster._rate_bytes(rate) * seconds)
    receiver = None
    try:
        netns_cluster._run("ip", "netns", "add", bridge_ns)
        netns_cluster._run("ip", "-n", bridge_ns, "link", "add", "rscb", "type", "bridge")
        netns_cluster._run("ip", "-n", bridge_ns, "link", "set", "rscb", "up")
        for i, ns in enumerate(nodes):
            netns_cluster._run("ip", "netns", "add", ns)
            netns_cluster._run("ip", "-n", bridge_ns, "link", "add", f"rsch{i}", "type", "veth",
                               "peer", "name", f"rscn{i}", "netns", ns)
            netns_cluster._run("ip", "-n", bridge_ns, "link", "set", f"rsch{i}", "master", "rscb")
            netns_cluster._run("ip", "-n", bridge_ns, "link", "set", f"rsch{i}", "up")
            netns_cluster._run("ip", "-n", ns, "addr", "add", f"{ips[i]}/24", "dev", f"rscn{i}")
            netns_cluster._run("ip", "-n", ns, "link", "set", f"rscn{i}", "up")
            netns_cluster._shape(ns, f"rscn{i}", rate, "")
            netns_cluster._shape(bridge_ns, f"rsch{i}", rate, "")
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", nodes[1], sys.executable, "-c",
             "import socket,time\n"
             f"s=socket.create_server(('{ips[1]}',5999));c,_=s.accept();n=0;t0=None\n"
             "b=bytearray(1<<20)\n"
             "while (k:=c.recv_into(b)):\n"
             "    t0=t0 or time.perf_counter();n+=k\n"
             "print(n/(time.perf_counter()-t0))"], stdout=subprocess.PIPE, text=True)
        sender = ("import socket,time\n"
                  "for _ in range(100):\n"
                  "    try:\n"
                  f"        c=socket.create_connection(('{ips[1]}',5999));break\n"
                  "    except OSError: time.sleep(0.1)\n"
                  f"chunk=bytes(1<<20);left={nbytes}\n"
                  "while left>0:\n"
                  "    c.sendall(chunk[:min(left,len(chunk))]);left-=len(chunk)\n"
                  "c.close()")
        netns_cluster._run("ip", "netns", "exec", nodes[0], sys.executable, "-c", sender)
        out, _ = receiver.communicate(timeout=120)
        return float(out.strip())
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        for ns in CALIBRATION_NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def link_rates(rates: list[str], measured: list[str]) -> dict[str, dict[str, object]]:
    """Bytes per second per direction for each rate: one TCP stream's goodput between two
    shaped namespaces across a bridge for the rates in ``measured`` (as root), else the running
    cluster's tc rate if it is that one, else what netns_cluster.py hands tc."""
    live = None
    state = netns_cluster.ClusterState.load() if os.geteuid() == 0 else None
    if state is not None and state.rate != "none":
        tbf = netns_cluster.tbf_stats(netns_cluster.node_namespace(0), "rsn0")
        if tbf is not None:
            live = (state.rate, float(tbf["options"]["rate"]))
    out: dict[str, dict[str, object]] = {}
    for rate in rates:
        if rate in measured and netns_cluster.missing_requirements() is None:
            goodput = tcp_goodput(rate)
            out[rate] = {"bytes_per_s": goodput, "tc_bytes_per_s": netns_cluster._rate_bytes(rate),
                         "from": "one TCP stream between two namespaces across a bridge, links "
                                 "shaped as a cluster node's: "
                                 f"{goodput / netns_cluster._rate_bytes(rate):.3f} of the tbf rate"}
        elif live and live[0] == rate:
            out[rate] = {"bytes_per_s": live[1], "from": "tc -j qdisc show (live cluster)"}
        else:
            out[rate] = {"bytes_per_s": netns_cluster._rate_bytes(rate),
                         "from": "netns_cluster.py's tbf rate (cluster not up)"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=11_172_042,
                        help="kernel size (parameters; default ResNet-18's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="ping-pong calls")
    parser.add_argument("--payload-mb", type=float, default=4.0)
    parser.add_argument("--rates", default="100mbit,1gbit,10gbit,25gbit,100gbit")
    parser.add_argument("--measure-rates", default="100mbit,1gbit",
                        help="rates whose TCP goodput is measured between two shaped namespaces "
                             "(as root; the cluster's rates); the others take tc's rate")
    parser.add_argument("--out", default="docs/results/scaling/params.json")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    kernels = kernel_rates(args.d, args.repeats)
    print(f"kernels (d={args.d}, load {load_start[0]:.1f}):")
    for name, value in kernels.items():
        print(f"  {name:20s} {value / 1e9:8.2f} G/s")
    worker = worker_rates(args.d, args.repeats)
    print(f"worker and vote-actor steps (load {os.getloadavg()[0]:.1f}):")
    for name, value in worker.items():
        print(f"  {name:24s} {value / 1e9:8.2f} G/s")
    ray_figures = ray_ping_pong(int(args.payload_mb * 2**20), args.calls)
    print(f"Ray call {1e6 * ray_figures['message_overhead']:.0f} us "
          f"({1e6 * ray_figures['call_cpu']:.0f} us of CPU), Ray bytes "
          f"{ray_figures['host_bytes_per_s'] / 1e9:.2f} GB/s "
          f"({ray_figures['cpu_bytes_per_s'] / 1e9:.2f} GB per CPU second) "
          f"(load {os.getloadavg()[0]:.1f})")
    latency = tcp_latency()
    print(f"TCP one-way latency (loopback) {1e6 * latency:.1f} us")
    links = link_rates(args.rates.split(","), args.measure_rates.split(","))
    for rate, link in links.items():
        print(f"  link {rate}: {link['bytes_per_s'] / 1e6:.1f} MB/s ({link['from']})")
    params = {"kernels": kernels, "worker": worker, "ray": ray_figures, "latency": latency,
              "links": links,
              "cores": os.cpu_count(), "kernel_d": args.d,
              "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": "python scripts/costmodel_params.py " + " ".join(argv or sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(params, indent=2))
    print(f"written {args.out}; load average at end {params['loadavg_end'][0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
