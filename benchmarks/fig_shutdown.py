"""Figure 5: shutdown, time until 100k pending events are acknowledged by the collector.

100k events are recorded without yielding (so all of them are still queued), then the clock runs
for ``await session.end()`` (waits for acknowledgement) or ``await client.close()`` (drains the
queue, stops the exporter, closes HTTP). The collector is a subprocess on SQLite or PostgreSQL;
stored == recorded is checked through its read API afterwards. The peers' rows come from figure
1's runs (their own end/flush with their own, smaller, pending counts: see notes).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from _common import collector, stored_total
from _report import Figure, Options
from _servers import PostgresServer, find_postgres_bin

import agentops_async as ao

END_SQLITE = "agentops_async await session.end() (SQLite)"
CLOSE_SQLITE = "agentops_async await client.close() (SQLite)"
END_PG = "agentops_async await session.end() (PostgreSQL)"
AGENTOPS = "agentops 0.3.26 end_session()"
LANGFUSE = "langfuse flush()"


async def _measure(url: str, key: str, events: int, how: str) -> tuple[float, int, int]:
    """Seconds for end()/close() with ``events`` pending; (seconds, recorded, stored)."""
    client = ao.AsyncClient(api_key=key, endpoint=url, log_session_stats=False,
                            max_queue_size=events + 1000, shutdown_timeout=300)  # fmt: skip
    session = await client.session(tags=["shutdown"]).start()
    record, Event = session.record, ao.ActionEvent
    for i in range(events):
        await record(Event(action_type="search", params={"q": "weather", "i": i}))
    t0 = time.perf_counter()
    if how == "end":
        await session.end(timeout=300)
        elapsed = time.perf_counter() - t0
        await client.close(60)
    else:
        await client.close(300)
        elapsed = time.perf_counter() - t0
    stored = await stored_total(url, key, [session.session_id])
    return elapsed, session.stats.recorded, stored


def _add(figure: Figure, row: str, result: tuple[float, int, int]) -> None:
    elapsed, recorded, stored = result
    figure.row(row).samples.append(elapsed * 1e3)
    previous = figure.row(row).extra.get("delivered", "")
    if not previous or previous.split("/")[0] == previous.split("/")[1].split()[0]:
        figure.row(row).extra["delivered"] = f"{stored:,}/{recorded:,} stored"


def _peer_rows(figure: Figure, peers: dict[str, list[dict[str, Any]]] | None) -> None:
    cases = (
        ("agentops", AGENTOPS, "pending spans when end_session() is called"),
        ("langfuse", LANGFUSE, "spans pending when flush() is called"),
    )
    for key, row, what in cases:
        results = (peers or {}).get(key) or []
        if not results:
            figure.row(row).why_missing = "no peer results from figure 1 (peers off or failed)"
            continue
        figure.row(row).samples = [r["end_s"] * 1e3 for r in results]
        figure.row(row).extra["events recorded before"] = f"{results[0]['recorded']:,}"
        if "stored" in results[0]:
            stored = min(r["stored"] for r in results)
            figure.row(row).extra["delivered"] = f"{stored:,}/{results[0]['recorded']:,} stored"
        figure.notes.append(
            f"{row}: figure 1's runs, {results[0]['recorded']:,} events recorded before "
            f"(up to all of them are {what}); not 100k: see figure 1 for why the peers' sizes "
            "are smaller."
        )


def run(opts: Options, peers: dict[str, list[dict[str, Any]]] | None = None) -> Figure:
    """Measure figure 5."""
    events = opts.size(100_000, 3_000)
    repeats = min(opts.repeats, 3)
    figure = Figure("shutdown", f"5. Shutdown with {events:,} events pending", "ms",
                    reference=END_SQLITE)  # fmt: skip
    for name in (END_SQLITE, CLOSE_SQLITE, END_PG):
        figure.row(name)
    pg: PostgresServer | None = None
    if not opts.postgres or find_postgres_bin() is None:
        figure.row(END_PG).why_missing = "PostgreSQL off or initdb not found"
    else:
        try:
            pg = PostgresServer.start(settings={"fsync": "on", "full_page_writes": "on"})
        except (OSError, RuntimeError) as exc:
            figure.row(END_PG).why_missing = f"could not start PostgreSQL: {str(exc)[:120]}"
    try:
        for rep in range(repeats):
            with collector(opts, f"shutdown-{rep}") as (url, key):
                _add(figure, END_SQLITE, asyncio.run(_measure(url, key, events, "end")))
                _add(figure, CLOSE_SQLITE, asyncio.run(_measure(url, key, events, "close")))
            if pg is not None:
                with collector(opts, f"shutdown-pg-{rep}", pg.create_database()) as (url, key):
                    _add(figure, END_PG, asyncio.run(_measure(url, key, events, "end")))
    finally:
        if pg is not None:
            pg.stop()
    _peer_rows(figure, peers)
    if figure.rows[0].samples:
        ms = statistics.median(figure.rows[0].samples)
        figure.notes.insert(0, (
            f"{repeats} runs per row; {events:,} events recorded without yielding, then the "
            f"clock runs until acknowledged: {events / ms * 1e3:,.0f} events/s drained "
            "(default batch size 1,000, one request in flight per session)."
        ))  # fmt: skip
    return figure
