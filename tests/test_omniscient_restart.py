"""An omniscient adversary reading the honest messages of a round in which one worker,
restarted by Ray after a reconfigure, abstains with a message of the first configuration's
payload kind: the adversary leaves that unreadable message out (as the vote actors do) instead
of ending the run (seen in the Byzantine grid under memory pressure)."""

import numpy as np
import torch

from raysign import wire
from raysign.actors.byzantine import ByzantineWorker


def _adversary(d: int) -> ByzantineWorker:
    worker = object.__new__(ByzantineWorker)  # the method under test needs no Ray
    worker.rank, worker._key, worker.kind = 2, None, wire.KIND_SIGNS
    worker.bounds = [(0, d)]
    worker._own_vector = torch.ones(d)
    worker._own_stats = {"rank": 2}
    worker.omniscient_rng = np.random.default_rng(0)
    worker.omniscient_attack = lambda rows, own, rng: -rows.sum(axis=0)
    return worker


def test_adversary_leaves_out_an_abstention_of_another_payload_kind():
    d, step = 70, 5
    grad = np.random.default_rng(1).standard_normal(d).astype(np.float32)
    honest = wire.new_message(wire.KIND_SIGNS, sender=0, step=step, shard=0, length=d)
    bits = np.packbits(grad < 0, bitorder="little")
    wire.body(honest)[:] = np.concatenate([bits, np.zeros(wire.body(honest).size - bits.size,
                                                          np.uint8)])
    # Rank 1, restarted with the first configuration (fp32 mean), abstains in that kind.
    stale = wire.new_message(wire.KIND_FP32, sender=1, step=step, shard=0, length=d,
                             flags=wire.FLAG_ABSTAIN)
    message, stats = _adversary(d).craft_omniscient_messages(step, honest, stale)
    # Reference: the attack over the one readable honest row, its signs packed by numpy.
    honest_signs = np.where(grad < 0, -1.0, 1.0)
    expected_bits = np.packbits(-honest_signs < 0, bitorder="little")
    _, body = wire.read_message(message, kind=wire.KIND_SIGNS, step=step, shard=0, length=d)
    assert np.array_equal(body[:expected_bits.size], expected_bits)
    assert stats["rank"] == 2
