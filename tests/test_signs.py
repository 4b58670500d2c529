"""Specification of raysign.signs against plain numpy references."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import raysign
from raysign import signs


def reference_signs(x: np.ndarray) -> np.ndarray:
    """+1 for x >= 0 (zero included), -1 otherwise, as int64."""
    return np.where(x < 0, -1, 1).astype(np.int64)


def reference_majority(sign_rows: np.ndarray) -> np.ndarray:
    """sign(sum of signs) with sign(0) = +1 (the documented tie rule)."""
    return np.where(sign_rows.sum(0) < 0, -1, 1)


def reference_pack(x: np.ndarray) -> np.ndarray:
    bits = np.packbits((x < 0).astype(np.uint8), bitorder="little")
    return np.concatenate([bits, np.zeros(signs.packed_nbytes(x.size) - bits.size, np.uint8)])


lengths = st.integers(min_value=1, max_value=700)
# The compiled CPU kernels (numba, a main dependency) and the numpy fall back: both paths must
# meet every reference below.
BACKENDS = ["numba", "numpy"]


@contextlib.contextmanager
def kernels(backend: str):
    """Run ``raysign.signs`` on ``backend``; checks the numba path really is the one taken."""
    old = os.environ.get("RAYSIGN_KERNELS")
    os.environ["RAYSIGN_KERNELS"] = backend
    try:
        assert signs.kernel_backend() == backend
        yield
    finally:
        if old is None:
            del os.environ["RAYSIGN_KERNELS"]
        else:
            os.environ["RAYSIGN_KERNELS"] = old


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(d=lengths, seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_pack_matches_numpy_packbits_and_round_trips(backend, d, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d).astype(np.float32)
    x[rng.random(d) < 0.1] = 0.0  # exact zeros count as +1
    x[rng.random(d) < 0.05] = -0.0
    x[rng.random(d) < 0.02] = np.nan  # NaN counts as +1 (x < 0 is false)
    t = torch.from_numpy(x).to(dtype)
    with kernels(backend):
        packed = signs.pack_signs(t)
        unpacked = signs.unpack_signs(packed, d, dtype=dtype)
    assert packed.dtype == torch.uint8 and packed.numel() == signs.packed_nbytes(d)
    np.testing.assert_array_equal(packed.numpy(), reference_pack(t.float().numpy()))
    assert unpacked.dtype == dtype
    np.testing.assert_array_equal(unpacked.float().numpy(), reference_signs(t.float().numpy()))


def test_pack_crosses_block_boundaries(monkeypatch):
    monkeypatch.setattr(signs, "_BLOCK", 128)
    x = torch.randn(1000)
    packed = signs.pack_signs(x.reshape(10, 100))
    np.testing.assert_array_equal(packed.numpy(), reference_pack(x.numpy()))
    np.testing.assert_array_equal(signs.unpack_signs(packed, 1000, scale=0.5).numpy(),
                                  0.5 * reference_signs(x.numpy()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("m", range(1, 34))
def test_majority_vote_matches_reference_for_all_worker_counts(m, backend, monkeypatch):
    monkeypatch.setenv("RAYSIGN_KERNELS", backend)
    assert signs.kernel_backend() == backend
    rng = np.random.default_rng(m)
    for d in (1, 63, 64, 65, 1000, 4099):
        x = rng.standard_normal((m, d)).astype(np.float32)
        # Correlated rows so that every count (and ties for even m) occurs.
        x += rng.standard_normal(d).astype(np.float32) * rng.uniform(0, 2)
        packed = torch.stack([signs.pack_signs(torch.from_numpy(row)) for row in x])
        voted = signs.majority_vote(packed)
        expected = reference_majority(reference_signs(x))
        np.testing.assert_array_equal(signs.unpack_signs(voted, d).numpy(), expected)
        # Padding bits of the last word stay +1 (zero).
        np.testing.assert_array_equal(voted.numpy()[(d + 7) // 8:], 0)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 33), n_words=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       separate=st.booleans())
def test_majority_vote_on_random_words_with_small_blocks(backend, m, n_words, seed, separate):
    from raysign import sign_kernels

    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(m, 8 * n_words), dtype=np.uint8)
    # One [M, nbytes] tensor, or M separate tensors (the vote actor's received messages).
    packed = [torch.from_numpy(row.copy()) for row in raw] if separate else torch.from_numpy(raw)
    old = signs._VOTE_BLOCK_WORDS, sign_kernels.VOTE_BLOCK_WORDS
    signs._VOTE_BLOCK_WORDS = sign_kernels.VOTE_BLOCK_WORDS = 3
    try:
        with kernels(backend):
            voted = signs.majority_vote(packed).numpy()
    finally:
        signs._VOTE_BLOCK_WORDS, sign_kernels.VOTE_BLOCK_WORDS = old
    bits = np.unpackbits(raw, axis=1, bitorder="little").astype(np.int64)
    expected = (bits.sum(0) > m // 2).astype(np.uint8)
    np.testing.assert_array_equal(np.unpackbits(voted, bitorder="little"), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_majority_vote_of_column_slices_as_the_ddp_hook_passes_them(backend, monkeypatch):
    """Rows of a wider buffer (``rows[:, :n]``, strided): the vote reads each row in place."""
    monkeypatch.setenv("RAYSIGN_KERNELS", backend)
    rng = np.random.default_rng(5)
    wide = torch.from_numpy(rng.integers(0, 256, size=(5, 8 * 30), dtype=np.uint8))
    voted = signs.majority_vote(wide[:, : 8 * 17]).numpy()
    bits = np.unpackbits(wide.numpy()[:, : 8 * 17], axis=1, bitorder="little").astype(int)
    expected = (bits.sum(0) > 2).astype(np.uint8)
    np.testing.assert_array_equal(np.unpackbits(voted, bitorder="little"), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_unpack_scales_into_out_and_rounds_the_scale_to_dtype(backend, dtype, monkeypatch):
    monkeypatch.setenv("RAYSIGN_KERNELS", backend)
    x = np.random.default_rng(1).standard_normal(777).astype(np.float32)
    packed = signs.pack_signs(torch.from_numpy(x))
    out = torch.full((777,), 7.0, dtype=dtype)
    result = signs.unpack_signs(packed, 777, scale=0.1, dtype=dtype, out=out)
    assert result.data_ptr() == out.data_ptr()
    expected = torch.from_numpy(0.1 * reference_signs(x)).to(dtype)  # 0.1 rounded as dtype
    assert torch.equal(out, expected)


def reference_unpack(packed: np.ndarray, d: int, scale: float, dtype: np.dtype) -> np.ndarray:
    """``-scale`` where bit i (least significant first) is set, else ``+scale``; ``scale``
    rounded once to ``dtype``."""
    bits = np.unpackbits(packed, bitorder="little")[:d]
    return np.where(bits == 1, -scale, scale).astype(dtype)


@pytest.mark.parametrize("stores", ["streaming", "cached"])
@settings(max_examples=60, deadline=None)
@given(d=st.integers(0, 2000), offset=st.integers(0, 20), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_unpack_into_an_unaligned_slice_matches_numpy_unpackbits(stores, d, offset, seed,
                                                                 dtype):
    """``out[offset:offset + d]`` of a wider buffer: every start address modulo a cache line,
    with streaming stores (threshold 0) and plain ones; the buffer around stays untouched."""
    from raysign import sign_kernels

    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, signs.packed_nbytes(d), dtype=np.uint8)
    buffer = torch.full((offset + d + 5,), 7.0, dtype=dtype)
    old = sign_kernels.STREAM_MIN_BYTES
    sign_kernels.STREAM_MIN_BYTES = 0 if stores == "streaming" else 1 << 62
    try:
        with kernels("numba"):
            signs.unpack_signs(torch.from_numpy(packed), d, scale=0.1, dtype=dtype,
                               out=buffer[offset : offset + d])
    finally:
        sign_kernels.STREAM_MIN_BYTES = old
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    np.testing.assert_array_equal(buffer[offset : offset + d].numpy(),
                                  reference_unpack(packed, d, 0.1, numpy_dtype))
    assert (buffer[:offset] == 7).all() and (buffer[offset + d :] == 7).all()


def test_unpack_above_the_streaming_threshold_matches_numpy_unpackbits():
    """The default threshold, no patching: an output of ``STREAM_MIN_BYTES`` and more, one
    float32 off a cache line, with a ragged tail."""
    from raysign import sign_kernels

    d = sign_kernels.STREAM_MIN_BYTES // 4 + 77
    packed = np.random.default_rng(3).integers(0, 256, signs.packed_nbytes(d), dtype=np.uint8)
    buffer = torch.empty(d + 1)
    with kernels("numba"):
        signs.unpack_signs(torch.from_numpy(packed), d, scale=2.0, out=buffer[1:])
    np.testing.assert_array_equal(buffer[1:].numpy(),
                                  reference_unpack(packed, d, 2.0, np.float32))


def test_unpack_streams_from_the_threshold_on(monkeypatch):
    from raysign import sign_kernels

    called = []
    monkeypatch.setattr(sign_kernels, "STREAM_MIN_BYTES", 4096)
    monkeypatch.setattr(sign_kernels, "unpack_words_streaming",
                        lambda *args: called.append("streaming"))
    monkeypatch.setattr(sign_kernels, "unpack_words_cached",
                        lambda *args: called.append("cached"))
    packed = torch.zeros(signs.packed_nbytes(1024), dtype=torch.uint8)
    with kernels("numba"):
        signs.unpack_signs(packed[: signs.packed_nbytes(1023)], 1023)  # 4092 bytes of float32
        signs.unpack_signs(packed, 1024)  # 4096 bytes
        signs.unpack_signs(packed[: signs.packed_nbytes(512)], 512, dtype=torch.float64)
    assert called == ["cached", "streaming", "streaming"]


def test_unpack_words_writes_a_strided_output_element_by_element(monkeypatch):
    """Above the threshold, an output with a stride (every second float of a buffer) takes the
    plain stores, which follow the stride: the streaming kernel writes whole cache lines from
    the data pointer on and would fill the gaps (or run past a reversed view's end)."""
    from raysign import sign_kernels

    monkeypatch.setattr(sign_kernels, "STREAM_MIN_BYTES", 0)
    d = 1000
    packed = np.random.default_rng(5).integers(0, 256, signs.packed_nbytes(d), dtype=np.uint8)
    buffer = np.full(2 * d, 7.0, dtype=np.float32)
    sign_kernels.unpack_words(packed.view(np.int64), d, np.float32(1), np.float32(-1),
                              buffer[::2])
    np.testing.assert_array_equal(buffer[::2], reference_unpack(packed, d, 1.0, np.float32))
    np.testing.assert_array_equal(buffer[1::2], 7.0)  # the gaps untouched


def test_unpack_words_streaming_falls_back_to_plain_stores_for_a_misaligned_output():
    """A float32 view one byte off (numpy allows it; an aligned vector store there would
    fault): plain stores throughout."""
    from raysign import sign_kernels

    d = 1000
    packed = np.random.default_rng(4).integers(0, 256, signs.packed_nbytes(d), dtype=np.uint8)
    raw = np.zeros(4 * d + 64, dtype=np.uint8)
    out = raw[1 : 1 + 4 * d].view(np.float32)
    sign_kernels.unpack_words_streaming(packed.view(np.int64), d, np.float32(1),
                                        np.float32(-1), out)
    np.testing.assert_array_equal(out, reference_unpack(packed, d, 1.0, np.float32))


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 instruction names")
@pytest.mark.parametrize("cpu", ["host", "generic"])
def test_streaming_unpack_compiles_to_non_temporal_stores_for_any_x86_cpu(cpu, tmp_path):
    """On this CPU and on baseline x86-64 (``NUMBA_CPU_NAME=generic``: SSE2, no AVX, what a
    machine without AVX gets) the kernel emits non-temporal stores and an sfence, only with
    registers that CPU has, and unpacks correctly. Own process and cache: numba fixes the
    target CPU at import."""
    script = """
import numpy as np
from raysign import sign_kernels
d = 5000
packed = np.random.default_rng(0).integers(0, 256, 8 * ((d + 63) // 64), dtype=np.uint8)
out = np.empty(d + 3, np.float32)[3:]
sign_kernels.unpack_words_streaming(packed.view(np.int64), d, np.float32(0.5),
                                    np.float32(-0.5), out)
bits = np.unpackbits(packed, bitorder="little")[:d]
assert np.array_equal(out, np.where(bits == 1, np.float32(-0.5), np.float32(0.5)))
(asm,) = sign_kernels.unpack_words_streaming.inspect_asm().values()
print(" ".join(sorted({line.split()[0] for line in asm.splitlines()
                       if "movnt" in line or "fence" in line})))
print("zmm" in asm, "ymm" in asm)
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    if cpu == "generic":
        env["NUMBA_CPU_NAME"] = "generic"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    instructions, registers = result.stdout.split("\n")[:2]
    assert "sfence" in instructions.split()
    assert any(name.startswith(("movnt", "vmovnt")) for name in instructions.split())
    if cpu == "generic":
        assert registers == "False False"  # xmm only


def test_missing_numba_falls_back_to_numpy_with_a_warning(monkeypatch):
    monkeypatch.delenv("RAYSIGN_KERNELS", raising=False)
    monkeypatch.setattr(signs, "_compiled", None)
    # As if numba were not installed: importing raysign.sign_kernels raises ImportError.
    monkeypatch.setitem(sys.modules, "raysign.sign_kernels", None)
    monkeypatch.delattr(raysign, "sign_kernels", raising=False)
    with pytest.warns(UserWarning, match="numba kernels unavailable"):
        assert signs.kernel_backend() == "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every call
        x = np.random.default_rng(2).standard_normal((3, 200)).astype(np.float32)
        packed = torch.stack([signs.pack_signs(torch.from_numpy(row)) for row in x])
        voted = signs.majority_vote(packed)
    np.testing.assert_array_equal(signs.unpack_signs(voted, 200).numpy(),
                                  reference_majority(reference_signs(x)))


def test_even_tie_goes_to_plus_one():
    plus = signs.pack_signs(torch.ones(10))
    minus = signs.pack_signs(-torch.ones(10))
    voted = signs.majority_vote([plus, minus, plus, minus])
    assert torch.equal(signs.unpack_signs(voted, 10), torch.ones(10))


def test_majority_vote_rejects_malformed_input():
    with pytest.raises(ValueError, match="whole 64-bit words"):
        signs.majority_vote(torch.zeros(3, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        signs.majority_vote(torch.zeros(3, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="bytes"):
        signs.unpack_signs(torch.zeros(8, dtype=torch.uint8), 100)


@pytest.mark.parametrize("d,shards", [(1, 1), (64, 1), (1000, 3), (4099, 7), (640, 10)])
def test_shard_bounds_tile_the_vector_on_word_boundaries(d, shards):
    bounds = signs.shard_bounds(d, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == d
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    assert all(start % 64 == 0 for start, _ in bounds)
    x = torch.randn(d)
    whole = signs.pack_signs(x)
    parts = torch.cat([signs.pack_signs(x[a:b]) for a, b in bounds])
    assert torch.equal(whole, parts)


def test_gradient_density_closed_forms():
    d = 1000
    assert signs.gradient_density(torch.full((d,), -3.0)) == pytest.approx(1.0)
    one_hot = torch.zeros(d)
    one_hot[7] = 5.0
    assert signs.gradient_density(one_hot) == pytest.approx(1 / d)
    # Gaussian vector: E|x|^2 / E x^2 = 2 / pi.
    g = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert signs.gradient_density(g) == pytest.approx(2 / math.pi, rel=0.01)


def test_signal_to_noise_matches_numpy():
    rng = np.random.default_rng(0)
    samples = rng.normal(loc=[0.0, 1.0, -2.0], scale=[1.0, 0.5, 4.0], size=(50_000, 3))
    snr = signs.signal_to_noise(torch.from_numpy(samples))
    ref = np.abs(samples.mean(0)) / samples.std(0, ddof=1)
    np.testing.assert_allclose(snr.numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(snr.numpy(), [0.0, 2.0, 0.5], atol=0.02)
    assert signs.fraction_above_critical_snr(snr) == pytest.approx(1 / 3)


@pytest.mark.parametrize("m", [2, 3, 7, 8, 31])
def test_device_path_kernels_match_the_cpu_path(m):
    """The torch code used on GPUs, run here on CPU tensors, against the numpy path."""
    rng = np.random.default_rng(m)
    x = torch.from_numpy(rng.standard_normal((m, 3000)).astype(np.float32))
    packed = torch.stack([signs.pack_signs(row) for row in x])
    for row, expected in zip(x, packed, strict=True):
        out = torch.empty_like(expected)
        signs._pack_torch(row, out[: (3000 + 7) // 8])
        assert torch.equal(out[: (3000 + 7) // 8], expected[: (3000 + 7) // 8])
    words = [row.view(torch.int64) for row in packed]
    result = torch.empty_like(words[0])
    signs._vote_words(words, result, 5, lambda n: torch.empty(n, dtype=torch.int64))
    assert torch.equal(result.view(torch.uint8), signs.majority_vote(packed))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device here: the kernels' CUDA path needs a GPU")
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 33), d=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_cuda_kernels_match_the_cpu_references(m, d, seed, dtype):
    """pack, unpack and vote on CUDA tensors: results stay on the GPU and equal the plain
    references (zeros and NaN +1, tie +1, zero tail bits)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d)).astype(np.float32)
    x += rng.standard_normal(d).astype(np.float32) * rng.uniform(0, 2)
    x[rng.random((m, d)) < 0.05] = 0.0
    x[rng.random((m, d)) < 0.02] = np.nan
    rows = torch.from_numpy(x).to(dtype)
    cpu_rows = rows.float().numpy()
    packed = torch.stack([signs.pack_signs(row.cuda()) for row in rows])
    assert packed.device.type == "cuda"
    for row, expected in zip(packed.cpu().numpy(), cpu_rows, strict=True):
        np.testing.assert_array_equal(row, reference_pack(expected))
    voted = signs.majority_vote(packed)
    assert voted.device.type == "cuda"
    values = signs.unpack_signs(voted, d, scale=0.5, dtype=dtype)
    assert values.device.type == "cuda" and values.dtype == dtype
    expected = 0.5 * reference_majority(reference_signs(cpu_rows))
    np.testing.assert_array_equal(values.float().cpu().numpy(), expected)
    np.testing.assert_array_equal(voted.cpu().numpy()[(d + 7) // 8:], 0)


def _momentum_reference(g: np.ndarray, m: np.ndarray, beta: float) -> np.ndarray:
    """float32 ``beta m + (1 - beta) g`` as torch's CPU kernel rounds it: ``beta m`` to
    float32, then the multiply-add of ``(1 - beta) g`` (the product exact in float64, the sum
    rounded in float64 then to float32: a double rounding, possible in principle, that these
    seeds never hit)."""
    scaled = (m * np.float32(beta)).astype(np.float32)
    alpha = np.float64(np.float32(1.0 - beta))
    return (scaled.astype(np.float64) + alpha * g.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [1, 63, 64, 65, 1000, 4099])
@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_momentum_and_pack_equals_momentum_then_packbits(backend, d, beta):
    rng = np.random.default_rng(d)
    g = rng.standard_normal(d).astype(np.float32)
    m0 = rng.standard_normal(d).astype(np.float32)
    g[0], m0[0] = 0.0, 0.0  # a zero momentum is sent as +1 (bit clear)
    m = torch.from_numpy(m0.copy())
    out = torch.empty(signs.packed_nbytes(d), dtype=torch.uint8)
    with kernels(backend):
        assert signs.momentum_and_pack(torch.from_numpy(g), m, beta, out=out)
    expected = _momentum_reference(g, m0, beta)
    np.testing.assert_array_equal(m.numpy(), expected)
    bits = np.packbits(expected < 0, bitorder="little")
    np.testing.assert_array_equal(out.numpy()[: bits.size], bits)
    assert not out.numpy()[bits.size :].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_momentum_and_pack_reports_a_non_finite_momentum(backend, bad):
    g = np.ones(200, np.float32)
    g[150] = bad
    out = torch.empty(signs.packed_nbytes(200), dtype=torch.uint8)
    with kernels(backend):
        assert not signs.momentum_and_pack(torch.from_numpy(g), torch.zeros(200), 0.9, out=out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [1, 64, 65, 4099])
@pytest.mark.parametrize("decay", [1.0, 1.0 - 0.01 * 5e-4])
def test_subtract_signs_is_step_4_in_float32(backend, d, decay):
    rng = np.random.default_rng(d)
    votes = rng.standard_normal(d).astype(np.float32)
    x0 = rng.standard_normal(d).astype(np.float32)
    packed = torch.from_numpy(np.packbits(votes < 0, bitorder="little"))
    packed = torch.cat([packed, torch.zeros(signs.packed_nbytes(d) - packed.numel(),
                                            dtype=torch.uint8)])
    x = torch.from_numpy(x0.copy())
    with kernels(backend):
        signs.subtract_signs(packed, x, scale=0.01, decay=decay)
    lr = np.float32(0.01)
    decayed = x0 * np.float32(decay) if decay != 1.0 else x0
    np.testing.assert_array_equal(x.numpy(), decayed - np.where(votes < 0, -lr, lr))
