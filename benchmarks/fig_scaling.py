"""Figure 6: how the cost per event grows with concurrent sessions and with the event count.

Producer cost: µs per ``await session.record()`` measured while the exporter runs on the same
loop (every task yields with ``await asyncio.sleep(0)`` after each 100 events, so sessions
interleave and the exporter gets its turns, as in a real agent). End-to-end: µs per event from
the first record to ``client.close()`` returning with everything acknowledged by a collector
subprocess (SQLite). ``max_queue_size`` is set above the event count so that backpressure never
blocks the producer (the bounded-queue behaviour is figure 4's subject).
"""

from __future__ import annotations

import asyncio
import time

from _common import collector, stored_total
from _report import Figure, Options

import agentops_async as ao


async def _measure(url: str, key: str, sessions: int, events: int) -> tuple[float, float, int, int]:
    """(producer µs/event, end-to-end µs/event, recorded, stored)."""
    client = ao.AsyncClient(api_key=key, endpoint=url, log_session_stats=False,
                            max_queue_size=events + 1000, shutdown_timeout=600)  # fmt: skip
    opened = [await client.session(tags=["scaling"]).start() for _ in range(sessions)]
    per_session = events // sessions
    producer_time = [0.0]

    async def produce(session: ao.AsyncSession) -> None:
        record, Event = session.record, ao.ActionEvent
        for start in range(0, per_session, 100):
            t0 = time.perf_counter()
            for i in range(start, min(start + 100, per_session)):
                await record(Event(action_type="search", params={"q": "weather", "i": i}))
            producer_time[0] += time.perf_counter() - t0
            await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(*(produce(s) for s in opened))
    for session in opened:
        await session.end(wait=False)
    await client.close(600)
    total = time.perf_counter() - t0
    recorded = per_session * sessions
    stored = await stored_total(url, key, [s.session_id for s in opened])
    return producer_time[0] / recorded * 1e6, total / recorded * 1e6, recorded, stored


def run(opts: Options) -> Figure:
    """Measure figure 6."""
    repeats = min(opts.repeats, 3)
    total = opts.size(100_000, 2_000)
    sizes = [1_000, 10_000, 100_000, 1_000_000] if not opts.smoke else [1_000, 3_000]
    configs = [(s, total) for s in (1, 10, 100)] + [(1, n) for n in sizes if n != total]
    reference = f"1 session, {total:,} events"
    figure = Figure("scaling", "6. Scaling: producer cost per event vs sessions and events",
                    "µs/event", reference=reference)  # fmt: skip
    end_to_end: dict[str, list[float]] = {}
    with collector(opts, "scaling") as (url, key):
        for _ in range(repeats):
            for sessions, events in configs:
                name = f"{sessions} session{'s' if sessions > 1 else ''}, {events:,} events"
                producer, e2e, recorded, stored = asyncio.run(_measure(url, key, sessions, events))
                row = figure.row(name)
                row.samples.append(producer)
                end_to_end.setdefault(name, []).append(e2e)
                previous = row.extra.get("delivered", "")
                if not previous or previous.split("/")[0] == previous.split("/")[1].split()[0]:
                    row.extra["delivered"] = f"{stored:,}/{recorded:,} stored"
    figure.rows.sort(
        key=lambda r: (int(r.name.split()[0]), int(r.name.split()[2].replace(",", "")))
    )
    for row in figure.rows:
        values = sorted(end_to_end[row.name])
        row.name = "agentops_async " + row.name
        row.extra["end-to-end µs/event (median)"] = f"{values[len(values) // 2]:.2f}"
    figure.reference = "agentops_async " + reference
    figure.notes.append(
        f"{repeats} runs per row; one collector subprocess (SQLite) for all runs. The producer "
        "column includes the exporter's work that runs on the loop between chunks of 100."
    )
    return figure
