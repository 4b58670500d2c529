"""``VoteActor``: validates the workers' messages for its parameter slice and aggregates them.

One vote actor owns one contiguous slice ``[start, stop)`` of the parameters (S actors for S
vote shards). Each round (Algorithm 1 of Bernstein et al., ICLR 2019, server side):

1. read every worker's message for this shard and validate it (``raysign.wire.read_message``:
   type, kind, step, shard, length; with the workers' keys also the sender named in the
   header and the MAC under that sender's key; fp32 bodies must be finite); a bad payload or
   a worker that abstains (non-finite gradient) is counted and logged with the sender's rank,
   never crashes the round;
2. majority vote of the valid packed signs on the packed words (``raysign.signs``), or an
   fp32 aggregator of ``raysign.signsgd.aggregators`` (mean, median, trimmed mean, Krum, Multi-Krum,
   centered clipping, a ByzFL chain ``"byzfl:NNM+TrMean"`` or a user's callable named by
   its import path) over the valid fp32 messages stacked as float32 [n, d];
3. return one message with the result, which every worker fetches, and the vote's stats;
   ``stats["counted"]`` is the sorted list of the sender ranks whose message counted.

If no payload is valid the result message is flagged as an abstention and workers skip the
update of this slice for the round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray
import torch

from raysign import wire
from raysign.actors.drills import VoteDrills
from raysign.signs import majority_vote
from raysign.signsgd.exchange import read_only_tensor

log = logging.getLogger(__name__)


def keeps_state(aggregate: Any) -> bool:
    """Whether an aggregator carries its own state through ``state()`` / ``load_state(s)``
    (a ByzFL chain, or a user's aggregator with both methods)."""
    return all(callable(getattr(aggregate, name, None)) for name in ("state", "load_state"))


class VoteActor(VoteDrills):
    """The vote of one parameter slice (module docstring); its fault-injection drill
    (``crash_at``) comes from ``raysign.actors.drills.VoteDrills``."""

    def __init__(self, shard: int, start: int, stop: int, kind: int,
                 aggregate: Callable[[np.ndarray], np.ndarray] | None = None,
                 keys: Sequence[bytes] | None = None):
        self.shard, self.start, self.stop = shard, start, stop
        self.length = stop - start
        # Worker rank -> its MAC key, from the driver at start-up (None: messages unsigned).
        self.keys = None if keys is None else tuple(keys)
        self.reset(kind, aggregate)

    def reset(self, kind: int, aggregate: Callable[[np.ndarray], np.ndarray] | None,
              tag: int = 0) -> None:
        """Vote with another payload kind and aggregator (a benchmark grid reusing actors);
        ``tag`` names the configuration, so the driver can tell a restarted actor (tag 0,
        from its constructor) from one that already holds the current configuration."""
        self.kind = kind
        self.aggregate = aggregate
        self.rejected_total = 0
        self._tag = tag

    def tag(self) -> int:
        return self._tag

    def rejections(self) -> int:
        """Messages rejected since the last ``reset``, whatever the reason."""
        return self.rejected_total

    def state(self) -> dict[str, Any]:
        """The aggregator's state for checkpoints, and for the driver to reload into a
        restarted actor: centered clipping's center, or what an aggregator with ``state()`` /
        ``load_state(state)`` methods returns (a ByzFL chain's)."""
        if keeps_state(self.aggregate):
            return {"center": None, "aggregator": self.aggregate.state()}
        center = getattr(self.aggregate, "center", None)
        return {"center": None if center is None else torch.from_numpy(center.copy())}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put the aggregator back in ``state`` (a center of None and no ``aggregator``: the
        state before the first round)."""
        if keeps_state(self.aggregate):
            self.aggregate.load_state(state.get("aggregator"))
        elif hasattr(self.aggregate, "center"):
            center = state.get("center")
            self.aggregate.center = None if center is None else center.numpy().copy()

    def read(self, payload: Any, step: int, sender: int,
             authenticated: bool = False) -> tuple[wire.Header, np.ndarray]:
        """Validate worker ``sender``'s message for ``step`` (``wire.read_message``); with
        keys, the header must name ``sender`` and carry its MAC (``authenticated``: the MAC
        was already checked)."""
        identity: dict[str, Any] = {}
        if self.keys is not None:
            if not 0 <= sender < len(self.keys):
                raise wire.MessageError(f"sender {sender} has no key (ranks 0 to "
                                        f"{len(self.keys) - 1})")
            identity = {"sender": sender, "key": None if authenticated else self.keys[sender]}
        return wire.read_message(payload, kind=self.kind, step=step, shard=self.shard,
                                 length=self.length, **identity)

    def vote(self, step: int, *payloads: Any, senders: tuple[int, ...] | None = None,
             authenticated: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        """The vote of ``step`` over ``payloads``, sent by the worker ranks ``senders`` in
        that order (default: ranks 0, 1, ...); a rejection names the sender's rank.
        ``authenticated``: every payload's MAC was checked on arrival."""
        t_start = time.time()
        self.drill_vote(step)
        if senders is None:
            senders = tuple(range(len(payloads)))
        if len(senders) != len(payloads):
            raise ValueError(f"vote shard {self.shard} step {step}: {len(payloads)} payloads "
                             f"but senders={tuple(senders)}; give one rank per payload")
        valid, rejected, counted = [], [], []
        # Step 1: validate.
        for sender, payload in zip(senders, payloads, strict=True):
            try:
                header, body = self.read(payload, step, sender, authenticated)
            except wire.MessageError as err:
                rejected.append({"worker": sender, "reason": str(err)})
                continue
            if header.abstains:
                rejected.append({"worker": sender, "reason": "abstained (non-finite gradient)"})
                continue
            if self.kind == wire.KIND_FP32:
                values = body.view(np.float32)
                if not np.isfinite(values).all():
                    rejected.append({"worker": sender, "reason": "non-finite fp32 values"})
                    continue
                valid.append(values)
            else:
                valid.append(read_only_tensor(body).view(torch.int64))
            counted.append(sender)
        if rejected:
            self.rejected_total += len(rejected)
            log.warning("vote shard %d step %d: rejected %s", self.shard, step, rejected)
            self.drill_rejected(step, self.shard, rejected)
        # Step 2: aggregate.
        flags = 0 if valid else wire.FLAG_ABSTAIN
        out = wire.new_message(self.kind, sender=wire.VOTE_SENDER, step=step, shard=self.shard,
                               length=self.length, flags=flags)
        body = wire.body(out)
        if valid and self.kind == wire.KIND_SIGNS:
            rows = [row.view(torch.uint8) for row in valid]
            body[:] = majority_vote(rows).numpy()
        elif valid and self.aggregate is None:  # the plain mean, without a stacked copy
            total = valid[0].copy()
            for values in valid[1:]:
                total += values
            body.view(np.float32)[:] = total / np.float32(len(valid))
        elif valid:
            body.view(np.float32)[:] = self.aggregate(np.stack(valid))
        elif body.size:
            body[:] = 0
        t_end = time.time()
        return out, {"shard": self.shard, "t_vote_start": t_start, "t_vote_end": t_end,
                     "num_valid": len(valid), "rejected": rejected, "counted": sorted(counted)}


class _Round:
    """The messages of one step that a ``DirectVoteActor`` has received so far."""

    def __init__(self, senders: tuple[int, ...]):
        self.senders = senders  # the expected senders: only they join or close the round
        self.payloads: dict[int, Any] = {}
        self.done = asyncio.Event()
        self.result: tuple[np.ndarray, dict[str, Any]] | None = None
        self.answered: set[int] = set()  # the expected senders given ``result``
        self.rejected: list[dict[str, Any]] = []  # forged, corrupted or duplicate messages


class DirectVoteActor(VoteActor):
    """The same vote, with the direct transport: every worker sends its message for this shard
    straight to this actor (``submit``) and gets the voted message back as that call's return
    value, so the driver only starts the round and no payload goes through it or through the
    object store's location lookups. With Ray's ``max_direct_call_object_size`` above the
    message size (``raysign.actors.cluster.DIRECT_CALL_BYTES``) both ways travel inline in the gRPC
    call; below it Ray moves them through the object store of the sender's node.

    The vote runs when every expected sender's message is in, or after ``timeout`` seconds over
    the messages that came (a worker that died is left out, as in the object path). The driver
    reports a dead worker with ``drop``; that may reach this actor before a message the worker
    had already sent. Only the expected senders (the round's ``senders`` less the dropped
    ones) join or close a round: a dropped worker's late message is not counted, gets the
    round's result if the round is still held, and is refused once it is gone; it never opens
    a round of its own, so every worker applies the same vote.

    With the workers' keys, a message joins its round only if it is valid and its MAC
    verifies under the key of the sender it claims, and only the first such message of a
    sender counts: a forged or corrupted message, or a sender's second message, is logged
    with the sender it claims, counted among the round's rejections and answered with the
    round's result, without taking the sender's place (a sender with no valid message is
    left out at the timeout, as a dead one)."""

    def __init__(self, shard: int, start: int, stop: int, kind: int,
                 aggregate: Callable[[np.ndarray], np.ndarray] | None = None,
                 keys: Sequence[bytes] | None = None):
        super().__init__(shard, start, stop, kind, aggregate, keys)
        self._rounds: dict[int, _Round] = {}
        # Per step (this one and the one before), the senders the driver reported dead, and
        # the steps whose rounds every expected sender has been answered for (and so removed).
        self._dropped: dict[int, set[int]] = {}
        self._finished: set[int] = set()
        self._newest = -1  # the newest step a round was opened for

    def reset(self, kind: int, aggregate: Callable[[np.ndarray], np.ndarray] | None,
              tag: int = 0) -> None:
        super().reset(kind, aggregate, tag)
        self._rounds, self._dropped, self._finished = {}, {}, set()
        self._newest = -1

    def _close(self, step: int, rnd: _Round) -> None:
        arrived = tuple(s for s in rnd.senders if s in rnd.payloads)
        out, stats = self.vote(step, *[rnd.payloads[s] for s in arrived], senders=arrived,
                               authenticated=self.keys is not None)
        missing = [s for s in rnd.senders if s not in rnd.payloads]
        stats["rejected"] = rnd.rejected + stats["rejected"] + [
            {"worker": s, "reason": "no message before the timeout"} for s in missing]
        rnd.payloads.clear()
        rnd.result = (out, stats)
        rnd.done.set()

    def _refusal(self, payload: Any, step: int, sender: int) -> str | None:
        """Why a message may not take ``sender``'s place in the round (None: it may): with
        keys, it must be valid and carry ``sender``'s MAC."""
        if self.keys is None:
            return None
        try:
            self.read(payload, step, sender)
        except wire.MessageError as err:
            return str(err)
        return None

    async def drop(self, step: int, sender: int) -> None:
        """Worker ``sender`` died in ``step``: vote without its message, without waiting (a
        message of it already in the round still counts)."""
        self._dropped.setdefault(step, set()).add(sender)
        rnd = self._rounds.get(step)
        if rnd is not None and rnd.result is None and sender in rnd.senders \
                and sender not in rnd.payloads:
            rnd.senders = tuple(s for s in rnd.senders if s != sender)
            if len(rnd.payloads) == len(rnd.senders):
                self._close(step, rnd)

    def _open(self, step: int, sender: int, senders: tuple[int, ...]) -> _Round:
        """The round of ``step`` (opened by this message if it is the first)."""
        rnd = self._rounds.get(step)
        if rnd is not None:
            return rnd
        if sender in self._dropped.get(step, ()) and (
                step in self._finished or any(s > step for s in self._rounds)):
            raise RuntimeError(f"vote shard {self.shard}: the message of worker {sender} for "
                               f"step {step} came after that round closed without it (the "
                               "driver reported the worker dead); refused")
        # Every expected sender was answered (a replay or duplicate), or the step is older than
        # a round already opened: its round is gone, and a message never opens it again.
        if step in self._finished or step < self._newest:
            self.rejected_total += 1
            log.warning("vote shard %d step %d: rejected a message of worker %d after the "
                        "round closed", self.shard, step, sender)
            self.drill_rejected(step, self.shard, [
                {"worker": sender, "reason": "a message after the round closed"}])
            raise RuntimeError(f"vote shard {self.shard}: a message claiming worker {sender} "
                               f"for step {step} came after that round closed; refused")
        for old in [s for s in self._rounds if s < step]:
            del self._rounds[old]  # rounds a failed sender never came back to
        self._dropped = {s: d for s, d in self._dropped.items() if step - 1 <= s <= step}
        self._finished = {s for s in self._finished if step - 1 <= s < step}
        dropped = self._dropped.get(step, set())
        rnd = self._rounds[step] = _Round(tuple(s for s in senders if s not in dropped))
        self._newest = max(self._newest, step)
        return rnd

    async def submit(self, step: int, sender: int, payload: Any, senders: tuple[int, ...],
                     timeout: float) -> tuple[np.ndarray, dict[str, Any]]:
        """Worker ``sender``'s message for ``step``; returns the voted message and the vote's
        stats once the messages of all expected ``senders`` are in (or ``timeout`` has
        passed). A sender outside ``senders`` is refused (``ValueError``)."""
        self.drill_submit(step)
        if sender not in senders:
            raise ValueError(f"vote shard {self.shard}: worker {sender} sent a message for "
                             f"step {step}, but the round's senders are {tuple(senders)}; "
                             "refused")
        refusal = self._refusal(payload, step, sender)
        rnd = self._open(step, sender, tuple(senders))
        if refusal is None and sender in rnd.payloads:
            refusal = "a second message from this sender in the round"
        if refusal is not None:
            rejection = {"worker": sender, "reason": refusal}
            log.warning("vote shard %d step %d: rejected %s", self.shard, step, rejection)
            self.drill_rejected(step, self.shard, [rejection])
            self.rejected_total += 1
            if rnd.result is None:
                rnd.rejected.append(rejection)
        elif rnd.result is None and sender in rnd.senders and not self.drill_lost(step, sender):
            rnd.payloads[sender] = payload
            if len(rnd.payloads) == len(rnd.senders):
                self._close(step, rnd)
        if rnd.result is None:
            try:
                await asyncio.wait_for(rnd.done.wait(), timeout)
            except asyncio.TimeoutError:
                if rnd.result is None:
                    self._close(step, rnd)
        if sender in rnd.senders and refusal is None:
            rnd.answered.add(sender)
            if rnd.answered >= set(rnd.senders) and self._rounds.get(step) is rnd:
                del self._rounds[step]
                self._finished.add(step)
        return rnd.result


# ------------------------------------------------------------ the worker side of "direct"
def submit_shards(step: int, rank: int, votes: list[Any], encode: Callable[[int], np.ndarray],
                  senders: tuple[int, ...], timeout: float,
                  forged: Callable[[int, np.ndarray], list[tuple[int, np.ndarray]]] | None = None,
                  ) -> tuple[list[np.ndarray], dict]:
    """Send worker ``rank``'s message for shard s (``encode(s)``) to ``votes[s]`` as soon as
    it is packed. Returns the messages and the pending calls (ref -> shard). ``forged``: a
    drill's extra (claimed sender, message) pairs for shard s, sent beside it and not
    awaited (``raysign.actors.drills.WorkerDrills.drill_message``)."""
    messages, calls = [], {}
    for shard, vote in enumerate(votes):
        messages.append(encode(shard))
        extras = forged(shard, messages[-1]) if forged is not None else ()
        calls[submit_shard(step, rank, vote, messages[-1], senders, timeout, extras)] = shard
    return messages, calls


def submit_shard(step: int, rank: int, vote: Any, message: np.ndarray,
                 senders: tuple[int, ...], timeout: float,
                 forged: Sequence[tuple[int, np.ndarray]] = ()) -> Any:
    """Send worker ``rank``'s ``message`` for one shard to that shard's vote actor ``vote``
    (and a drill's ``forged`` (claimed sender, message) pairs beside it, not awaited).
    Returns the pending call, whose result is the voted message and the vote's stats."""
    call = vote.submit.remote(step, rank, message, senders, timeout)
    for claimed, extra in forged:
        vote.submit.remote(step, claimed, extra, senders, timeout)
    return call


def receive_votes(step: int, rank: int, calls: dict,
                  apply_shard: Callable[[int, int, np.ndarray], bool]) -> tuple[list, dict]:
    """Apply each voted message as soon as its call returns (``apply_shard(step, shard,
    message)``, False if the vote abstained), while the others are still on the wire.
    Returns the vote actors' stats per shard and the apply stats; the stage split counts the
    unpack time that did not overlap a wait as decompress, the rest of the wait as broadcast.
    A vote actor that died raises here (``RayActorError``)."""
    vote_stats, skipped, received, applying = [None] * len(calls), [], 0, 0.0
    pending = list(calls)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        shard = calls[ready[0]]
        voted, vote_stats[shard] = ray.get(ready[0])
        t_arrived = time.time()
        received += voted.nbytes
        if not apply_shard(step, shard, voted):
            skipped.append(shard)
        applying += time.time() - t_arrived
    t_end = time.time()
    return vote_stats, {"rank": rank, "t_apply_start": t_end - applying, "t_apply_end": t_end,
                        "bytes_received": received, "skipped_shards": skipped}
