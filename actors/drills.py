"""Fault-injection drills: ways to make the signSGD actors fail on purpose, in one place.

The fault model of the actor path (see ``raysign.actors.trainer``) says a worker or a vote actor
may die at any moment and a worker may produce a non-finite gradient; the tests and an operator
rehearsing on a live cluster need to cause exactly those faults at a chosen step. The drills are
actor methods (Ray calls them like any other), mixed into the production classes:

- ``WorkerDrills.crash()``: the worker process exits at once, as a killed node would;
- ``WorkerDrills.poison_next_gradient(count)``: the worker's next gradient has ``count`` NaN
  entries, as a numerically broken batch would (the worker must abstain, not crash the round);
- ``WorkerDrills.crash_during(call)``: the worker process exits at its next ``evaluate``,
  ``checksum`` or ``state`` call (a fault outside the round: during evaluation, the replica
  check or a checkpoint save);
- ``WorkerDrills.corrupt_after(step)``: the worker's replica silently diverges after it
  applies the vote of ``step`` (one parameter moved by 1.0), as a bit flip in memory would (the
  replica check must find it and re-sync it from the majority of the replicas);
- ``WorkerDrills.forge_at(step, how)``: the worker's messages of ``step`` turn Byzantine on
  the wire: ``"impersonate"`` (a message in the next rank's name, which it can sign only with
  its own key), ``"duplicate"`` (a second, negated message in its own name, correctly
  signed; direct transport only, the object path carries one message per worker) or
  ``"flip_bit"`` (one body bit of its own message flipped after signing). The vote actors must
  reject each, logging the sender it claims;
- ``WorkerDrills.crash_in_exchange(step)``: the worker process exits in the middle of the
  direct exchange of ``step``: after its message for shard 0 went out, before the others;
- ``WorkerDrills.crash_after_apply(step)``: the worker process exits once it has applied the
  vote of ``step``, before it reports the round;
- ``VoteDrills.crash_at(step)``: the vote actor's process exits when it starts voting on
  ``step`` (a restarted actor has no such plan);
- ``VoteDrills.crash_collecting(step)``: the direct vote actor's process exits when the second
  message of ``step`` reaches it, while it is still collecting the round;
- ``VoteDrills.lose_message(step, sender)``: the direct vote actor loses worker ``sender``'s
  message of ``step`` as a network that drops it would: the message takes no place in the
  round and is not logged as rejected; the round votes without it at the timeout, and the
  sender gets the round's result like every other.

``forge_at`` also takes ``"truncate"`` (the worker's own message loses the last 8 bytes of
its body) and ``"replay"`` (the worker's genuine message of shard s from the previous step is
sent again, in its own name, for this step: its MAC verifies, its step does not).

With ``$RAYSIGN_DRILL_REJECTIONS`` naming a file, every vote actor appends each message it
rejects there as a JSON line ``{"step", "shard", "worker", "reason"}`` (``VoteDrills.
drill_rejected``): a chaos run (``scripts/chaos.py``) checks from it that each forged or
corrupted message was rejected under the sender it claims, also across vote-actor restarts.

The production code calls the hooks and is otherwise unaware of the drills: ``SignWorker``
passes every fresh gradient through ``WorkerDrills.drill_gradient`` and every signed message
through ``WorkerDrills.drill_message`` and its replica after every step through
``WorkerDrills.drill_replica`` and calls ``WorkerDrills.drill_call`` at the start of
``evaluate``, ``checksum`` and ``state``, and ``VoteActor.vote`` calls ``VoteDrills.drill_vote``
first, ``DirectVoteActor.submit`` ``VoteDrills.drill_submit`` first and
``VoteDrills.drill_lost`` before a message takes its sender's place. With no drill planned
the hooks do nothing.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from raysign import wire

FORGERIES = ("impersonate", "duplicate", "flip_bit", "truncate", "replay")
REJECTIONS_ENV = "RAYSIGN_DRILL_REJECTIONS"
# How long a worker planned to die in the middle of the exchange lets its first message leave.
EXCHANGE_CRASH_DELAY_S = 0.3
CRASH_CALLS = ("evaluate", "checksum", "state")


class WorkerDrills:
    """Drills of a ``raysign.actors.worker.SignWorker``."""

    _nan_entries = 0  # entries of the next gradient to overwrite with NaN (0: no drill)
    _forgery: tuple[int, str] | None = None  # (step, how) of a planned forged message
    _corrupt_step: int | None = None  # the step after which the replica diverges
    _crash_call: str | None = None  # the call during which the process exits
    _crash_exchange_step: int | None = None  # the step whose exchange the process dies in
    _crash_apply_step: int | None = None  # the step after whose update the process dies
    _sent: dict[int, tuple[int, np.ndarray]] | None = None  # shard -> (step, last message)
    # The worker's own rank, worker count and MAC key (set by ``SignWorker``).
    rank: int
    num_workers: int
    _key: bytes | None

    def crash(self) -> None:
        """Exit the worker process at once (Ray sees the actor die and restarts it)."""
        os._exit(1)

    def poison_next_gradient(self, count: int = 1) -> None:
        """Make the next gradient's first ``count`` entries NaN."""
        self._nan_entries = count

    def forge_at(self, step: int, how: str) -> None:
        """Make this worker's messages of ``step`` Byzantine (``how`` in ``FORGERIES``; module
        docstring)."""
        if how not in FORGERIES:
            raise ValueError(f"forge_at: how={how!r} is not one of {FORGERIES}")
        self._forgery = (step, how)

    def crash_during(self, call: str) -> None:
        """Exit the process at the start of the next ``call`` (``CRASH_CALLS``)."""
        if call not in CRASH_CALLS:
            raise ValueError(f"crash_during: call={call!r} is not one of {CRASH_CALLS}")
        self._crash_call = call

    def crash_in_exchange(self, step: int) -> None:
        """Exit the process in the direct exchange of ``step``, once the message for shard 0
        has been sent (``EXCHANGE_CRASH_DELAY_S`` later), before the next shard's."""
        self._crash_exchange_step = step

    def crash_after_apply(self, step: int) -> None:
        """Exit the process once the vote of ``step`` is applied, before the round returns."""
        self._crash_apply_step = step

    def drill_call(self, call: str) -> None:
        """The hook, at the start of ``evaluate``, ``checksum`` and ``state``."""
        if self._crash_call == call:
            os._exit(1)

    def corrupt_after(self, step: int) -> None:
        """Make the replica diverge once it has applied the vote of ``step``."""
        self._corrupt_step = step

    def cancel_drills(self) -> None:
        """Forget a planned poisoned gradient, corruption or forgery (a reset replica starts
        without one, as a new process would)."""
        self._nan_entries = 0
        self._forgery = None
        self._corrupt_step = None
        self._crash_call = None
        self._crash_exchange_step = None
        self._crash_apply_step = None
        self._sent = None

    def drill_replica(self, step: int, flat: torch.Tensor) -> None:
        """The hook, after the worker applied the vote of ``step`` to its parameters
        ``flat``: corrupt them if a drill names ``step``."""
        if self._corrupt_step == step:
            with torch.no_grad():
                flat[0] += 1.0
            self._corrupt_step = None
        if self._crash_apply_step == step:
            os._exit(1)

    def drill_message(self, step: int, message: np.ndarray,
                      direct: bool) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """The hook, on every signed outgoing message of ``step``: the message to send as this
        worker's, and the extra (claimed sender, message) pairs to send beside it (only
        ``direct``: the object path carries one message per worker, so there an impersonation
        replaces the worker's own message)."""
        shard = wire.parse_header(message).shard
        if self._crash_exchange_step == step and direct and shard > 0:
            time.sleep(EXCHANGE_CRASH_DELAY_S)  # let the message of shard 0 leave
            os._exit(1)
        if self._sent is None:
            self._sent = {}
        previous = self._sent.get(shard)
        self._sent[shard] = (step, message)
        if self._forgery is None or self._forgery[0] != step:
            return message, []
        how = self._forgery[1]
        forged = message.copy()
        if how == "flip_bit":
            wire.body(forged)[0] ^= 1
            return forged, []
        if how == "truncate":
            return message[:-8].copy(), []
        if how == "replay":
            if previous is None or previous[0] != step - 1:
                raise RuntimeError(f"forge_at(replay): worker {self.rank} holds no message of "
                                   f"step {step - 1} for shard {shard}")
            return (message, [(self.rank, previous[1])]) if direct else (previous[1], [])
        if how == "impersonate":
            victim = (self.rank + 1) % self.num_workers
            h = wire.parse_header(message)
            forged = wire.new_message(h.kind, sender=victim, step=h.step, shard=h.shard,
                                      length=h.length, flags=h.flags)
            wire.body(forged)[:] = wire.body(message)
            self._sign(forged)
            return (message, [(victim, forged)]) if direct else (forged, [])
        body = wire.body(forged)  # "duplicate": a second, different vote in its own name
        body[:] = ~body
        self._sign(forged)
        return message, [(self.rank, forged)] if direct else []

    def _sign(self, message: np.ndarray) -> None:
        if self._key is not None:
            wire.sign_message(message, self._key)

    def drill_gradient(self, grad: torch.Tensor) -> None:
        """The hook: poison ``grad`` (in place) if a drill is planned for it."""
        if self._nan_entries:
            grad[: self._nan_entries] = float("nan")
            self._nan_entries = 0


class VoteDrills:
    """Drills of a ``raysign.actors.vote.VoteActor`` (and ``DirectVoteActor``)."""

    _crash_at_step: int | None = None
    _crash_collecting: tuple[int, int] | None = None  # (step, messages of it seen so far)
    _lose: tuple[int, int] | None = None  # (step, sender) of a message to lose

    def lose_message(self, step: int, sender: int) -> None:
        """Lose worker ``sender``'s message of ``step`` (direct transport; module docstring)."""
        self._lose = (step, sender)

    def drill_lost(self, step: int, sender: int) -> bool:
        """The hook, before a valid message takes its sender's place: whether it is lost (once
        only: a message voted again through the object store is not)."""
        if self._lose == (step, sender):
            self._lose = None
            return True
        return False

    def crash_at(self, step: int) -> None:
        """Exit the process when voting on ``step``; the restarted actor has no such plan."""
        self._crash_at_step = step

    def crash_collecting(self, step: int) -> None:
        """Exit the process when the second message of ``step`` arrives (direct transport)."""
        self._crash_collecting = (step, 0)

    def drill_submit(self, step: int) -> None:
        """The hook, at the start of every direct ``submit``: exit on the second message of
        the step ``crash_collecting`` names."""
        if self._crash_collecting is not None and self._crash_collecting[0] == step:
            seen = self._crash_collecting[1] + 1
            if seen >= 2:
                os._exit(1)
            self._crash_collecting = (step, seen)

    def drill_rejected(self, step: int, shard: int, rejections: list[dict]) -> None:
        """The hook, wherever a vote actor logs rejected messages: append them to the file
        ``$RAYSIGN_DRILL_REJECTIONS`` names (nothing when it is unset)."""
        path = os.environ.get(REJECTIONS_ENV)
        if not path or not rejections:
            return
        lines = "".join(json.dumps({"step": step, "shard": shard, "worker": r["worker"],
                                    "reason": r["reason"]}) + "\n" for r in rejections)
        with open(path, "a") as fh:
            fh.write(lines)

    def drill_vote(self, step: int) -> None:
        """The hook, at the start of every vote: exit if the crash drill names ``step``."""
        if self._crash_at_step == step:
            os._exit(1)
