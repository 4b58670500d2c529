"""The worker side of a round's messages (``raysign.signsgd.exchange``), shared by the trainer's
workers and the communication benchmark, against numpy and hashlib references. No Ray."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch

from raysign import wire
from raysign.actors.comm_bench import CommWorker
from raysign.signsgd.config import SignSGDConfig
from raysign.signsgd.exchange import all_finite, apply_vote, decode_vote, encode_shard
from raysign.signsgd.replica import Replica

KEY = bytes(range(32))


def _reference_mac(message: np.ndarray, key: bytes) -> bytes:
    """Keyed BLAKE2b (8 bytes) of the header less its MAC field, then the body (wire v2)."""
    raw = message.tobytes()
    return hashlib.blake2b(raw[:24] + raw[32:], key=key, digest_size=8).digest()


def _reference_signs(values: np.ndarray) -> bytes:
    """One bit per value (set iff negative), little bit order, padded to whole 64-bit words."""
    bits = np.packbits(values < 0, bitorder="little").tobytes()
    return bits + b"\0" * (8 * -(-values.size // 64) - len(bits))


@pytest.mark.parametrize("n", [1, 63, 64, 1000, 4097])
def test_encode_shard_packs_signs_into_the_body_and_signs_it(n):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n))
    values[0] = 0.0  # zero is sent as +1 (bit clear)
    msg = encode_shard(wire.KIND_SIGNS, values, sender=3, step=17, shard=2, flags=0, key=KEY)
    assert msg.dtype == np.uint8 and msg.ndim == 1
    assert msg[:4].tobytes() == b"RSGN"
    assert struct.unpack_from("<IIII", msg, 8) == (3, 17, 2, n)
    assert msg[32:].tobytes() == _reference_signs(values.numpy())
    assert msg[24:32].tobytes() == _reference_mac(msg, KEY)


def test_encode_shard_copies_fp32_values_and_leaves_unsigned_messages_at_zero_mac():
    values = torch.randn(257, generator=torch.Generator().manual_seed(1))
    msg = encode_shard(wire.KIND_FP32, values, sender=0, step=1, shard=0, flags=wire.FLAG_ABSTAIN)
    np.testing.assert_array_equal(msg[32:].view(np.float32), values.numpy())
    assert struct.unpack_from("<H", msg, 6)[0] == wire.FLAG_ABSTAIN
    assert msg[24:32].tobytes() == bytes(8)


def _voted(kind: int, body: bytes, n: int, step: int, shard: int, flags: int = 0) -> np.ndarray:
    """A vote actor's message built by hand from the header layout (sender 0xFFFFFFFF)."""
    header = struct.pack("<4sBBHIIII", b"RSGN", 2, kind, flags, 0xFFFFFFFF, step, shard, n)
    msg = np.frombuffer(header + bytes(8) + body, dtype=np.uint8)
    msg.flags.writeable = False  # as it comes out of the object store
    return msg


def test_decode_vote_unpacks_scaled_signs_into_the_target_slice():
    n, scale = 1001, 0.0137
    votes = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    target = torch.full((n + 10,), 7.0)
    msg = _voted(wire.KIND_SIGNS, _reference_signs(votes), n, step=5, shard=1)
    assert decode_vote(msg, target[5 : 5 + n], kind=wire.KIND_SIGNS, step=5, shard=1,
                       scale=scale)
    expected = np.where(votes < 0, -np.float32(scale), np.float32(scale))
    np.testing.assert_array_equal(target[5 : 5 + n].numpy(), expected)
    assert (target[:5] == 7.0).all() and (target[5 + n :] == 7.0).all()


def test_decode_vote_copies_fp32_skips_abstentions_and_refuses_another_steps_vote():
    n = 33
    mean = np.linspace(-1, 1, n, dtype=np.float32)
    out = torch.zeros(n)
    assert decode_vote(_voted(wire.KIND_FP32, mean.tobytes(), n, 2, 0), out,
                       kind=wire.KIND_FP32, step=2, shard=0)
    np.testing.assert_array_equal(out.numpy(), mean)
    untouched = torch.full((n,), 3.0)
    assert not decode_vote(_voted(wire.KIND_FP32, bytes(4 * n), n, 2, 0, wire.FLAG_ABSTAIN),
                           untouched, kind=wire.KIND_FP32, step=2, shard=0)
    assert (untouched == 3.0).all()
    with pytest.raises(wire.MessageError, match="step=2 but expected 3"):
        decode_vote(_voted(wire.KIND_FP32, mean.tobytes(), n, 2, 0), out,
                    kind=wire.KIND_FP32, step=3, shard=0)


def test_comm_bench_worker_signs_its_messages_under_its_key():
    """The benchmark's worker does the trainer's MAC work: each message carries a MAC that
    verifies under the worker's key (before, its messages went unsigned)."""
    worker = CommWorker(rank=1, d=300, num_shards=2, kind=wire.KIND_SIGNS, key=KEY)
    *messages, stats = worker.compress(step=4)
    assert len(messages) == 2 and stats["bytes_sent"] == sum(m.nbytes for m in messages)
    for shard, msg in enumerate(messages):
        start, stop = worker.bounds[shard]
        assert msg[24:32].tobytes() == _reference_mac(msg, KEY)
        assert msg[32:].tobytes() == _reference_signs(worker.grad[start:stop].numpy())


def test_replica_apply_signs_is_step_4_of_algorithm_1():
    """Replica.apply_signs (a single process's step 4, on the kernel the workers apply a vote
    with): ``x <- x (1 - lr lambda) - lr V`` in float32 on a slice, computed here with numpy."""
    config = SignSGDConfig(model="mlp", num_workers=1, lr=0.01, weight_decay=0.1,
                           vote_shards=1)
    replica = Replica(config, 0, np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64))
    before = replica.flat.numpy().copy()
    n = 500
    votes = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    packed = torch.frombuffer(bytearray(_reference_signs(votes)), dtype=torch.uint8)
    replica.apply_signs(packed, 100, 100 + n)
    lr = np.float32(0.01)
    expected = before.copy()
    expected[100 : 100 + n] = (before[100 : 100 + n] * np.float32(1 - 0.01 * 0.1)
                               - np.where(votes < 0, -lr, lr))
    np.testing.assert_array_equal(replica.flat.numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_all_finite_finds_every_nan_and_infinity_like_numpy(dtype):
    rng = np.random.default_rng(2)
    base = rng.standard_normal(4099).astype(np.float32)
    cases = [base, base * 0]
    for position in (0, 1, 17, 2048, 4098):
        for bad in (np.nan, np.inf, -np.inf):
            x = base.copy()
            x[position] = bad
            cases.append(x)
    for x in cases:
        assert all_finite(torch.from_numpy(x).to(dtype)) == bool(np.isfinite(x).all())
    assert all_finite(torch.empty(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the encode / "
                    "decode path of a GPU replica needs one")
def test_encode_and_decode_on_cuda_equal_the_cpu_path():
    values = torch.randn(5000, generator=torch.Generator().manual_seed(3))
    for kind in (wire.KIND_SIGNS, wire.KIND_FP32):
        on_cpu = encode_shard(kind, values, sender=1, step=2, shard=0, key=KEY)
        on_gpu = encode_shard(kind, values.cuda(), sender=1, step=2, shard=0, key=KEY)
        np.testing.assert_array_equal(on_gpu, on_cpu)
    msg = _voted(wire.KIND_SIGNS, _reference_signs(values.numpy()), 5000, 2, 0)
    out_cpu, out_gpu = torch.empty(5000), torch.empty(5000, device="cuda")
    for out in (out_cpu, out_gpu):
        assert decode_vote(msg, out, kind=wire.KIND_SIGNS, step=2, shard=0, scale=0.5)
    np.testing.assert_array_equal(out_gpu.cpu().numpy(), out_cpu.numpy())
    # The trainer's fused path on a GPU replica: momentum step then pack on the device, and the
    # vote applied there with weight decay; signs equal the CPU path's, momentum to rounding.
    m_cpu, m_gpu = torch.full((5000,), 0.25), torch.full((5000,), 0.25, device="cuda")
    on_cpu = encode_shard(wire.KIND_SIGNS, values, sender=1, step=2, shard=0, key=KEY,
                          momentum=m_cpu, beta=0.9)
    on_gpu = encode_shard(wire.KIND_SIGNS, values.cuda(), sender=1, step=2, shard=0, key=KEY,
                          momentum=m_gpu, beta=0.9)
    np.testing.assert_array_equal(on_gpu, on_cpu)
    np.testing.assert_allclose(m_gpu.cpu().numpy(), m_cpu.numpy(), rtol=1e-6)
    x_cpu, x_gpu = torch.ones(5000), torch.ones(5000, device="cuda")
    for x in (x_cpu, x_gpu):
        assert apply_vote(msg, x, kind=wire.KIND_SIGNS, step=2, shard=0, lr=0.5,
                          weight_decay=0.1)
    np.testing.assert_array_equal(x_gpu.cpu().numpy(), x_cpu.numpy())
    values[7] = float("nan")
    assert not all_finite(values.cuda()) and all_finite(out_gpu)


def _momentum_reference(g: np.ndarray, m: np.ndarray, beta: float) -> np.ndarray:
    """float32 ``beta m + (1 - beta) g`` as torch's CPU kernel rounds it (``beta m`` rounded,
    then the multiply-add: the product exact in float64, the sum rounded in float64 then to
    float32, a double rounding these seeds never hit)."""
    scaled = (m * np.float32(beta)).astype(np.float32)
    return (scaled.astype(np.float64) + np.float64(np.float32(1.0 - beta)) * g.astype(np.float64)
            ).astype(np.float32)


@pytest.mark.parametrize("n", [5, 64, 1000])
def test_encode_shard_takes_the_momentum_step_and_sends_the_new_momentum(n):
    rng = np.random.default_rng(n)
    g, m0 = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m = torch.from_numpy(m0.copy())
    msg = encode_shard(wire.KIND_SIGNS, torch.from_numpy(g), sender=1, step=4, shard=0, key=KEY,
                       momentum=m, beta=0.9)
    expected = _momentum_reference(g, m0, 0.9)
    np.testing.assert_array_equal(m.numpy(), expected)
    assert msg[32:].tobytes() == _reference_signs(expected)
    assert struct.unpack_from("<H", msg, 6)[0] == 0
    assert msg[24:32].tobytes() == _reference_mac(msg, KEY)


def test_a_non_finite_momentum_abstains_under_a_valid_mac():
    g = np.ones(100, np.float32)
    g[7] = np.inf
    msg = encode_shard(wire.KIND_SIGNS, torch.from_numpy(g), sender=1, step=4, shard=0,
                       key=KEY, momentum=torch.zeros(100), beta=0.9)
    assert struct.unpack_from("<H", msg, 6)[0] & wire.FLAG_ABSTAIN
    assert msg[24:32].tobytes() == _reference_mac(msg, KEY)  # the MAC covers the flag


@pytest.mark.parametrize("kind", [wire.KIND_SIGNS, wire.KIND_FP32])
def test_apply_vote_is_step_4_with_weight_decay(kind):
    n, lr, wd = 777, 0.01, 5e-4
    rng = np.random.default_rng(3)
    voted_values = rng.standard_normal(n).astype(np.float32)
    x0 = rng.standard_normal(n).astype(np.float32)
    body = _reference_signs(voted_values) if kind == wire.KIND_SIGNS else voted_values.tobytes()
    x = torch.from_numpy(x0.copy())
    assert apply_vote(_voted(kind, body, n, 2, 1), x, kind=kind, step=2, shard=1, lr=lr,
                      weight_decay=wd)
    decayed = x0 * np.float32(1 - lr * wd)
    if kind == wire.KIND_SIGNS:
        expected = decayed - np.where(voted_values < 0, -np.float32(lr), np.float32(lr))
        np.testing.assert_array_equal(x.numpy(), expected)
    else:  # torch's sub_(alpha=lr) is one fused multiply-add
        expected = (decayed.astype(np.float64) - np.float64(np.float32(lr))
                    * voted_values.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(x.numpy(), expected)
    untouched = torch.full((n,), 3.0)
    assert not apply_vote(_voted(kind, body, n, 2, 1, wire.FLAG_ABSTAIN), untouched, kind=kind,
                          step=2, shard=1, lr=lr)
    assert (untouched == 3.0).all()


def test_comm_bench_worker_runs_the_trainers_signum_round():
    """The benchmark's worker takes the trainer's steps: momentum on its gradient, the signs
    of the momentum sent, the vote applied to its parameters with lr and weight decay."""
    worker = CommWorker(rank=0, d=300, num_shards=2, kind=wire.KIND_SIGNS, key=KEY,
                        momentum=0.9, lr=0.5, weight_decay=0.1)
    g = worker.grad.numpy().copy()
    *messages, _ = worker.compress(step=1)
    np.testing.assert_array_equal(worker.momentum.numpy(),
                                  _momentum_reference(g, np.zeros(300, np.float32), 0.9))
    vote = np.random.default_rng(4).standard_normal(300).astype(np.float32)
    voted = [_voted(wire.KIND_SIGNS, _reference_signs(vote[a:b]), b - a, 1, j)
             for j, (a, b) in enumerate(worker.bounds)]
    worker.apply(1, *voted)
    expected = np.float32(0) * np.float32(1 - 0.5 * 0.1) - np.where(vote < 0, -0.5, 0.5)
    np.testing.assert_array_equal(worker.parameter_values(), expected.astype(np.float32))
