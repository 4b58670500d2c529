"""The worker side of a round's messages: one encode path and one apply path.

Steps 3 and 4 of Algorithm 1 (Bernstein et al., ICLR 2019) as they touch the wire
(``raysign.wire``), for one vote shard [start, stop) of the parameters:

2-3. ``encode_shard``: take the momentum step ``m <- beta m + (1 - beta) g`` on the slice
   and pack ``sign(m_i)`` straight into the body of a new message, in one pass
   (``raysign.signs.momentum_and_pack``; or copy the fp32 values, for the mean aggregators),
   then write the sender's MAC;
4. ``apply_vote``: validate the voted message for (step, shard) and apply it to the slice of
   the parameters, ``x <- x (1 - lr lambda) - lr V``, in one pass
   (``raysign.signs.subtract_signs``); ``decode_vote`` only validates and unpacks.

Before step 2 a worker checks its gradient with ``all_finite`` (a non-finite one abstains and
leaves its momentum untouched).

Both the trainer's workers (``raysign.actors.worker.SignWorker``) and the communication
benchmark's (``raysign.actors.comm_bench.CommWorker``) call these functions, with a momentum
and a parameter vector each, so the benchmark's round times describe the trainer's
worker-side work. None allocates more than the message itself on CPU: no packed temporary,
no unpacked temporary.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from raysign import wire
from raysign.signs import momentum_and_pack, pack_signs, subtract_signs, unpack_signs


def read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a (possibly read-only, object-store) array that is never written to
    (torch warns on a read-only array; the views made here are only read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def all_finite(x: torch.Tensor) -> bool:
    """Whether every entry of ``x`` is finite, in one pass without a temporary of ``x``'s
    size: torch's min / max propagate NaN, and any infinity is the min or the max. (A
    ``torch.isfinite(x).all()`` allocates a bool [d] every round.)"""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x.detach().reshape(-1))
    return bool(torch.isfinite(low) & torch.isfinite(high))  # one device sync


def encode_shard(kind: int, values: torch.Tensor, *, sender: int, step: int, shard: int,
                 flags: int = 0, key: bytes | None = None, momentum: torch.Tensor | None = None,
                 beta: float = 0.0) -> np.ndarray:
    """Worker ``sender``'s message for vote shard ``shard`` of ``step``: the signs of
    ``values`` [n] (any float dtype, CPU or CUDA) packed at one bit each (``KIND_SIGNS``) or
    their fp32 values (``KIND_FP32``), written into the body of the new message; then its MAC
    under ``key`` (None: unsigned). Returns the message, a 1-D uint8 array.

    ``momentum``: the sender's fp32 momentum slice [n]; given, ``values`` is the gradient
    slice, the momentum step ``m <- beta m + (1 - beta) g`` is taken in place first (fused
    with the pack for signs), and the new m is sent; a non-finite m marks the message as
    abstaining."""
    msg = wire.new_message(kind, sender=sender, step=step, shard=shard,
                           length=values.numel(), flags=flags)
    body = torch.from_numpy(wire.body(msg))
    values = values.detach()
    finite = True
    if momentum is not None and kind == wire.KIND_SIGNS and momentum.device.type == "cpu":
        finite = momentum_and_pack(values, momentum, beta, out=body)
    else:
        if momentum is not None:
            values = momentum.mul_(beta).add_(values, alpha=1.0 - beta)
            finite = all_finite(values)
        if kind == wire.KIND_SIGNS:
            if values.device.type == "cpu":
                pack_signs(values, out=body)
            else:  # packed on the device, then one copy of the packed bytes to the host
                body.copy_(pack_signs(values))
        else:
            body.view(torch.float32).copy_(values)
    if not finite:
        wire.set_flags(msg, flags | wire.FLAG_ABSTAIN)
    if key is not None:
        wire.sign_message(msg, key)
    return msg


def decode_vote(voted: np.ndarray, out: torch.Tensor, *, kind: int, step: int, shard: int,
                scale: float = 1.0) -> bool:
    """Validate the vote actor's message ``voted`` for (``step``, ``shard``) and write its
    update into ``out`` [n] (the target slice, on any device): the voted signs as
    ``+scale`` / ``-scale`` in ``out``'s dtype, or the fp32 values (``scale`` unused).
    Returns False, leaving ``out`` untouched, if the vote abstained (no valid message).
    Raises ``raysign.wire.MessageError`` if the message is not that vote's."""
    header, body = wire.read_message(voted, kind=kind, step=step, shard=shard,
                                     length=out.numel())
    if header.abstains:
        return False
    packed = read_only_tensor(body)
    if kind == wire.KIND_SIGNS:
        unpack_signs(packed.to(out.device), out.numel(), scale=scale, dtype=out.dtype, out=out)
    else:
        out.copy_(packed.view(torch.float32))
    return True


def apply_vote(voted: np.ndarray, params: torch.Tensor, *, kind: int, step: int, shard: int,
               lr: float, weight_decay: float = 0.0,
               scratch: torch.Tensor | None = None) -> bool:
    """Validate the vote actor's message ``voted`` for (``step``, ``shard``) and take step 4
    of Algorithm 1 on ``params`` [n] (the shard's slice of the parameters, fp32):
    ``x <- x (1 - lr lambda) - lr V`` with V the voted signs, or the fp32 mean. Signs on CPU
    in one pass (``raysign.signs.subtract_signs``); otherwise unpacked into ``scratch`` [n]
    (or a temporary) first. Returns False, leaving ``params`` untouched, if the vote
    abstained. Raises ``raysign.wire.MessageError`` if the message is not that vote's."""
    decay = 1.0 - lr * weight_decay if weight_decay else 1.0
    if kind == wire.KIND_SIGNS and params.device.type == "cpu":
        header, body = wire.read_message(voted, kind=kind, step=step, shard=shard,
                                         length=params.numel())
        if header.abstains:
            return False
        subtract_signs(read_only_tensor(body), params, scale=lr, decay=decay)
        return True
    update = torch.empty_like(params) if scratch is None else scratch
    signs = kind == wire.KIND_SIGNS
    # Signs are unpacked times lr; the fp32 mean is scaled by lr as it is applied.
    if not decode_vote(voted, update, kind=kind, step=step, shard=shard,
                       scale=lr if signs else 1.0):
        return False
    if decay != 1.0:
        params.mul_(decay)
    params.sub_(update, alpha=1.0 if signs else lr)
    return True
