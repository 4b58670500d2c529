"""The message format between workers and vote actors: a 32-byte header and a body.

One message is one contiguous uint8 numpy array (so Ray moves it zero-copy through the object
store)::

    offset  size  field
    0       4     magic b"RSGN"
    4       1     version (2)
    5       1     kind: 0 = packed signs (1 bit per parameter), 1 = fp32 values
    6       2     flags: bit 0 = abstain (the sender had a non-finite gradient)
    8       4     sender (worker rank, or 0xFFFFFFFF for a vote actor)
    12      4     step
    16      4     shard index
    20      4     length d: parameters in the shard (< 2**32)
    24      8     MAC: keyed BLAKE2b (8-byte digest) of bytes 0-23 and the body, under the
                  sender's key; 0 in a message nobody signed
    32      ...   body: ``packed_nbytes(d)`` bytes of signs, or ``4 d`` bytes of fp32

So a packed message costs ``packed_nbytes(d) + 32 <= ceil(d / 8) + 39`` bytes, against
``4 d + 32`` for fp32: 31.9x fewer for d >= 1M. ``read_message`` is the validation every vote
actor runs before it counts a payload; given the sender it expects and that sender's key, it
also checks that the header names that sender and that the MAC verifies, so a worker can
neither cast a vote in another's name nor have a corrupted message counted (``sign_message``
writes the MAC). Keys come from the driver at start-up and never travel with the messages.
The MAC is 64 bits: a forger's chance per message is 2**-64, and every failed one is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

import numpy as np

from raysign.signs import packed_nbytes

MAGIC = b"RSGN"
VERSION = 2
HEADER_BYTES = 32
MAC_OFFSET = 24
MAC_BYTES = 8
MAX_LENGTH = 2**32 - 1
KIND_SIGNS = 0
KIND_FP32 = 1
FLAG_ABSTAIN = 1
VOTE_SENDER = 0xFFFFFFFF
_LAYOUT = struct.Struct("<4sBBHIIII")  # the header up to the MAC


class MessageError(ValueError):
    """A payload that must not be counted: wrong type, size, kind, step, shard, sender or
    MAC."""


@dataclass(frozen=True)
class Header:
    kind: int
    flags: int
    sender: int
    step: int
    shard: int
    length: int

    @property
    def abstains(self) -> bool:
        return bool(self.flags & FLAG_ABSTAIN)


def body_nbytes(kind: int, length: int) -> int:
    if kind == KIND_SIGNS:
        return packed_nbytes(length)
    if kind == KIND_FP32:
        return 4 * length
    raise MessageError(f"kind={kind} is not {KIND_SIGNS} (signs) or {KIND_FP32} (fp32)")


def new_message(kind: int, *, sender: int, step: int, shard: int, length: int,
                flags: int = 0) -> np.ndarray:
    """An empty message (header filled in, MAC 0, body uninitialised) to write the body
    into; ``sign_message`` once the body is written."""
    if not 0 <= length <= MAX_LENGTH:
        raise MessageError(f"length={length}: a shard holds 0 to {MAX_LENGTH} parameters; "
                           "use more vote shards")
    message = np.empty(HEADER_BYTES + body_nbytes(kind, length), dtype=np.uint8)
    _LAYOUT.pack_into(message, 0, MAGIC, VERSION, kind, flags, sender, step, shard, length)
    message[MAC_OFFSET:HEADER_BYTES] = 0
    return message


def set_flags(message: np.ndarray, flags: int) -> np.ndarray:
    """Overwrite the header's flags (before ``sign_message``: the MAC covers them)."""
    struct.pack_into("<H", message, 6, flags)
    return message


def message_mac(message: np.ndarray, key: bytes) -> bytes:
    """The MAC of ``message`` under ``key``: keyed BLAKE2b over the header (less its MAC
    field) and the body."""
    h = hashlib.blake2b(key=key, digest_size=MAC_BYTES)
    h.update(message[:MAC_OFFSET])
    h.update(message[HEADER_BYTES:])
    return h.digest()


def sign_message(message: np.ndarray, key: bytes) -> np.ndarray:
    """Write ``message``'s MAC under the sender's ``key`` into its header (in place)."""
    message[MAC_OFFSET:HEADER_BYTES] = np.frombuffer(message_mac(message, key), np.uint8)
    return message


def body(message: np.ndarray) -> np.ndarray:
    """The body of a message as uint8 (a view)."""
    return message[HEADER_BYTES:]


def parse_header(message: np.ndarray) -> Header:
    """The header fields of ``message``, unchecked (``read_message`` validates)."""
    _, _, kind, flags, sender, step, shard, length = _LAYOUT.unpack_from(message, 0)
    return Header(kind, flags, sender, step, shard, length)


def read_message(message: object, *, kind: int, step: int, shard: int, length: int,
                 sender: int | None = None,
                 key: bytes | None = None) -> tuple[Header, np.ndarray]:
    """Validate ``message`` against what the receiver expects; return its header and body.
    ``sender``: the rank the message must name; ``key``: that sender's key, whose MAC the
    message must carry.

    Raises ``MessageError`` naming the first field that does not match."""
    if not isinstance(message, np.ndarray) or message.dtype != np.uint8 or message.ndim != 1:
        what = getattr(message, "dtype", type(message).__name__)
        raise MessageError(f"payload must be a 1-D uint8 array, got {what}")
    if message.size < HEADER_BYTES:
        raise MessageError(f"payload of {message.size} bytes is shorter than the header")
    magic, version, got_kind, flags, got_sender, got_step, got_shard, got_length = (
        _LAYOUT.unpack_from(message, 0))
    if magic != MAGIC or version != VERSION:
        raise MessageError(f"bad magic/version {magic!r}/{version}")
    expected = {"kind": kind, "step": step, "shard": shard, "length": length}
    got = {"kind": got_kind, "step": got_step, "shard": got_shard, "length": got_length}
    if sender is not None:
        expected["sender"], got["sender"] = sender, got_sender
    for field, value in expected.items():
        if got[field] != value:
            raise MessageError(f"{field}={got[field]} but expected {value}")
    need = HEADER_BYTES + body_nbytes(kind, length)
    if message.size != need:
        raise MessageError(f"payload has {message.size} bytes, expected {need}")
    if key is not None and not hmac.compare_digest(
            message_mac(message, key), message[MAC_OFFSET:HEADER_BYTES].tobytes()):
        raise MessageError(f"MAC does not verify under the key of worker {got_sender} "
                           "(forged or corrupted)")
    return Header(got_kind, flags, got_sender, got_step, got_shard, got_length), body(message)
