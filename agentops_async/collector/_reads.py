"""The read model: sessions with their stats, shared by the HTTP read API and the CLI."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from ._prices import PriceTable, format_cost
from ._storage import SessionFilter, SessionRow, Storage

__all__ = ["SessionView", "list_session_views", "session_views"]


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
    storage: Storage, prices: PriceTable, rows: list[SessionRow]
) -> list[SessionView]:
    """Views of ``rows`` with counts and cost (two grouped queries, whatever the page size)."""
    ids = [r.id for r in rows]
    counts = await storage.event_counts(ids)
    costs = prices.session_costs(await storage.llm_usage(ids))
    views = []
    for row in rows:
        by_type = counts.get(row.id, {})
        duration = None
        if row.init_ts is not None and row.end_ts is not None:
            duration = round(row.end_ts - row.init_ts, 6)
        views.append(
            SessionView(
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
                host_env=msgspec.Raw(row.host_env.encode())
                if row.host_env
                else msgspec.Raw(b"null"),
            )
        )
    return views


async def list_session_views(
    storage: Storage, prices: PriceTable, flt: SessionFilter
) -> tuple[list[SessionView], str | None]:
    """A page of session views and the cursor of the next page (None on the last page)."""
    page = SessionFilter(
        project_id=flt.project_id,
        tag=flt.tag,
        state=flt.state,
        since=flt.since,
        until=flt.until,
        before_seq=flt.before_seq,
        limit=flt.limit + 1,
    )
    rows = await storage.list_sessions(page)
    next_cursor = None
    if len(rows) > flt.limit:
        rows = rows[: flt.limit]
        next_cursor = str(rows[-1].seq)
    return await session_views(storage, prices, rows), next_cursor
