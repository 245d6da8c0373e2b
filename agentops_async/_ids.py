"""New session ids: UUIDv7 (RFC 9562), time-ordered, so that storage appends them.

A collector keys its sessions, their tags, events and usage rollups by session id. Random ids
(UUIDv4) land anywhere in those B-tree indexes: each batch of sessions dirties a page per
session per index, and that cost grows with the database. Ids that start with the time (48 bits
of Unix milliseconds) land at the end of each index, where a batch dirties a few pages whatever
the database's size. The 74 other bits are random (one ``os.urandom`` call), so ids made in the
same millisecond, or by other processes, stay unique; and a sampling decision by id
(:func:`agentops_async._sampling.is_sampled`, a CRC-32 of the whole id) is still uniform.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_session_id"]

_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_RAND_B = (1 << 62) - 1


def new_session_id() -> str:
    """A new UUIDv7 as canonical text (lowercase, hyphenated), e.g.
    ``0193f6f0-5c1e-7a3b-9d2e-4f8a6b1c0d3e``; ids of later milliseconds sort after earlier ones.
    """
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = (
        (time.time_ns() // 1_000_000) << 80
        | _VERSION_AND_VARIANT
        | (rand >> 68) << 64  # 12 random bits after the version
        | (rand & _RAND_B)  # 62 more after the variant
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
