"""The read model: sessions with their stats, shared by the HTTP read API and the CLI.

Everything here reads through :class:`SessionReader`, the read side of the storage: the read API
(and the dashboard) can only look, never write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from decimal import Decimal
from typing import Any

import msgspec

from . import _wire as wire
from ._prices import PriceTable, format_cost
from ._storage import STATE_RUNNING, SessionFilter, SessionReader, SessionRow

__all__ = [
    "STATE_FILTERS",
    "CursorCodec",
    "InvalidCursor",
    "SessionView",
    "list_session_views",
    "session_views",
    "session_views_with_tokens",
]

STATE_FILTERS = {**wire.END_STATES, "running": STATE_RUNNING}
"""What a ``state`` filter may say (any case), and the stored state it selects."""


class InvalidCursor(ValueError):
    """A cursor that this listing did not make (another project's, altered, or garbled)."""


class CursorCodec:
    """Opaque, signed read-API cursors.

    A cursor names the last item of the previous page by its id (which the caller has just
    read), never by a database-wide sequence number, so it tells a project nothing about the
    others. It is signed for one scope (a project's session list, or one session's events):
    a cursor from another scope or altered is refused.

    Args:
        key: The HMAC key (derived from the collector's secret, so that every collector on the
            same database accepts the cursors of the others, across restarts).
    """

    _MAC_SIZE = 12

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "CursorCodec(<key>)"

    def _mac(self, scope: str, position: bytes) -> bytes:
        message = scope.encode() + b"\x00" + position
        return hmac.new(self._key, message, hashlib.sha256).digest()[: self._MAC_SIZE]

    def encode(self, scope: str, position: str) -> str:
        """The cursor of ``position`` (an id) within ``scope``."""
        raw = position.encode("utf-8", "surrogatepass")
        return base64.urlsafe_b64encode(self._mac(scope, raw) + raw).rstrip(b"=").decode()

    def decode(self, scope: str, cursor: str) -> str:
        """The position of a cursor made by :meth:`encode` for the same scope.

        Raises:
            InvalidCursor: The cursor was not made for this scope by this key.
        """
        try:
            data = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            raise InvalidCursor("not a cursor") from None
        mac, raw = data[: self._MAC_SIZE], data[self._MAC_SIZE :]
        if len(mac) != self._MAC_SIZE or not hmac.compare_digest(mac, self._mac(scope, raw)):
            raise InvalidCursor("not a cursor of this listing")
        return raw.decode("utf-8", "surrogatepass")


class SessionView(msgspec.Struct, kw_only=True):
    """A session as the read API returns it."""

    id: str
    state: str
    end_state: str | None
    end_state_reason: str | None
    tags: list[str]
    init_timestamp: str | None
    end_timestamp: str | None
    duration_s: float | None
    trace_id: str | None
    video: str | None
    event_counts: dict[str, int]
    events_total: int
    token_cost: str
    host_env: msgspec.Raw = msgspec.Raw(b"null")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (host_env decoded)."""
        data: dict[str, Any] = _decoder.decode(_encoder.encode(self))
        return data


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


async def session_views(
    storage: SessionReader, prices: PriceTable, rows: list[SessionRow]
) -> list[SessionView]:
    """Views of ``rows`` with counts and cost (two grouped queries, whatever the page size)."""
    return [view for view, _ in await session_views_with_tokens(storage, prices, rows)]


async def session_views_with_tokens(
    storage: SessionReader, prices: PriceTable, rows: list[SessionRow]
) -> list[tuple[SessionView, tuple[int, int]]]:
    """:func:`session_views` with each session's LLM ``(prompt, completion)`` token sums."""
    ids = [r.id for r in rows]
    counts = await storage.event_counts(ids)
    usage = await storage.llm_usage(ids)
    costs = prices.session_costs(usage)
    tokens: dict[str, tuple[int, int]] = {}
    for u in usage:
        prompt, completion = tokens.get(u.session_id, (0, 0))
        tokens[u.session_id] = (prompt + u.prompt_tokens, completion + u.completion_tokens)
    views = []
    for row in rows:
        by_type = counts.get(row.id, {})
        duration = None
        if row.init_ts is not None and row.end_ts is not None:
            duration = round(row.end_ts - row.init_ts, 6)
        view = SessionView(
            id=row.id,
            state=row.state,
            end_state=row.end_state,
            end_state_reason=row.end_state_reason,
            tags=row.tags,
            init_timestamp=row.init_timestamp,
            end_timestamp=row.end_timestamp,
            duration_s=duration,
            trace_id=row.trace_id,
            video=row.video,
            event_counts=dict(sorted(by_type.items())),
            events_total=sum(by_type.values()),
            token_cost=format_cost(costs.get(row.id, Decimal(0))),
            host_env=msgspec.Raw(row.host_env.encode()) if row.host_env else msgspec.Raw(b"null"),
        )
        views.append((view, tokens.get(row.id, (0, 0))))
    return views


async def list_session_views(
    storage: SessionReader, prices: PriceTable, flt: SessionFilter
) -> tuple[list[SessionView], str | None]:
    """A page of session views and where the next page starts (``SessionFilter.before_id``;
    None on the last page)."""
    page = SessionFilter(
        project_id=flt.project_id,
        tag=flt.tag,
        state=flt.state,
        since=flt.since,
        until=flt.until,
        before_id=flt.before_id,
        limit=flt.limit + 1,
    )
    rows = await storage.list_sessions(page)
    next_position = None
    if len(rows) > flt.limit:
        rows = rows[: flt.limit]
        next_position = rows[-1].id
    return await session_views(storage, prices, rows), next_position
