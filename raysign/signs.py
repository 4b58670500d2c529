"""1-bit sign compression and majority vote on packed words.

This is the arithmetic of distributed signSGD with majority vote (Bernstein, Wang,
Azizzadenesheli, Anandkumar, "signSGD: compressed optimisation for non-convex problems",
ICML 2018, and "signSGD with majority vote is communication efficient and fault tolerant",
ICLR 2019, Algorithm 1): every worker sends ``sign(m_i)`` at one bit per parameter and the
server returns ``sign(sum_i sign(m_i))``, again at one bit per parameter.

The conventions, defined here once and used everywhere:

1. **Sign of zero.** ``sign(x) = +1`` if ``x >= 0`` else ``-1``. Exact zeros (and ``-0.0``)
   count as +1; so does NaN (callers reject non-finite gradients before packing).
2. **Bit value.** A set bit means -1, a clear bit means +1 ("bit = x < 0").
3. **Bit order.** Element ``i`` is bit ``i % 8`` (least significant first) of byte ``i // 8``,
   the layout of ``numpy.packbits(..., bitorder="little")``. On a little-endian machine this
   makes element ``i`` bit ``i % 64`` of the 64-bit word ``i // 64``, which is how the vote
   reads the bytes.
4. **Tail.** A packed tensor of ``d`` signs holds ``packed_nbytes(d) = 8 * ceil(d / 64)`` bytes
   (whole 64-bit words). Bits past ``d`` are zero (+1) on packing and ignored on unpacking.
5. **Tie rule.** With an even number of voters a coordinate can tie; the vote is the sign of
   the sum of signs with rule 1 applied to the sum, so a tie gives +1. Equivalently, the voted
   bit is set iff strictly more than ``M // 2`` voters sent -1.

The vote never expands the bits to one value per sign: it adds the M bit vectors into a
bit-sliced counter (plane ``j`` of the counter holds bit ``j`` of every coordinate's count, 64
coordinates per machine word) and compares the count with ``M // 2`` plane by plane.

The theory's diagnostics are here too: gradient density
``phi(v) = |v|_1^2 / (d |v|_2^2)`` and the per-coordinate signal-to-noise ratio
``S_i = |E g_i| / sigma_i`` with its critical value ``2 / sqrt(3)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

WORD_BYTES = 8
WORD_BITS = 64
CRITICAL_SNR = 2.0 / math.sqrt(3.0)

# Elements per block when packing / unpacking: temporaries stay a few MB, never the size of
# the fp32 gradient.
_BLOCK = 1 << 18
# Words per block in the vote: M input rows plus the counter planes stay in L2 cache.
_VOTE_BLOCK_WORDS = 1 << 14
# Multiplying eight 0/1 bytes (read as one little-endian int64) by this constant moves byte k's
# bit to bit 56 + k with no carries, so ``(v * _GATHER) >> 56`` is the packed byte.
_GATHER = 0x0102040810204080


_compiled = None


def kernel_backend() -> str:
    """``"numba"`` where the compiled CPU kernels (``raysign/sign_kernels.py``) import, else
    ``"numpy"`` (with a one-time warning). ``RAYSIGN_KERNELS=numpy`` forces the numpy path."""
    return "numpy" if _compiled_kernels() is None else "numba"


def _compiled_kernels():
    global _compiled
    if os.environ.get("RAYSIGN_KERNELS", "").lower() == "numpy":
        return None
    if _compiled is None:
        try:
            from raysign import sign_kernels
        except ImportError as error:  # numba missing or not built for this numpy
            warnings.warn(f"raysign.signs: numba kernels unavailable ({error}); using the "
                          "slower numpy path. pip install numba to enable them.", stacklevel=3)
            _compiled = False
        else:
            _compiled = sign_kernels
    return _compiled or None


def packed_nbytes(d: int) -> int:
    """Bytes that hold ``d`` signs: whole 64-bit words, ``8 * ceil(d / 64)``."""
    if d < 0:
        raise ValueError(f"d={d} must be >= 0")
    return WORD_BYTES * ((d + WORD_BITS - 1) // WORD_BITS)


def pack_signs(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Pack the signs of ``x`` (any shape; fp32, fp16 or bf16; CPU or CUDA) into bytes.

    Returns a uint8 tensor of ``packed_nbytes(x.numel())`` bytes on ``x``'s device (or writes
    into ``out``, a uint8 tensor of that length on that device).
    """
    if not x.is_floating_point():
        raise TypeError(f"pack_signs needs a floating-point tensor, got dtype={x.dtype}")
    flat = x.detach().reshape(-1)
    d = flat.numel()
    nbytes = packed_nbytes(d)
    if out is None:
        out = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    elif out.dtype != torch.uint8 or out.numel() != nbytes or out.device != x.device:
        raise ValueError(
            f"out must be uint8 with {nbytes} elements on {x.device}, "
            f"got {out.dtype} with {out.numel()} on {out.device}"
        )
    kernels = _compiled_kernels() if flat.device.type == "cpu" else None
    if kernels is not None and flat.dtype in (torch.float32, torch.float64):
        kernels.pack_words(flat.contiguous().numpy(), out.numpy().view(np.int64))
        return out
    if flat.device.type == "cpu":
        _pack_cpu(flat, out.numpy())
    else:
        _pack_torch(flat, out)
    # The padding bytes of the last word: +1.
    out[(d + 7) // 8 :] = 0
    return out


def _pack_cpu(flat: torch.Tensor, out: np.ndarray) -> None:
    """One pass per cache-sized block: compare into a reused bool buffer, then np.packbits
    (SIMD) - faster than copying the fp32 input."""
    d = flat.numel()
    numpy_dtype = flat.dtype in (torch.float32, torch.float16, torch.float64)
    negative = np.empty(min(_BLOCK, d), dtype=bool)
    for start in range(0, d, _BLOCK):
        stop = min(start + _BLOCK, d)
        block = flat[start:stop]
        values = block.numpy() if numpy_dtype else block.float().numpy()
        mask = negative[: stop - start]
        np.less(values, 0, out=mask)
        out[start // 8 : (stop + 7) // 8] = np.packbits(mask, bitorder="little")


def _pack_torch(flat: torch.Tensor, out: torch.Tensor) -> None:
    """Device-agnostic packing (used on GPU): gather each 8 sign bytes into one byte with a
    carry-free multiplication."""
    d = flat.numel()
    for start in range(0, d, _BLOCK):
        negative = flat[start : start + _BLOCK] < 0
        n = negative.numel()
        if n % 8:
            negative = torch.cat([negative, negative.new_zeros(8 - n % 8)])
        eight = negative.view(torch.uint8).view(torch.int64)
        packed = ((eight * _GATHER) >> 56) & 0xFF
        out[start // 8 : start // 8 + packed.numel()] = packed.to(torch.uint8)


def _sign_table(scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[256, 8] table: row b holds the 8 signs (times ``scale``) encoded by byte b."""
    bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
    # In float64, so that ``scale`` is rounded once, to ``dtype`` (not through float32 first).
    return (scale * (1.0 - 2.0 * bits.double())).to(dtype=dtype, device=device)


def unpack_signs(
    packed: torch.Tensor,
    d: int,
    *,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``d`` signs in ``packed`` as ``+scale`` / ``-scale`` values of ``dtype``, shape [d].

    On CPU with numba (fp32 / fp64, contiguous ``out``) one pass, outputs of
    ``sign_kernels.STREAM_MIN_BYTES`` and more with streaming stores (no read of each output
    cache line before it is written); otherwise each byte is looked up in a [256, 8] table of
    values, so no per-sign temporary is made.
    """
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    if packed.numel() != packed_nbytes(d):
        raise ValueError(f"packed has {packed.numel()} bytes; {d} signs need {packed_nbytes(d)}")
    if out is None:
        out = torch.empty(d, dtype=dtype, device=packed.device)
    kernels = _compiled_kernels() if packed.device.type == "cpu" else None
    if kernels is not None and dtype in (torch.float32, torch.float64) and out.is_contiguous():
        values = torch.tensor([scale, -scale], dtype=dtype).tolist()  # rounded to dtype
        kernels.unpack_words(packed.contiguous().numpy().view(np.int64), d, values[0], values[1],
                             out.numpy())
        return out
    table = _sign_table(scale, dtype, packed.device)
    whole = d - d % 8
    if packed.device.type == "cpu" and dtype in (torch.float32, torch.float16, torch.float64):
        # np.take writes straight into the output, 8 values per byte.
        # mode="clip" (indices are bytes, always in range) avoids np.take's buffered path.
        np.take(table.numpy(), packed[: whole // 8].numpy(), axis=0,
                out=out[:whole].numpy().reshape(-1, 8), mode="clip")
    else:
        for start in range(0, whole, _BLOCK):
            stop = min(start + _BLOCK, whole)
            chunk = packed[start // 8 : stop // 8].to(torch.int32)
            out[start:stop] = table.index_select(0, chunk).reshape(-1)
    if whole < d:
        out[whole:] = table[int(packed[whole // 8])][: d - whole]
    return out


def momentum_and_pack(g: torch.Tensor, m: torch.Tensor, beta: float,
                      out: torch.Tensor) -> bool:
    """Signum's momentum step and the pack of its signs (Bernstein et al., ICLR 2019,
    Algorithm 1 steps 2-3) for fp32 [n] ``g`` and ``m`` (same device): ``m <- beta m +
    (1 - beta) g`` in place, then ``sign(m)`` packed into ``out`` (uint8
    [packed_nbytes(n)]). Returns whether every new m is finite.

    On CPU one pass with numba; elsewhere ``m.mul_(beta).add_(g, alpha=1 - beta)`` then
    ``pack_signs`` - the same float32 values (``beta m`` rounded, then one fused multiply-add,
    as torch's CPU kernel computes it with ATen's AVX2 / AVX512 code; its default, non-SIMD
    code rounds twice))."""
    kernels = _compiled_kernels() if m.device.type == "cpu" else None
    if (kernels is not None and g.dtype == m.dtype == torch.float32 and g.is_contiguous()
            and m.is_contiguous()):
        if out.dtype != torch.uint8 or out.numel() != packed_nbytes(m.numel()):
            raise ValueError(f"out must be uint8 with {packed_nbytes(m.numel())} elements, "
                             f"got {out.dtype} with {out.numel()}")
        return kernels.momentum_pack_words(g.numpy(), m.numpy(), np.float32(beta),
                                           np.float32(1.0 - beta), out.numpy().view(np.int64))
    m.mul_(beta).add_(g, alpha=1.0 - beta)
    pack_signs(m, out=out)
    low, high = torch.aminmax(m.reshape(-1)) if m.numel() else (m.new_zeros(()),) * 2
    return bool(torch.isfinite(low) & torch.isfinite(high))


def subtract_signs(packed: torch.Tensor, x: torch.Tensor, *, scale: float,
                   decay: float = 1.0) -> None:
    """Step 4 of Algorithm 1 on fp32 [d] ``x`` with the packed vote: ``x <- x decay -
    scale V`` (V the +-1 signs in ``packed``; ``decay`` = 1 - lr lambda for weight decay, 1
    for none), each product rounded to float32 as ``x.mul_(decay).sub_(unpack_signs(packed,
    d, scale=scale))`` computes it. On CPU one pass with numba, no [d] temporary."""
    d = x.numel()
    if packed.dtype != torch.uint8 or packed.numel() != packed_nbytes(d):
        raise ValueError(f"packed must be uint8 with {packed_nbytes(d)} bytes for {d} "
                         f"signs, got {packed.dtype} with {packed.numel()}")
    kernels = _compiled_kernels() if x.device.type == "cpu" else None
    if kernels is not None and x.dtype == torch.float32 and x.is_contiguous():
        positive, negative = torch.tensor([scale, -scale], dtype=torch.float32).tolist()
        kernels.apply_sign_words(packed.contiguous().numpy().view(np.int64), d, x.numpy(),
                                 np.float32(decay), np.float32(positive), np.float32(negative))
        return
    update = unpack_signs(packed.to(x.device), d, scale=scale, dtype=x.dtype)
    if decay != 1.0:
        x.mul_(decay)
    x.sub_(update)


def _as_word_rows(packed: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The M inputs as M int64 word views (no copy of contiguous inputs)."""
    rows = list(packed.unbind(0)) if isinstance(packed, torch.Tensor) else list(packed)
    if not rows:
        raise ValueError("majority_vote needs at least one packed tensor")
    nbytes = rows[0].numel()
    for row in rows:
        if row.dim() != 1 or row.dtype != torch.uint8 or row.numel() != nbytes:
            raise ValueError(f"expected M uint8 vectors of {nbytes} bytes, got {row.dtype} "
                             f"{tuple(row.shape)}")
    if nbytes % WORD_BYTES:
        raise ValueError(f"packed length {nbytes} is not whole 64-bit words")
    return [row.contiguous().view(torch.int64) for row in rows]


class _Scratch:
    """Reusable word buffers for one vote, so the adder tree allocates nothing per block.
    Buffers it did not hand out (the inputs) are never taken back."""

    def __init__(self, size: int, make):
        self.size, self.make = size, make
        self.owned: dict[int, object] = {}
        self.free: list[object] = []

    @staticmethod
    def _address(buffer) -> int:
        if isinstance(buffer, np.ndarray):
            return buffer.__array_interface__["data"][0]
        return buffer.data_ptr()

    def take(self, width: int):
        if not self.free:
            buffer = self.make(self.size)
            self.owned[self._address(buffer)] = buffer
            self.free.append(buffer)
        return self.free.pop()[:width]

    def give(self, buffer) -> None:
        owner = self.owned.get(self._address(buffer))
        if owner is not None:
            self.free.append(owner)


def _count_planes(rows: list, scratch: _Scratch, width: int) -> list:
    """Bit-sliced population count of the M word vectors ``rows``: returns planes
    ``[c_0, c_1, ...]`` with ``sum_i bit(rows_i) = sum_j 2^j bit(c_j)`` for every bit position.

    A carry-save adder tree: a full adder turns three vectors of weight 2^j into one of weight
    2^j (the sum) and one of weight 2^(j+1) (the carry) with five bitwise operations; a half
    adder does two into one plus a carry. About 5 M operations in all, against ~2 M log M for
    a ripple counter.
    """
    xp = np if isinstance(rows[0], np.ndarray) else torch
    levels: list[list] = [list(rows)]
    planes = []
    j = 0
    while j < len(levels):
        queue = levels[j]
        while len(queue) >= 2:
            if j + 1 == len(levels):
                levels.append([])
            if len(queue) >= 3:
                a, b, c = queue.pop(0), queue.pop(0), queue.pop(0)
                t = scratch.take(width)
                xp.bitwise_xor(a, b, out=t)                   # t = a ^ b
                total = scratch.take(width)
                xp.bitwise_xor(t, c, out=total)               # sum = a ^ b ^ c
                carry = scratch.take(width)
                xp.bitwise_and(a, b, out=carry)
                xp.bitwise_and(t, c, out=t)
                xp.bitwise_or(carry, t, out=carry)            # carry = ab | (a ^ b) c
                for used in (t, a, b, c):
                    scratch.give(used)
            else:
                a, b = queue.pop(0), queue.pop(0)
                total = scratch.take(width)
                xp.bitwise_xor(a, b, out=total)
                carry = scratch.take(width)
                xp.bitwise_and(a, b, out=carry)
                scratch.give(a)
                scratch.give(b)
            queue.append(total)
            levels[j + 1].append(carry)
        planes.append(queue[0] if queue else None)
        j += 1
    return planes


def _greater_than(planes: list, threshold: int, out, scratch: _Scratch, width: int) -> None:
    """``out`` = bit mask of positions whose count (bit-sliced ``planes``) exceeds
    ``threshold``. Most significant plane first: greater |= equal & plane where the threshold
    bit is 0; equal narrows to positions matching the threshold so far."""
    xp = np if isinstance(out, np.ndarray) else torch
    n_planes = max(len(planes), threshold.bit_length())
    equal = scratch.take(width)
    spare = scratch.take(width)
    first = True
    for j in reversed(range(n_planes)):
        plane = planes[j] if j < len(planes) else None
        if plane is None:  # an all-zero plane: no count can match a set threshold bit here
            if (threshold >> j) & 1:
                break
            continue
        if first:
            # Everything is equal above the top plane: start from it directly.
            if (threshold >> j) & 1:
                out[...] = 0
                equal[...] = plane
            else:
                out[...] = plane
                xp.bitwise_not(plane, out=equal)
            first = False
        elif (threshold >> j) & 1:
            xp.bitwise_and(equal, plane, out=equal)
        else:
            xp.bitwise_and(equal, plane, out=spare)
            xp.bitwise_or(out, spare, out=out)
            xp.bitwise_not(plane, out=spare)
            xp.bitwise_and(equal, spare, out=equal)
    if first:
        out[...] = 0
    scratch.give(equal)
    scratch.give(spare)


def majority_vote(packed: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Majority vote of M packed sign tensors, computed on the packed words.

    ``packed``: uint8 [M, nbytes] (or M uint8 tensors of nbytes each), nbytes a multiple of 8.
    Returns uint8 [nbytes]: bit set iff more than ``M // 2`` inputs have it set (the tie rule
    of the module docstring).

    Step 1 counts the set bits of each position with a bit-sliced carry-save adder tree
    (``_count_planes``); step 2 compares the count with ``M // 2`` (``_greater_than``). On the
    CPU both run in numpy over blocks of words that stay in cache (one pass over the inputs
    from memory); on a GPU in torch over whole vectors.
    """
    words = _as_word_rows(packed)
    m, n_words = len(words), words[0].numel()
    device = words[0].device
    result = torch.empty(n_words, dtype=torch.int64, device=device)
    if m == 1:
        result.copy_(words[0])
        return result.view(torch.uint8)
    kernels = _compiled_kernels() if device.type == "cpu" else None
    if kernels is not None:
        kernels.majority_vote_words([w.numpy() for w in words], result.numpy())
    elif device.type == "cpu":
        rows, out = [w.numpy() for w in words], result.numpy()
        block = min(_VOTE_BLOCK_WORDS, max(n_words, 1))
        _vote_words(rows, out, block, lambda n: np.empty(n, dtype=np.int64))
    else:
        _vote_words(words, result, max(n_words, 1),
                    lambda n: torch.empty(n, dtype=torch.int64, device=device))
    return result.view(torch.uint8)


def _vote_words(rows: list, out, block: int, make) -> None:
    """Majority of the word vectors ``rows`` (numpy arrays or torch tensors) into ``out``,
    ``block`` words at a time, with scratch buffers from ``make(size)``."""
    scratch = _Scratch(block, make)
    n_words = len(out)
    for start in range(0, n_words, block):
        stop = min(start + block, n_words)
        planes = _count_planes([r[start:stop] for r in rows], scratch, stop - start)
        _greater_than(planes, len(rows) // 2, out[start:stop], scratch, stop - start)
        for plane in planes:
            if plane is not None:
                scratch.give(plane)


def shard_bounds(d: int, num_shards: int) -> list[tuple[int, int]]:
    """Split ``range(d)`` into ``num_shards`` contiguous slices whose starts are multiples of 64,
    so that each slice packs into whole words and the packed slices concatenate to the packed
    whole. Returns ``[(start, stop), ...]``."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be >= 1")
    n_words = (d + WORD_BITS - 1) // WORD_BITS
    if num_shards > max(n_words, 1):
        raise ValueError(f"num_shards={num_shards} exceeds the {n_words} words of d={d}")
    edges = [min(d, WORD_BITS * (n_words * k // num_shards)) for k in range(num_shards + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def gradient_density(v: torch.Tensor) -> float:
    """phi(v) = |v|_1^2 / (d |v|_2^2), in (0, 1]: 1 for a fully dense vector (all |v_i| equal),
    1/d for a one-hot one. Returns nan for the zero vector."""
    flat = v.detach().reshape(-1).double()
    l2sq = float(flat.square().sum())
    if l2sq == 0.0:
        return float("nan")
    return float(flat.abs().sum()) ** 2 / (flat.numel() * l2sq)


def signal_to_noise(samples: torch.Tensor) -> torch.Tensor:
    """Per-coordinate SNR ``|mean| / std`` from stochastic gradient samples [n, d] (n >= 2).

    ``std`` is the unbiased sample standard deviation of one sample; coordinates with zero
    spread get ``inf`` (or ``nan`` if their mean is zero too)."""
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"samples must be [n >= 2, d], got {tuple(samples.shape)}")
    x = samples.detach().double()
    return (x.mean(0).abs() / x.std(0, unbiased=True)).float()


def fraction_above_critical_snr(snr: torch.Tensor) -> float:
    """Fraction of coordinates with SNR above the critical 2/sqrt(3) of Theorem 1."""
    return float((snr > CRITICAL_SNR).float().mean())
