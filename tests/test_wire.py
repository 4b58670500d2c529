"""The worker <-> vote message format: sizes, round trips and the validation the vote runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysign import wire
from raysign.signs import packed_nbytes


def test_packed_message_size_meets_the_one_bit_budget():
    for d in (1, 7, 64, 65, 1000, 999_999, 1_000_000, 11_172_810, 25_600_000):
        msg = wire.new_message(wire.KIND_SIGNS, sender=0, step=1, shard=0, length=d)
        assert msg.nbytes == wire.HEADER_BYTES + packed_nbytes(d)
        assert msg.nbytes <= math.ceil(d / 8) + 64
        if d >= 1_000_000:
            assert (4 * d) / msg.nbytes >= 31.9


def test_header_round_trip_and_validation():
    msg = wire.new_message(wire.KIND_FP32, sender=3, step=17, shard=2, length=5,
                           flags=wire.FLAG_ABSTAIN)
    wire.body(msg).view(np.float32)[:] = np.arange(5)
    header, body = wire.read_message(msg, kind=wire.KIND_FP32, step=17, shard=2, length=5)
    assert (header.sender, header.step, header.shard, header.length) == (3, 17, 2, 5)
    assert header.abstains
    np.testing.assert_array_equal(body.view(np.float32), np.arange(5))
    for expected, match in [(dict(step=18), "step=17"), (dict(shard=0), "shard=2"),
                            (dict(length=6), "length=5"), (dict(kind=wire.KIND_SIGNS), "kind")]:
        kwargs = dict(kind=wire.KIND_FP32, step=17, shard=2, length=5) | expected
        with pytest.raises(wire.MessageError, match=match):
            wire.read_message(msg, **kwargs)


@pytest.mark.parametrize("payload,match", [
    (np.zeros(40, np.float32), "uint8"),
    ("not an array", "uint8"),
    (np.zeros(10, np.uint8), "shorter than the header"),
])
def test_read_message_rejects_foreign_payloads(payload, match):
    with pytest.raises(wire.MessageError, match=match):
        wire.read_message(payload, kind=wire.KIND_SIGNS, step=0, shard=0, length=8)


def test_read_message_rejects_truncated_body():
    msg = wire.new_message(wire.KIND_SIGNS, sender=0, step=0, shard=0, length=1000)
    with pytest.raises(wire.MessageError, match="bytes, expected"):
        wire.read_message(msg[:-8], kind=wire.KIND_SIGNS, step=0, shard=0, length=1000)
    corrupt = msg.copy()
    corrupt[:4] = 0
    with pytest.raises(wire.MessageError, match="magic"):
        wire.read_message(corrupt, kind=wire.KIND_SIGNS, step=0, shard=0, length=1000)
