"""raysign.costmodel against hand-computed closed forms on small, round numbers.

The machine: 1 MB/s links, 1 ms latency, 0.1 ms per Ray call, pack 4 MB/s and unpack 8 MB/s
(fp32 bytes), vote 1 MB/s (packed bytes), fp32 sum 32 MB/s. With d = 8000 parameters a packed
message is 1000 bytes and an fp32 one 32000 bytes; pack takes 8 ms, unpack 4 ms.
"""

import math

import pytest

from raysign.costmodel import (
    LowRankLayout,
    Machine,
    first_crossing,
    hook_allgather,
    hook_sharded,
    powersgd,
    ps_fp32,
    ring_allreduce,
    step_time,
    vote_s1,
    vote_sm,
)

MACHINE = Machine(bandwidth=1e6, latency=1e-3, message_overhead=1e-4, pack_bytes_per_s=4e6,
                  unpack_bytes_per_s=8e6, vote_bytes_per_s=1e6, sum_bytes_per_s=32e6)
D, M = 8000, 4


def test_vote_with_one_actor_is_two_passes_through_node_zeros_link():
    # pack 8 + gather (1 + 3 x 1000 B at 1 MB/s = 3) + vote 4 x 1000 B = 4 + broadcast 4
    # + unpack 4 + 4 calls x 0.1 = 0.4 ms
    assert vote_s1(M, D, MACHINE).critical == pytest.approx(24.4e-3)


def test_vote_with_m_actors_moves_one_mth_of_the_bytes_per_shard():
    # pack 8 + 2 x (1 + 3 x 250 B = 0.75) + vote 4 x 250 B = 1 + unpack 4 + 0.4 ms
    assert vote_sm(M, D, MACHINE).critical == pytest.approx(16.9e-3)


def test_parameter_server_moves_fp32_through_node_zero():
    # 2 x (1 + 3 x 32000 B = 96) + sum 4 x 32000 B at 32 MB/s = 4 + 0.4 ms
    assert ps_fp32(M, D, MACHINE).critical == pytest.approx(198.4e-3)


def test_ring_allreduce_is_two_m_minus_one_steps_of_one_mth():
    # 6 steps x (1 + 8000 B = 8 ms) + reduce 3/4 x 32000 B at 32 MB/s = 0.75 ms
    assert ring_allreduce(M, D, MACHINE).critical == pytest.approx(54.75e-3)
    assert ring_allreduce(1, D, MACHINE).critical == 0.0


def test_ddp_hook_topologies():
    # allgather: pack 8 + 3 x (1 + 1) + vote 4 + unpack 4 = 22 ms
    assert hook_allgather(M, D, MACHINE).critical == pytest.approx(22e-3)
    # sharded: pack 8 + 6 x (1 + 0.25) + vote 1 + unpack 4 = 20.5 ms
    assert hook_sharded(M, D, MACHINE).critical == pytest.approx(20.5e-3)


def test_shared_cores_bound_the_round_by_total_cpu_work():
    # CPU: 4 workers x (8 + 4) + vote 4 + 4 calls x 10 ms of CPU = 92 ms on 2 cores = 46,
    # above the 24.4 ms critical path (36.4 with the workers' steps crowded on 2 cores)
    exchange = vote_s1(M, D, MACHINE.with_(call_cpu=1e-2))
    assert exchange.cpu == pytest.approx(92e-3)
    assert exchange.seconds(2) == pytest.approx(46e-3)
    assert exchange.seconds(math.inf) == pytest.approx(24.4e-3)


def test_workers_steps_crowd_when_there_are_fewer_cores_than_workers():
    # vote S=1, M = 4 workers on 1 core: pack 8 + unpack 4 run on all four at once, 4x as
    # long: 24.4 + 3 x 12 = 60.4 ms of critical path, above the 52 ms CPU sum on one core
    exchange = vote_s1(M, D, MACHINE)
    assert exchange.seconds(1) == pytest.approx(60.4e-3)
    # on 2 cores twice as long: 24.4 + 12 = 36.4 ms; on 4 or more no crowding
    assert exchange.seconds(2) == pytest.approx(36.4e-3)
    assert exchange.seconds(4) == pytest.approx(24.4e-3)
    assert exchange.bound(1) == "critical path"  # 60.4 crowded > 52 of CPU on one core
    # 3 cores: 92 ms of CPU / 3 = 30.7 > 24.4 + 12 x (4/3 - 1) = 28.4 crowded
    assert vote_s1(M, D, MACHINE.with_(call_cpu=1e-2)).bound(3) == "cpu"
    # vote S=M: the M actors' votes (1 ms each) crowd too, twice as long on 2 cores:
    # 16.9 + (8 + 1 + 4) = 29.9 ms (above the CPU sum, 4 x 13 = 52 ms over 2 cores = 26)
    assert vote_sm(M, D, MACHINE).seconds(2) == pytest.approx(29.9e-3)


def test_ray_paths_charge_the_worker_steps_the_checks_and_rays_cpu():
    """The trainer's worker steps replace the bare kernels; the vote actor checks every
    message; Ray's CPU per call and per message byte enters the CPU sum only."""
    full = MACHINE.with_(encode_bytes_per_s=2e6, apply_bytes_per_s=16e6,
                         encode_fp32_bytes_per_s=8e6, apply_fp32_bytes_per_s=32e6,
                         check_bytes_per_s=2e6, call_cpu=1e-3, cpu_bytes_per_s=1e6)
    # vote S=1: compress 32000 B at 2 MB/s = 16 + gather 4 + checks 4 x 1000 B at 2 MB/s = 2
    # + vote 4 + broadcast 4 + apply 32000 B at 16 MB/s = 2 + 4 calls x 0.1 = 32.4 ms
    s1 = vote_s1(M, D, full)
    assert s1.critical == pytest.approx(32.4e-3)
    # CPU: 4 x (16 + 2) + checks 2 + vote 4 + 4 calls x 1 ms + 8 messages x 1000 B at 1 MB/s
    assert s1.cpu == pytest.approx((72 + 2 + 4 + 4 + 8) * 1e-3)
    # vote S=M: 16 + 2 x (1 + 0.75) + check 1000 B at 2 MB/s = 0.5 + vote 1 + 2 + 0.4 = 23.4 ms
    sm = vote_sm(M, D, full)
    assert sm.critical == pytest.approx(23.4e-3)
    # CPU: 4 x (16 + 2) + 4 x (0.5 + 1) + 16 calls x 1 ms + 8000 B at 1 MB/s
    assert sm.cpu == pytest.approx((72 + 6 + 16 + 8) * 1e-3)
    # fp32 PS: compress 32000 B at 8 MB/s = 4 + 2 x (1 + 96) + checks 4 x 32000 B at 2 MB/s
    # = 64 + sum 4 + apply 1 + 0.4 = 267.4 ms
    ps = ps_fp32(M, D, full)
    assert ps.critical == pytest.approx(267.4e-3)
    # CPU: 4 x (4 + 1) + 64 + 4 + 4 calls x 1 ms + 8 x 32000 B at 1 MB/s = 256
    assert ps.cpu == pytest.approx((20 + 64 + 4 + 4 + 256) * 1e-3)
    # The collectives do not run through Ray actors: unchanged.
    assert ring_allreduce(M, D, full) == ring_allreduce(M, D, MACHINE)
    assert hook_sharded(M, D, full) == hook_sharded(M, D, MACHINE)


def test_host_rate_below_the_link_rate_limits_ray_paths_only():
    slow_host = MACHINE.with_(host_bytes_per_s=0.5e6)
    # gather and broadcast at 0.5 MB/s: 2 x (1 + 6) instead of 2 x (1 + 3)
    assert vote_s1(M, D, slow_host).critical == pytest.approx(30.4e-3)
    assert ring_allreduce(M, D, slow_host).critical == pytest.approx(54.75e-3)


def test_busiest_link_bytes_match_an_enumeration_of_every_message():
    """The byte terms of vote S=1 and S=M against counting each message (sender, receiver,
    bytes) over every node's outbound and inbound direction, phase by phase."""
    for m in (2, 3, 5, 8):
        b = D / 8
        for shards, fn in ((1, vote_s1), (m, vote_sm)):
            busiest = 0.0
            for phase in ("gather", "broadcast"):
                out, inbound = [0.0] * m, [0.0] * m
                for worker in range(m):
                    for shard in range(shards):
                        src, dst = (worker, shard) if phase == "gather" else (shard, worker)
                        if src != dst:
                            out[src] += b / shards
                            inbound[dst] += b / shards
                busiest += max(out + inbound)
            link_only = Machine(bandwidth=1e6, vote_bytes_per_s=math.inf)
            assert fn(m, D, link_only).critical == pytest.approx(busiest / 1e6)


def test_powersgd_sends_rank_r_factors_and_small_matrices_whole():
    layout = LowRankLayout.from_shapes([(100, 5, 10), (2, 2), (10,)])
    assert layout.matrices == ((100, 50), (2, 2)) and layout.vector_values == 10
    assert layout.d == 5000 + 4 + 10
    # rank 2: P = 2 x 100 + the 2x2 matrix (2 x 4 >= 4) + 10 vector values; Q = 2 x 50
    assert layout.sent_values(2) == (214, 100)
    machine = MACHINE.with_(flops_per_s=1e9)
    expected = (ring_allreduce(M, 214, machine).critical + ring_allreduce(M, 100, machine).critical
                + (6 * 2 * 5000 + 2 * 4 * 100) / 1e9)
    assert powersgd(M, layout, 2, machine).critical == pytest.approx(expected)


def test_step_time_with_and_without_overlap():
    exchange = vote_s1(M, D, MACHINE)
    plain = step_time(exchange, 0.1, MACHINE, overlap=False)
    hidden = step_time(exchange, 0.1, MACHINE, overlap=True)
    assert plain.step == pytest.approx(0.1244) and hidden.step == pytest.approx(0.1)
    assert plain.efficiency == pytest.approx(0.1 / 0.1244) and hidden.efficiency == 1.0


def test_first_crossing_and_machine_checks():
    assert first_crossing([2, 4, 8], lambda m: m * m, lambda m: 10 * m) is None
    assert first_crossing([2, 4, 16], lambda m: m * m, lambda m: 10 * m) == 16
    with pytest.raises(ValueError, match="bandwidth"):
        Machine(bandwidth=0)
    restored = Machine.from_dict(MACHINE.to_dict())
    assert restored == MACHINE


def test_extrapolation_layouts_have_the_published_parameter_counts():
    """GPT-2 small as nanoGPT builds it has 124,439,808 parameters (Hugging Face's gpt2
    checkpoint's count, tied output layer); raysign's ImageNet ResNet-50 is torchvision's
    25,557,032 less 7,680 for its 3x3 instead of 7x7 stem (64 x 3 x (49 - 9) weights)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from bench_scaling import gpt2_small_shapes, resnet50_shapes

    assert LowRankLayout.from_shapes(gpt2_small_shapes()).d == 124_439_808
    assert LowRankLayout.from_shapes(resnet50_shapes()).d == 25_557_032 - 64 * 3 * (49 - 9)
