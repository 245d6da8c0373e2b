"""Session sampling: one decision per session, the same for a session id everywhere."""

from __future__ import annotations

import zlib

__all__ = ["is_sampled"]

_SCALE = 2**32


def is_sampled(session_id: str, rate: float) -> bool:
    """True when the session ``session_id`` is kept at sampling ``rate`` (0.0 to 1.0).

    Deterministic: the CRC-32 of the id, compared with ``rate`` of its range, so a session is
    kept or left out the same way by every process (the SDK, the ASGI middleware) that decides.
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return zlib.crc32(session_id.encode()) < int(rate * _SCALE)
