"""Compiled CPU kernels (numba) for ``raysign.signs``: pack, unpack and the majority vote.

Same conventions as ``raysign/signs.py`` (bit = x < 0, least significant bit first, zero tail
bits, tie gives +1). Imported lazily by ``signs.py``; where numba is missing, ``signs.py``
falls back to its numpy path with a warning.

The unpack writes outputs bigger than the cache with streaming (non-temporal) stores of whole
cache lines (``unpack_words_streaming``): a plain store reads its line from memory before
writing it, twice the memory traffic of the write alone.

The vote runs a small program planned in Python (``vote_program``): the carry-save adder tree of
``signs._count_planes`` as fused full / half adders, one pass over a cache-sized block per adder
(numpy needs five passes and three temporaries per full adder), then the bit-sliced comparison
with ``M // 2`` written straight into the output. The M inputs are read by address, so separate
tensors are voted without stacking them into one copy.
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

FULL_ADDER, HALF_ADDER = 0, 1
# Words per block: the few scratch planes of one block stay in L1/L2 cache.
VOTE_BLOCK_WORDS = 2048


@intrinsic
def _int64_pointer(typingctx, address):
    """An int64* from an integer address (numba has no cast for it)."""
    result = types.CPointer(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(result))

    return result(types.intp), codegen


@njit(cache=True, nogil=True)
def _words(addresses, i, m, start, width):
    """Source ``i``: input row ``i`` (advanced to word ``start``) or scratch slot ``i - m``."""
    offset = start * 8 if i < m else 0
    return carray(_int64_pointer(addresses[i] + offset), width)


@njit(cache=True, nogil=True)
def vote_words(addresses, m, n_words, program, plane_ids, threshold, out, block):
    """Majority of ``m`` int64 word vectors into ``out`` [n_words].

    ``addresses``: int64 [m + slots], the inputs' data addresses then the scratch slots'
    (each ``block`` words). ``program``: int64 [n, 6] rows (op, a, b, c, sum, carry) of source
    ids. ``plane_ids``: the source holding count bit j (-1: all zero)."""
    for start in range(0, n_words, block):
        width = min(block, n_words - start)
        for step in range(program.shape[0]):
            op, a, b, c, s, cy = program[step]
            va = _words(addresses, a, m, start, width)
            vb = _words(addresses, b, m, start, width)
            vs = _words(addresses, s, m, start, width)
            vcy = _words(addresses, cy, m, start, width)
            if op == FULL_ADDER:
                vc = _words(addresses, c, m, start, width)
                for w in range(width):
                    x, y, z = va[w], vb[w], vc[w]
                    t = x ^ y
                    vs[w] = t ^ z
                    vcy[w] = (x & y) | (t & z)
            else:
                for w in range(width):
                    x, y = va[w], vb[w]
                    vs[w] = x ^ y
                    vcy[w] = x & y
        # Count > threshold, most significant plane first (as signs._greater_than); ``gt`` is
        # the output block, ``eq`` the last scratch slot.
        gt = out[start:start + width]
        eq = _words(addresses, addresses.shape[0] - 1, m, start, width)
        first = True
        for j in range(plane_ids.shape[0] - 1, -1, -1):
            ones = (1 << (j + 1)) - 1
            if threshold & ones == ones:
                break  # the threshold's bits j..0 are all 1: no lower plane can add to gt
            bit = (threshold >> j) & 1
            if plane_ids[j] < 0:
                if bit:
                    break
                continue
            p = _words(addresses, plane_ids[j], m, start, width)
            if first:
                for w in range(width):
                    if bit:
                        gt[w] = 0
                        eq[w] = p[w]
                    else:
                        gt[w] = p[w]
                        eq[w] = ~p[w]
                first = False
            elif bit:
                for w in range(width):
                    eq[w] &= p[w]
            else:
                for w in range(width):
                    e, q = eq[w], p[w]
                    gt[w] |= e & q
                    eq[w] = e & ~q
        if first:
            gt[:] = 0


@functools.lru_cache(maxsize=64)
def vote_program(m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Plan the adder tree for ``m`` inputs (ids 0..m-1; scratch slots m, m+1, ...).

    Returns (program [n, 6], plane_ids, slots): the same tree as ``signs._count_planes``, with
    the planes needed for ``threshold.bit_length()`` and one spare slot for the comparison."""
    free: list[int] = []
    slots = 0

    def take() -> int:
        nonlocal slots
        if not free:
            free.append(m + slots)
            slots += 1
        return free.pop()

    def give(i: int) -> None:
        if i >= m:
            free.append(i)

    program = []
    levels: list[list[int]] = [list(range(m))]
    planes = []
    j = 0
    while j < len(levels):
        queue = levels[j]
        while len(queue) >= 2:
            if j + 1 == len(levels):
                levels.append([])
            if len(queue) >= 3:
                a, b, c = queue.pop(0), queue.pop(0), queue.pop(0)
                total, carry = take(), take()
                program.append((FULL_ADDER, a, b, c, total, carry))
                for used in (a, b, c):
                    give(used)
            else:
                a, b = queue.pop(0), queue.pop(0)
                total, carry = take(), take()
                program.append((HALF_ADDER, a, b, a, total, carry))
                give(a)
                give(b)
            queue.append(total)
            levels[j + 1].append(carry)
        planes.append(queue[0] if queue else -1)
        j += 1
    n_planes = max(len(planes), (m // 2).bit_length())
    plane_ids = np.array(planes + [-1] * (n_planes - len(planes)), dtype=np.int64)
    slots += 1  # the comparison's ``eq``
    return np.array(program, dtype=np.int64).reshape(-1, 6), plane_ids, slots


def majority_vote_words(rows: list[np.ndarray], out: np.ndarray) -> None:
    """Majority of the int64 word vectors ``rows`` (M >= 2, 1-D, C-contiguous) into ``out``."""
    m, n_words = len(rows), out.shape[0]
    program, plane_ids, slots = vote_program(m)
    block = max(1, min(VOTE_BLOCK_WORDS, n_words))
    scratch = np.empty((slots, block), dtype=np.int64)
    addresses = np.array([r.ctypes.data for r in rows]
                         + [scratch[k].ctypes.data for k in range(slots)], dtype=np.int64)
    vote_words(addresses, m, n_words, program, plane_ids, m // 2, out, block)


@njit(cache=True, nogil=True)
def pack_words(x, out_words):
    """Bit k of word w is ``x[64 w + k] < 0``; bits past ``x.size`` are 0. ``x`` fp32/fp64."""
    d = x.shape[0]
    full = d // 64
    for w in range(full):
        word = np.int64(0)
        base = 64 * w
        for k in range(64):
            word |= np.int64(x[base + k] < 0) << k
        out_words[w] = word
    if full < out_words.shape[0]:
        word = np.int64(0)
        for k in range(d - 64 * full):
            word |= np.int64(x[64 * full + k] < 0) << k
        out_words[full] = word


def unpack_words(words, d, positive, negative, out):
    """``out[i]`` = ``negative`` if bit i of the int64 ``words`` is set else ``positive``, for
    float32 / float64 [d] ``out``: streaming stores from ``STREAM_MIN_BYTES`` on, plain below."""
    # The streaming kernel writes whole cache lines from the data pointer on: contiguous only.
    if d * out.itemsize >= STREAM_MIN_BYTES and out.strides[0] == out.itemsize:
        unpack_words_streaming(words, d, positive, negative, out)
    else:
        unpack_words_cached(words, d, positive, negative, out)


@njit(cache=True, nogil=True)
def unpack_words_cached(words, d, positive, negative, out):
    """``unpack_words`` with plain stores: the output stays in cache for its reader."""
    full = d // 64
    for w in range(full):
        word = words[w]
        base = 64 * w
        for k in range(64):
            out[base + k] = negative if (word >> k) & 1 else positive
    for i in range(64 * full, d):
        out[i] = negative if (words[full] >> (i - 64 * full)) & 1 else positive


# Unpacks writing at least this many bytes use streaming stores. A plain store first reads its
# cache line from memory (read-for-ownership); a streaming store does not, but it also leaves
# nothing in cache for the output's reader. Measured on the 2-core VM (load 9), streamed
# against plain: unpack then one read of the output 1.5x the time up to 24 MiB (the output
# still sat in the L3 share the core gets), 1.15x at 28-32 MiB, 0.90x at 48 MiB, 0.82x at
# 64 MiB; the unpack alone 1.05x up to 32 MiB, 0.77x at 48 MiB, 0.36x at 64 MiB and more
# (0.35x already at 32 MiB in a run where the other tenants held more of the L3). DDP's
# default 25 MB buckets stay below.
STREAM_MIN_BYTES = 48 << 20
# Bytes per streaming store: one cache line, one AVX-512 register.
STREAM_BYTES = 64


@intrinsic
def _shift_right_logical(typingctx, x, shift):
    """``x >> shift`` filling with zeros (numba's ``>>`` on int64 copies the sign bit)."""
    def codegen(context, builder, signature, args):
        return builder.lshr(*args)

    return types.int64(types.int64, types.int64), codegen


@intrinsic
def _stream_signs(typingctx, out, i, bits, positive, negative):
    """One streaming (non-temporal) store of ``STREAM_BYTES`` to ``out[i:]``, which must be
    ``STREAM_BYTES``-aligned: element ``i + k`` is ``negative`` if bit k of ``bits`` is set
    else ``positive``. LLVM emits it for the CPU numba targets: one vmovntps zmm with
    AVX-512, two ymm with AVX, four movntps xmm on baseline x86-64 (SSE2, no AVX); other
    architectures get their own non-temporal store or a plain one."""
    lanes = STREAM_BYTES // (out.dtype.bitwidth // 8)
    signature = types.void(out, types.intp, types.int64, out.dtype, out.dtype)

    def codegen(context, builder, signature, args):
        array, i, bits, positive, negative = args
        vector = ir.VectorType(context.get_value_type(signature.args[0].dtype), lanes)
        data = context.make_array(signature.args[0])(context, builder, array).data
        address = builder.bitcast(builder.gep(data, [i]), vector.as_pointer())
        mask = builder.bitcast(builder.trunc(bits, ir.IntType(lanes)),
                               ir.VectorType(ir.IntType(1), lanes))
        every_lane = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

        def splat(value):
            first = builder.insert_element(ir.Constant(vector, ir.Undefined), value,
                                           ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(first, ir.Constant(vector, ir.Undefined), every_lane)

        store = builder.store(builder.select(mask, splat(negative), splat(positive)), address,
                              align=STREAM_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata(
            [ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _store_fence(typingctx):
    """Order the streaming stores before every later store (they are weakly ordered): sfence
    on x86, a sequentially consistent fence elsewhere."""
    def codegen(context, builder, signature, args):
        if llvm.get_process_triple().startswith(("x86_64", "i386", "i686")):
            sfence = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(sfence, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def unpack_words_streaming(words, d, positive, negative, out):
    """``unpack_words`` with streaming stores of whole cache lines: plain stores until ``out``
    is ``STREAM_BYTES``-aligned, then 64 elements per step, then the plain tail."""
    size = out.itemsize
    lanes = STREAM_BYTES // size
    address = out.ctypes.data
    # An output off its element size's alignment (a numpy view can be; torch's are not) never
    # reaches a cache-line boundary: all plain stores.
    head = d if address % size else min(d, (-address % STREAM_BYTES) // size)
    for i in range(head):
        out[i] = negative if (words[i >> 6] >> (i & 63)) & 1 else positive
    # Element i is bit ``shift`` of word ``i >> 6`` at every step (i advances by 64).
    shift = head & 63
    i = head
    while i + 64 <= d:
        w = i >> 6
        window = words[w]
        if shift:
            window = _shift_right_logical(window, shift) | (words[w + 1] << (64 - shift))
        for k in range(0, 64, lanes):
            _stream_signs(out, i + k, _shift_right_logical(window, k), positive, negative)
        i += 64
    _store_fence()
    for j in range(i, d):
        out[j] = negative if (words[j >> 6] >> (j & 63)) & 1 else positive


@intrinsic
def _fma32(typingctx, a, b, c):
    """``a * b + c`` in float32 rounded once (llvm.fma), as torch's vectorised
    ``add_(other, alpha=...)`` computes it on CPU with ATen's AVX2 / AVX512 kernels (at
    ``ATEN_CPU_CAPABILITY=default`` torch rounds twice); ``raysign.signsgd.replay`` models the
    same."""
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return signature, codegen


@njit(cache=True, nogil=True)
def momentum_pack_words(g, m, beta, alpha, out_words):
    """Signum's step 2 and the pack of step 3 in one pass over float32 [d] ``g`` and ``m``:
    ``m <- alpha g + beta m`` (``beta m`` rounded to float32, then one fused multiply-add, as
    ``m.mul_(beta).add_(g, alpha=alpha)``), and bit k of word w is ``m[64 w + k] < 0`` (bits
    past d are 0). ``beta``, ``alpha``: float32. Returns whether every new m is finite."""
    d = g.shape[0]
    bad = False
    for w in range(-(-d // 64)):
        base = 64 * w
        n = min(64, d - base)
        # Two loops over the 64 entries (they stay in L1): the multiply-adds vectorise.
        for k in range(n):
            v = _fma32(alpha, g[base + k], beta * m[base + k])
            m[base + k] = v
            bad |= (v - v) != 0  # NaN: v is infinite or NaN
        word = np.int64(0)
        for k in range(n):
            word |= np.int64(m[base + k] < 0) << k
        out_words[w] = word
    return not bad


@njit(cache=True, nogil=True)
def apply_sign_words(words, d, x, decay, positive, negative):
    """Step 4 on float32 [d] ``x`` in one pass: ``x[i] <- x[i] decay - v`` with ``v`` =
    ``negative`` where bit i of the words is set else ``positive`` (two roundings, as
    ``x.mul_(decay).sub_(v)``; ``decay`` 1 skips the multiply). ``decay``, ``positive``,
    ``negative``: float32."""
    full = d // 64
    scaled = decay != 1
    for w in range(full + 1):
        base = 64 * w
        n = min(64, d - base)
        if n <= 0:
            break
        word = words[w]
        for k in range(n):
            v = negative if (word >> k) & 1 else positive
            if scaled:
                x[base + k] = x[base + k] * decay - v
            else:
                x[base + k] = x[base + k] - v
