"""Majority vote as a DDP communication hook: signSGD / Signum for any PyTorch training loop.

Algorithm 1 of Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with majority vote is
communication efficient and fault tolerant" (ICLR 2019), placed where DDP users already plug
gradient compression in (``model.register_comm_hook(state, hook)``, as PyTorch's
``powerSGD_hook`` and ``fp16_compress_hook``), so torchrun, Ray Train's ``TorchTrainer``,
Lightning and Accelerate carry it unchanged::

    model = DistributedDataParallel(net)
    state = SignumVoteState(momentum=0.9, module=model)
    model.register_comm_hook(state, signum_vote_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, weight_decay=1e-4)

Each rank sends its momentum's signs at one bit per parameter; every rank receives the
majority vote ``V = sign(sum_i sign(m_i))`` as the gradient, exactly +-1 (DDP divides nothing
when a hook is registered), and the plain SGD step is Algorithm 1's update
``x <- x - lr (V + weight_decay x)``. Packing, the vote and unpacking are the shared kernels of
``raysign.signs`` (its sign-of-zero, tie, bit-order and tail rules); momentum, the scaled sign
and error feedback are the pieces of ``raysign.optim``; attacks those of
``raysign.signsgd.attacks``. Pure ``torch.distributed``: no Ray here.
"""

# No ``from __future__ import annotations``: DDP's register_comm_hook compares the hook's
# annotations with dist.GradBucket and Future[Tensor] as objects, not strings.
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from raysign import optim
from raysign.signs import WORD_BYTES, majority_vote, pack_signs, unpack_signs
from raysign.signsgd.attacks import ATTACKS, make_attack

__all__ = ["TOPOLOGIES", "SignumVoteState", "signum_vote_hook"]

TOPOLOGIES = ("allgather", "sharded")


class SignumVoteState:
    """Configuration and per-parameter state of ``signum_vote_hook``.

    Args:
        process_group: the group to vote in; ``None`` is the default (world) group.
        momentum: Signum's beta in [0, 1); 0 is signSGD (each rank sends the sign of its
            gradient).
        topology: how the packed signs travel, one of ``TOPOLOGIES``:

            - ``"allgather"``: every rank gathers all M packed messages and votes locally
              ((M - 1) d / 8 bytes received per rank and step). No rank trusts another's
              vote, so an honest rank's result stays right whatever the others compute.
            - ``"sharded"``: an all-to-all sends shard k of every message to rank k, rank k
              votes its shard, and an all-to-all of the voted shards gives everyone the
              whole vote (about 2 (M - 1) / M d / 8 bytes per rank, at most 2 d / 8 whatever
              M). Rank k is trusted for the vote of shard k.
        scaled: send ``mean(|m_p|) sign(m_p)`` per parameter tensor (``raysign.optim``'s
            scaled sign): the signs still travel at one bit each, plus one fp32 scale per
            parameter; the gradient becomes ``mean_i(scale_i) V`` per parameter.
        error_feedback: EF-signSGD (``raysign.optim.error_feedback`` around the scaled sign,
            as Karimireddy et al. 2019): rank i sends ``C(m_i + e_i)`` and keeps
            ``e_i <- m_i + e_i - C(m_i + e_i)``. The error is kept in gradient units (as
            PyTorch's PowerSGD hook keeps it), which equals the optimizer form with the
            learning rate folded in while the learning rate is constant.
        module: the model (or its DDP wrapper), only to name the parameters in
            ``state_dict()`` / ``load_state_dict()``.
        byzantine_ranks: ranks (in ``process_group``) whose outgoing message is replaced by
            ``attack`` applied to their momentum, for experiments; empty by default.
        attack: one of ``raysign.signsgd.attacks.ATTACKS`` (``negate``, ``scaled_negate``,
            ``random``).
        attack_scale: ``scaled_negate``'s factor.
        seed: seeds the ``random`` attack's generator (with the rank).

    Momentum and error are kept per parameter (keyed by the parameter tensor itself), not per
    bucket: DDP rebuilds its buckets after the first iteration (and a new DDP wrapper, on
    resume, starts from its initial layout again), so a bucket index names different
    parameters over time, while a parameter is always itself.
    """

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        momentum: float = 0.9,
        topology: str = "allgather",
        *,
        scaled: bool = False,
        error_feedback: bool = False,
        module: nn.Module | None = None,
        byzantine_ranks: Iterable[int] = (),
        attack: str = "negate",
        attack_scale: float = 10.0,
        seed: int = 0,
    ):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} is outside the allowed range [0, 1)")
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology={topology!r} is not one of {list(TOPOLOGIES)}")
        if attack not in ATTACKS:
            raise ValueError(f"attack={attack!r} is not one of {list(ATTACKS)} (an omniscient "
                             f"attack needs the other ranks' messages before sending)")
        byzantine_ranks = frozenset(byzantine_ranks)
        bad = sorted(r for r in byzantine_ranks if not isinstance(r, int) or r < 0)
        if bad:
            raise ValueError(f"byzantine_ranks={sorted(byzantine_ranks, key=str)!r} holds "
                             f"{bad!r}; ranks are integers >= 0")
        self.process_group = process_group
        if dist.is_available() and dist.is_initialized():
            _check_ranks(byzantine_ranks, self.group().size())
        self.momentum = momentum
        self.topology = topology
        self.scaled = scaled or error_feedback
        self.error_feedback = error_feedback
        self.byzantine_ranks = byzantine_ranks
        self.attack = attack
        self.attack_scale = attack_scale
        self.seed = seed
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        self.module = module
        self._smooth = optim.momentum(momentum)
        sign = optim.scale_by_sign(scaled=True)
        self._compress = optim.error_feedback(sign) if error_feedback else sign
        self._attack = make_attack(attack, attack_scale)
        self._attack_generator: torch.Generator | None = None
        # Per parameter: Signum's momentum (absent when momentum == 0) and EF's state.
        self.momentum_of: dict[torch.Tensor, torch.Tensor] = {}
        self.error_of: dict[torch.Tensor, Any] = {}

    def group(self) -> dist.ProcessGroup:
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def attack_generator(self, rank: int) -> torch.Generator:
        """The ``random`` attack's generator of this rank, seeded on first use."""
        if self._attack_generator is None:
            self._attack_generator = torch.Generator().manual_seed(self.seed * 7919 + rank)
        return self._attack_generator

    def _named_parameters(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise ValueError("SignumVoteState needs module=<the model or its DDP wrapper> to "
                             "name parameters in state_dict() / load_state_dict()")
        return dict(self.module.named_parameters())

    def state_dict(self) -> dict[str, Any]:
        """Momentum and error feedback per parameter name, and the attack generator's state:
        everything the hook needs to continue bit-identically. Tensors only (on the CPU),
        so ``torch.load(weights_only=True)`` reads it."""
        named = self._named_parameters()
        state: dict[str, Any] = {"momentum": {}, "error": {}}
        for name, p in named.items():
            if p in self.momentum_of:
                state["momentum"][name] = self.momentum_of[p].detach().cpu().clone()
            if p in self.error_of:
                state["error"][name] = self.error_of[p][0].detach().cpu().clone()
        if self._attack_generator is not None:
            state["attack_generator"] = self._attack_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` onto this state's ``module`` (its parameters' devices)."""
        named = self._named_parameters()
        for kind in ("momentum", "error"):
            unknown = sorted(set(state.get(kind, {})) - set(named))
            if unknown:
                raise ValueError(f"state_dict {kind} names parameters {unknown[:3]!r} that the "
                                 f"module does not have (it has {sorted(named)[:3]!r}, ...)")
        self.momentum_of = {named[n]: t.to(named[n].device, named[n].dtype).clone()
                            for n, t in state.get("momentum", {}).items()}
        self.error_of = {named[n]: (t.to(named[n].device, named[n].dtype).clone(), None)
                         for n, t in state.get("error", {}).items()}
        if "attack_generator" in state:
            self._attack_generator = torch.Generator()
            self._attack_generator.set_state(state["attack_generator"])


def signum_vote_hook(
    state: SignumVoteState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    r"""Signum with majority vote (Bernstein et al., ICLR 2019, Algorithm 1) on one bucket.

    Algorithm 1, for worker i of M, and where each step happens here:

    1. ``g_i`` <- the stochastic gradient of the worker's mini-batch. DDP's backward pass has
       put it in ``bucket.buffer()`` (the bucket's parameters' gradients, flat, in the order
       of ``bucket.parameters()``).
    2. ``m_i <- beta m_i + (1 - beta) g_i``, per parameter (``raysign.optim.momentum``);
       a Byzantine rank replaces the message by ``attack(m_i)``; with ``scaled`` or
       ``error_feedback`` each parameter's message becomes its scaled sign (with EF's error
       added before and remembered after).
    3. Push ``sign(m_i)``: pack at one bit per parameter (``raysign.signs.pack_signs``) and
       exchange the packed words: all-gather them (``"allgather"``) or all-to-all them by
       shard (``"sharded"``); with a scaled sign, one fp32 scale per parameter travels too.
    4. ``V <- sign(sum_i sign(m_i))``: the vote on the packed words
       (``raysign.signs.majority_vote``: ties give +1); in ``"sharded"`` each rank votes its
       shard and a second all-to-all spreads the voted shards.
    5. The bucket's gradient <- ``V``, unpacked to exactly +-1 (times the ranks' mean scale
       per parameter with a scaled sign); DDP writes it to the parameters' ``.grad``.
    6. ``x <- x - lr (V + lambda x)``: the user's ``torch.optim.SGD(lr, weight_decay=lambda)``
       (no momentum in SGD: the momentum is step 2's, before the sign).

    Args:
        state: a ``SignumVoteState``.
        bucket: the DDP bucket (a flat 1-D gradient of float dtype on one device).

    Returns:
        A future holding the bucket's new gradient (the same tensor as ``bucket.buffer()``).

    Example::

        >>> state = SignumVoteState(momentum=0.9, topology="sharded", module=ddp_model)
        >>> ddp_model.register_comm_hook(state, signum_vote_hook)
    """
    group = state.group()
    world, rank = group.size(), group.rank()
    _check_ranks(state.byzantine_ranks, world)
    buffer = bucket.buffer()
    slices = _parameter_slices(bucket.parameters(), buffer.numel())

    # Steps 1-2: the bucket holds g_i; momentum per parameter, then attack / scaled sign.
    message = buffer.clone()
    if state.momentum > 0:
        for p, start, stop in slices:
            part = message[start:stop]
            m = state.momentum_of.get(p)
            if m is None:
                m = state._smooth.init(part)
            m, state.momentum_of[p] = state._smooth.update(part, m)
            part.copy_(m)
    if rank in state.byzantine_ranks:
        message = state._attack(message, state.attack_generator(rank))
    scales = _compress_in_place(state, message, slices) if state.scaled else None

    # Step 3: sign and pack (1 bit per parameter, padded to whole 64-bit words), exchange.
    packed = pack_signs(message)
    scale_bytes = _as_bytes(scales) if scales is not None else packed.new_empty(0)
    if state.topology == "allgather":
        return _allgather_vote(group, world, packed, scale_bytes, buffer, slices)
    return _sharded_vote(group, world, rank, packed, scale_bytes, buffer, slices)


def _check_ranks(byzantine_ranks: frozenset[int], world: int) -> None:
    outside = sorted(r for r in byzantine_ranks if r >= world)
    if outside:
        raise ValueError(f"byzantine_ranks={sorted(byzantine_ranks)!r} holds {outside!r}; the "
                         f"process group has ranks 0..{world - 1}")


def _parameter_slices(params: list[torch.Tensor], d: int) -> list[tuple[torch.Tensor, int, int]]:
    """``(parameter, start, stop)`` of each parameter's gradient in the flat bucket."""
    slices, start = [], 0
    for p in params:
        slices.append((p, start, start + p.numel()))
        start += p.numel()
    if start != d:
        raise ValueError(f"bucket of {d} gradients holds parameters of {start} elements in all; "
                         f"signum_vote_hook needs dense, unpadded buckets")
    return slices


def _compress_in_place(state: SignumVoteState, message: torch.Tensor,
                       slices: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
    """Each parameter's message -> its scaled sign (error feedback included); returns the
    scales, fp32 [P] on the message's device."""
    scales = torch.zeros(len(slices), dtype=torch.float32, device=message.device)
    for k, (p, start, stop) in enumerate(slices):
        part = message[start:stop]
        if state.error_feedback:
            ef = state.error_of.get(p)
            if ef is None:
                ef = state._compress.init(part)
            delta, state.error_of[p] = state._compress.update(part, ef)
        else:
            delta, _ = state._compress.update(part, None)
        part.copy_(delta)
        if stop > start:
            # Every |delta| is the scale: mean(|u|) times +-1 is exact.
            scales[k] = delta.abs().amax()
    return scales


def _as_bytes(scales: torch.Tensor) -> torch.Tensor:
    """fp32 scales as bytes, padded to whole 64-bit words so packed rows stay word-aligned."""
    padded = scales.new_zeros(-(-scales.numel() // 2) * 2)
    padded[: scales.numel()] = scales
    return padded.view(torch.uint8)


def _all_gather(output: torch.Tensor, tensor: torch.Tensor, group: dist.ProcessGroup):
    # torch 2.13 renames all_gather_into_tensor (deprecated there) to all_gather_single.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return gather(output, tensor, group=group, async_op=True).get_future()


def _allgather_vote(group, world, packed, scale_bytes, buffer, slices):
    """Step 3-5, ``"allgather"``: every rank receives all M messages and votes them."""
    row = torch.cat([packed, scale_bytes]) if scale_bytes.numel() else packed
    gathered = row.new_empty(world * row.numel())

    def vote(fut: torch.futures.Future) -> torch.Tensor:
        fut.wait()  # backends differ in what the future holds: read the output tensor
        rows = gathered.view(world, row.numel())
        voted = majority_vote(rows[:, : packed.numel()])
        return _decompress(voted, rows[:, packed.numel() :], buffer, slices)

    return _all_gather(gathered, row, group).then(vote)


def _sharded_vote(group, world, rank, packed, scale_bytes, buffer, slices):
    """Steps 3-5, ``"sharded"``: rank k receives shard k of every message, votes it, and
    sends the voted shard (and its own scales) to every rank. Shards are whole 64-bit words,
    split as ``raysign.signs.shard_bounds`` splits them, but empty shards are allowed (a
    bucket smaller than M words).

    The first exchange is waited for here, in the hook's thread: gloo and NCCL pair up
    collectives by the order each rank issues them, so the second one must be issued in the
    same order on every rank, which a callback thread does not guarantee. (On NCCL the wait
    only orders the GPU stream; the host goes on.)"""
    words = packed.numel() // WORD_BYTES
    shard = [WORD_BYTES * ((words * (k + 1)) // world - (words * k) // world)
             for k in range(world)]
    received = packed.new_empty(world * shard[rank])
    dist.all_to_all_single(received, packed, [shard[rank]] * world, shard, group=group)
    voted_shard = majority_vote(received.view(world, shard[rank]))

    own = torch.cat([voted_shard, scale_bytes]).repeat(world)
    sizes = [shard[k] + scale_bytes.numel() for k in range(world)]
    spread = packed.new_empty(sum(sizes))

    def assemble(fut: torch.futures.Future) -> torch.Tensor:
        fut.wait()  # backends differ in what the future holds: read the output tensor
        pieces = spread.split(sizes)
        voted = torch.cat([piece[: shard[k]] for k, piece in enumerate(pieces)])
        scale_rows = torch.stack([piece[shard[k] :] for k, piece in enumerate(pieces)])
        return _decompress(voted, scale_rows, buffer, slices)

    return dist.all_to_all_single(spread, own, sizes, [own.numel() // world] * world,
                                  group=group, async_op=True).get_future().then(assemble)


def _decompress(voted: torch.Tensor, scale_rows: torch.Tensor, buffer: torch.Tensor,
                slices: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
    """Step 5: the bucket's gradient <- V (exactly +-1), times the ranks' mean scale per
    parameter when scales travelled (``scale_rows``: uint8 [M, 4 P (+4)])."""
    d = buffer.numel()
    whole = -(-d // 8) * 8
    if whole == d:
        unpack_signs(voted, d, dtype=buffer.dtype, out=buffer)
    else:
        # unpack_signs reads a ragged last byte on the host; unpacking whole bytes keeps the
        # GPU path free of host round-trips.
        buffer.copy_(unpack_signs(voted, whole, dtype=buffer.dtype)[:d])
    if scale_rows.numel():
        scales = scale_rows.contiguous().view(torch.float32)[:, : len(slices)].mean(0)
        for k, (_, start, stop) in enumerate(slices):
            buffer[start:stop].mul_(scales[k])
    return buffer
