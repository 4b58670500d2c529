"""Measure the parameters of ``raysign.costmodel.Machine`` on this machine and write them as JSON.

Nothing is typed in:

- kernel throughputs: ``pack_signs``, ``unpack_signs`` and ``majority_vote`` (M = 7) timed with
  ``scripts/bench_signsgd_kernels.py``'s ``best_time``, the fp32 sum of M = 7 gradients and an
  fp32 matrix product (PowerSGD's projections), one thread, as the workers run;
- per-call Ray overhead and the rate at which Ray moves message bytes: an actor ping-pong on a
  local Ray (2 CPUs) with an empty message and with a ``--payload-mb`` message, with the
  direct transport's inline-argument limit (``netns_cluster.DIRECT_CALL_BYTES``);
- network latency: half the round trip of a 1-byte TCP ping-pong over loopback (the namespace
  cluster's veths add no delay: this kernel has no ``sch_netem``);
- link rates: read from ``tc`` on a running namespace cluster (``tc -j qdisc show`` in rs0)
  where one is up, else the bytes per second ``netns_cluster.py`` gives ``tc`` for each rate.

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


def ray_ping_pong(payload_bytes: int, calls: int) -> dict[str, float]:
    """Median seconds of an actor call with an empty and with a ``payload_bytes`` argument."""
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

        def median_call(message: np.ndarray, n: int) -> float:
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                ray.get(echo.ping.remote(message))
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        t_small = median_call(small, calls)
        t_big = median_call(big, max(5, calls // 20))
        ray.kill(echo)
    finally:
        ray.shutdown()
    return {"message_overhead": t_small,
            "host_bytes_per_s": payload_bytes / max(t_big - t_small, 1e-9),
            "ping_pong_small_s": t_small, "ping_pong_payload_s": t_big,
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


def link_rates(rates: list[str]) -> dict[str, dict[str, object]]:
    """Bytes per second per direction for each rate: from the running cluster's tc if its rate
    is that one, else what netns_cluster.py hands tc."""
    live = None
    state = netns_cluster.ClusterState.load() if os.geteuid() == 0 else None
    if state is not None and state.rate != "none":
        shown = subprocess.run(["ip", "netns", "exec", netns_cluster.node_namespace(0), "tc",
                                "-j", "qdisc", "show", "dev", "rsn0"],
                               capture_output=True, text=True, check=False)
        for qdisc in json.loads(shown.stdout or "[]"):
            if qdisc.get("kind") == "tbf":
                live = (state.rate, float(qdisc["options"]["rate"]))
    out = {}
    for rate in rates:
        if live and live[0] == rate:
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
    parser.add_argument("--out", default="docs/results/scaling/params.json")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    kernels = kernel_rates(args.d, args.repeats)
    print(f"kernels (d={args.d}, load {load_start[0]:.1f}):")
    for name, value in kernels.items():
        print(f"  {name:20s} {value / 1e9:8.2f} G/s")
    ray_figures = ray_ping_pong(int(args.payload_mb * 2**20), args.calls)
    print(f"Ray call {1e6 * ray_figures['message_overhead']:.0f} us, Ray bytes "
          f"{ray_figures['host_bytes_per_s'] / 1e9:.2f} GB/s (load {os.getloadavg()[0]:.1f})")
    latency = tcp_latency()
    print(f"TCP one-way latency (loopback) {1e6 * latency:.1f} us")
    links = link_rates(args.rates.split(","))
    for rate, link in links.items():
        print(f"  link {rate}: {link['bytes_per_s'] / 1e6:.1f} MB/s ({link['from']})")
    params = {"kernels": kernels, "ray": ray_figures, "latency": latency, "links": links,
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
