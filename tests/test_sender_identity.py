"""Sender identity (issue 20): every message carries a keyed BLAKE2b MAC of its header and
body under its sender's key, and the vote actors count only a valid message per expected
sender. The references are ``hashlib`` itself (the MAC recomputed from the message's bytes)
and the numpy mean of the honest workers' values; the vote actors run in-process (``asyncio``
orders the calls), one short run on local Ray checks that the trainer signs by default."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets

import numpy as np
import pytest
import ray

from raysign import wire
from raysign.actors.drills import WorkerDrills
from raysign.actors.trainer import SignSGDTrainer
from raysign.actors.vote import DirectVoteActor, VoteActor
from raysign.results import read_jsonl
from raysign.signsgd.config import SignSGDConfig

LENGTH = 6
KEYS = [secrets.token_bytes(32) for _ in range(4)]
VALUES = [1.0, 2.0, 4.0, 8.0]  # worker r sends VALUES[r] in every entry
TIMEOUT = 3.0


def message(sender: int, value: float, key: bytes | None = None, step: int = 1,
            claimed: int | None = None) -> np.ndarray:
    """Worker ``sender``'s fp32 message for shard 0, signed with ``key`` (default: its own),
    its header naming ``claimed`` (default: itself)."""
    msg = wire.new_message(wire.KIND_FP32, sender=sender if claimed is None else claimed,
                           step=step, shard=0, length=LENGTH)
    wire.body(msg).view(np.float32)[:] = value
    return wire.sign_message(msg, KEYS[sender] if key is None else key)


def flipped(msg: np.ndarray, byte: int) -> np.ndarray:
    out = msg.copy()
    out[byte] ^= 0x10
    return out


def mean_of(ranks) -> np.ndarray:
    return np.full(LENGTH, np.mean([VALUES[r] for r in ranks]), np.float32)


def test_the_mac_is_keyed_blake2b_of_header_and_body_and_any_flipped_bit_fails():
    msg = message(2, 3.0)
    mac = hashlib.blake2b(msg[:24].tobytes() + msg[32:].tobytes(), key=KEYS[2],
                          digest_size=8).digest()
    assert msg[24:32].tobytes() == mac
    read = dict(kind=wire.KIND_FP32, step=1, shard=0, length=LENGTH)
    header, _ = wire.read_message(msg, **read, sender=2, key=KEYS[2])
    assert header.sender == 2
    # Flags (byte 6), the MAC itself, the first and last body bytes: fields nothing else checks.
    for byte in (6, 24, 31, 32, msg.size - 1):
        with pytest.raises(wire.MessageError, match="MAC"):
            wire.read_message(flipped(msg, byte), **read, sender=2, key=KEYS[2])
    with pytest.raises(wire.MessageError, match="MAC"):
        wire.read_message(msg, **read, sender=2, key=KEYS[0])
    with pytest.raises(wire.MessageError, match="sender=2 but expected 0"):
        wire.read_message(msg, **read, sender=0, key=KEYS[0])
    unsigned = wire.new_message(wire.KIND_FP32, sender=2, step=1, shard=0, length=LENGTH)
    with pytest.raises(wire.MessageError, match="MAC"):
        wire.read_message(unsigned, **read, sender=2, key=KEYS[2])
    with pytest.raises(wire.MessageError, match="length=4294967296"):
        wire.new_message(wire.KIND_SIGNS, sender=0, step=1, shard=0, length=2**32)


def test_object_path_rejects_impersonation_and_a_flipped_bit_naming_the_sender():
    actor = VoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
    honest = [message(r, VALUES[r]) for r in range(3)]
    # Worker 3 names worker 0 in its header (it holds only its own key).
    impostor = message(3, 100.0, claimed=0)
    out, stats = actor.vote(1, *honest, impostor, senders=(0, 1, 2, 3))
    assert [r["worker"] for r in stats["rejected"]] == [3]
    assert "sender=0 but expected 3" in stats["rejected"][0]["reason"]
    np.testing.assert_array_equal(wire.body(out).view(np.float32), mean_of([0, 1, 2]))
    out, stats = actor.vote(1, *honest, flipped(message(3, 8.0), 40), senders=(0, 1, 2, 3))
    assert [r["worker"] for r in stats["rejected"]] == [3]
    assert "MAC" in stats["rejected"][0]["reason"]
    np.testing.assert_array_equal(wire.body(out).view(np.float32), mean_of([0, 1, 2]))


def test_direct_path_rejects_a_forged_sender_a_second_message_and_a_flipped_bit(caplog):
    async def scenario():
        actor = DirectVoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
        senders = (0, 1, 2, 3)

        def send(sender, msg, timeout=TIMEOUT):
            return asyncio.create_task(actor.submit(1, sender, msg, senders, timeout))

        # Worker 3 forges worker 0's header before worker 0 sends: it must not take its place.
        calls = [send(0, message(3, 100.0, claimed=0))]
        await asyncio.sleep(0)
        calls += [send(r, message(r, VALUES[r])) for r in (0, 1)]
        await asyncio.sleep(0)
        calls.append(send(1, message(1, -50.0)))  # worker 1 votes twice
        await asyncio.sleep(0)
        calls.append(send(2, flipped(message(2, VALUES[2]), 50)))  # corrupted in transit
        await asyncio.sleep(0)
        calls.append(send(3, message(3, VALUES[3])))
        await asyncio.sleep(0)
        calls.append(send(2, message(2, VALUES[2])))  # worker 2's intact message
        return await asyncio.gather(*calls), actor.rejections()

    with caplog.at_level(logging.WARNING, logger="raysign.actors.vote"):
        results, rejections = asyncio.run(scenario())
    for result in results:  # everyone, forgers included, gets the one vote of the round
        np.testing.assert_array_equal(wire.body(result[0]).view(np.float32), mean_of(range(4)))
    stats = results[1][1]
    assert stats["num_valid"] == 4 and rejections == 3
    assert [(r["worker"], r["reason"].split(" ")[0]) for r in stats["rejected"]] == [
        (0, "MAC"), (1, "a"), (2, "MAC")]
    assert "second message" in stats["rejected"][1]["reason"]
    assert sum("rejected" in r.message for r in caplog.records) == 3


def test_direct_path_leaves_out_a_sender_whose_only_message_is_corrupted():
    async def scenario():
        actor = DirectVoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
        senders = (0, 1, 2)
        return await asyncio.gather(
            actor.submit(1, 0, message(0, VALUES[0]), senders, 0.2),
            actor.submit(1, 1, message(1, VALUES[1]), senders, 0.2),
            actor.submit(1, 2, flipped(message(2, VALUES[2]), 35), senders, 0.2))

    results = asyncio.run(scenario())
    np.testing.assert_array_equal(wire.body(results[0][0]).view(np.float32), mean_of([0, 1]))
    assert [(r["worker"], "MAC" in r["reason"]) for r in results[0][1]["rejected"]] == [
        (2, True), (2, False)]  # the corrupted message, then no valid one before the timeout


def test_direct_path_refuses_a_message_for_a_round_already_closed():
    async def scenario():
        actor = DirectVoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
        senders = (0, 1)
        closed = await asyncio.gather(*[actor.submit(1, r, message(r, VALUES[r]), senders,
                                                     TIMEOUT) for r in senders])
        with pytest.raises(RuntimeError, match="worker 0 for step 1 came after"):
            await actor.submit(1, 0, message(0, -50.0), senders, TIMEOUT)
        return closed, actor.rejections()

    closed, rejections = asyncio.run(scenario())
    np.testing.assert_array_equal(wire.body(closed[0][0]).view(np.float32), mean_of([0, 1]))
    assert rejections == 1


def test_direct_path_refuses_a_message_two_steps_late_instead_of_opening_a_stale_round():
    """A valid message for step 1 that arrives once the rounds of steps 2 and 3 have opened
    (step 1 no longer remembered as finished) is refused and counted, never a round of its
    own that would wait for the timeout."""
    async def scenario():
        actor = DirectVoteActor(0, 0, LENGTH, wire.KIND_FP32, keys=KEYS)
        senders = (0, 1)
        for step in (1, 2, 3):
            await asyncio.gather(*[actor.submit(step, r, message(r, VALUES[r], step=step),
                                                senders, TIMEOUT) for r in senders])
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RuntimeError, match="worker 1 for step 1 came after"):
            await actor.submit(1, 1, message(1, -50.0, step=1), senders, TIMEOUT)
        return loop.time() - start, actor.rejections()

    elapsed, rejections = asyncio.run(scenario())
    assert elapsed < TIMEOUT / 2 and rejections == 1


class Forger(WorkerDrills):
    def __init__(self, rank: int):
        self.rank, self.num_workers, self._key = rank, 4, KEYS[rank]


@pytest.mark.parametrize("direct", [True, False])
def test_forgery_drills_produce_what_they_claim(direct):
    own = message(3, 8.0)
    forger = Forger(3)
    forger.forge_at(1, "impersonate")
    sent, extra = forger.drill_message(1, own, direct)
    forged = extra[0][1] if direct else sent
    assert wire.parse_header(forged).sender == 0
    assert (extra[0][0] if direct else 0) == 0
    assert forged[24:32].tobytes() == hashlib.blake2b(
        forged[:24].tobytes() + forged[32:].tobytes(), key=KEYS[3], digest_size=8).digest()
    assert forger.drill_message(2, own, direct) == (own, [])  # another step: untouched


# ------------------------------------------------------------------ the trainer on local Ray
def tiny(tmp_path) -> SignSGDConfig:
    return SignSGDConfig(dataset="mnist", model="mlp", train_subset=600, test_subset=100,
                         batch_size=16, lr=0.002, num_workers=3, max_steps=2, checksum_every=2,
                         transport="direct", results_dir=str(tmp_path))


@pytest.mark.ray
def test_trainer_signs_messages_and_forgeries_do_not_change_the_vote(ray_session, tmp_path):
    config = tiny(tmp_path)
    trainer = SignSGDTrainer(config, progress=False)

    def forge(record):
        # Worker 1 sends a message in worker 2's name, worker 2 a second (negated) vote.
        if record["step"] == 1:
            ray.get([trainer.workers[1].forge_at.remote(2, "impersonate"),
                     trainer.workers[2].forge_at.remote(2, "duplicate")])

    try:
        summary = trainer.run(on_record=forge)
        forged = ray.get(trainer.workers[0].parameters.remote())
        rejections = ray.get(trainer.votes[0].rejections.remote())
        trainer.reconfigure(config)  # the same run again on the same actors, undisturbed
        trainer.run()
        undisturbed = ray.get(trainer.workers[0].parameters.remote())
        none = ray.get(trainer.votes[0].rejections.remote())
    finally:
        trainer.shutdown()
    assert forged.tobytes() == undisturbed.tobytes()
    # The impersonation and the duplicate are sent fire-and-forget beside worker 1's and 2's
    # own messages and nobody waits for them: under load the duplicate may still be on its
    # way when the count is read (a late one is refused and counted, as
    # test_direct_path_refuses_a_message_two_steps_late_... shows), so at least the
    # impersonation is counted.
    assert 1 <= rejections <= 2 and none == 0
    records = read_jsonl(f"{summary.run_dir}/metrics.jsonl")
    assert all(r["voters"] == 3 and not r["failed_workers"] for r in records)
    assert summary.replicas_identical
