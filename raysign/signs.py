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
from collections.abc import Sequence

import torch

WORD_BYTES = 8
WORD_BITS = 64
CRITICAL_SNR = 2.0 / math.sqrt(3.0)

# Elements per block when packing / unpacking: temporaries stay a few MB, never the size of
# the fp32 gradient.
_BLOCK = 1 << 20
# Words per block in the vote: M input rows plus the counter planes stay in L2 cache.
_VOTE_BLOCK_WORDS = 1 << 14
# Multiplying eight 0/1 bytes (read as one little-endian int64) by this constant moves byte k's
# bit to bit 56 + k with no carries, so ``(v * _GATHER) >> 56`` is the packed byte.
_GATHER = 0x0102040810204080


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
    if not (x.is_floating_point()):
        raise TypeError(f"pack_signs needs a floating-point tensor, got dtype={x.dtype}")
    flat = x.reshape(-1)
    d = flat.numel()
    nbytes = packed_nbytes(d)
    if out is None:
        out = torch.empty(nbytes, dtype=torch.uint8, device=x.device)
    elif out.dtype != torch.uint8 or out.numel() != nbytes or out.device != x.device:
        raise ValueError(
            f"out must be uint8 with {nbytes} elements on {x.device}, "
            f"got {out.dtype} with {out.numel()} on {out.device}"
        )
    for start in range(0, d, _BLOCK):
        block = flat[start : start + _BLOCK]
        negative = block < 0
        n = negative.numel()
        if n % 8:
            negative = torch.cat([negative, negative.new_zeros(8 - n % 8)])
        eight = negative.view(torch.uint8).view(torch.int64)
        packed = ((eight * _GATHER) >> 56) & 0xFF
        out[start // 8 : start // 8 + packed.numel()] = packed.to(torch.uint8)
    # The padding bytes of the last word: +1.
    out[(d + 7) // 8 :] = 0
    return out


def _sign_table(scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[256, 8] table: row b holds the 8 signs (times ``scale``) encoded by byte b."""
    bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
    return (scale * (1 - 2 * bits)).to(dtype=dtype, device=device)


def unpack_signs(
    packed: torch.Tensor,
    d: int,
    *,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The ``d`` signs in ``packed`` as ``+scale`` / ``-scale`` values of ``dtype``, shape [d]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    if packed.numel() != packed_nbytes(d):
        raise ValueError(f"packed has {packed.numel()} bytes; {d} signs need {packed_nbytes(d)}")
    table = _sign_table(scale, dtype, packed.device)
    if out is None:
        out = torch.empty(d, dtype=dtype, device=packed.device)
    for start in range(0, d, _BLOCK):
        stop = min(start + _BLOCK, d)
        chunk = packed[start // 8 : (stop + 7) // 8].to(torch.int32)
        values = table.index_select(0, chunk).reshape(-1)
        out[start:stop] = values[: stop - start]
    return out


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


def majority_vote(packed: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Majority vote of M packed sign tensors, computed on the packed words.

    ``packed``: uint8 [M, nbytes] (or M uint8 tensors of nbytes each), nbytes a multiple of 8.
    Returns uint8 [nbytes]: bit set iff more than ``M // 2`` inputs have it set (the tie rule
    of the module docstring).
    """
    words = _as_word_rows(packed)
    m, n_words = len(words), words[0].numel()
    threshold = m // 2
    n_planes = max(1, m.bit_length())
    device = words[0].device
    result = torch.empty(n_words, dtype=torch.int64, device=device)
    block = min(_VOTE_BLOCK_WORDS, max(n_words, 1))
    planes = [torch.empty(block, dtype=torch.int64, device=device) for _ in range(n_planes)]
    carry = torch.empty_like(planes[0])
    spare = torch.empty_like(planes[0])
    for start in range(0, n_words, block):
        stop = min(start + block, n_words)
        rows = [word[start:stop] for word in words]
        w = stop - start
        count = [p[:w] for p in planes]
        count[0].copy_(rows[0])
        for p in count[1:]:
            p.zero_()
        c, s = carry[:w], spare[:w]
        # Step 1: add the M bit vectors into the bit-sliced counter (ripple-carry adder).
        # After i inputs the count is at most i, so only bit_length(i) planes can change.
        for i in range(1, m):
            c.copy_(rows[i])
            depth = (i + 1).bit_length()
            for j in range(depth):
                torch.bitwise_and(count[j], c, out=s)
                count[j].bitwise_xor_(c)
                c, s = s, c
        # Step 2: compare the count with the threshold, most significant plane first:
        # greater |= equal_so_far & plane where the threshold bit is 0; equal narrows.
        greater = result[start:stop]
        greater.zero_()
        equal = c.fill_(-1)
        for j in reversed(range(n_planes)):
            if (threshold >> j) & 1:
                equal.bitwise_and_(count[j])
            else:
                torch.bitwise_and(equal, count[j], out=s)
                greater.bitwise_or_(s)
                equal.bitwise_and_(count[j].bitwise_not())
    return result.view(torch.uint8)


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
