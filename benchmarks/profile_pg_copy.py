"""PostgreSQL's own CPU per ingested event, without the collector: the floor of PostgreSQL ingest.

COPYs the records the collector makes for ``bench_ingest.py``'s events (the same columns, the
same JSON) into fresh databases with the collector's current schema, one batch per COPY in its
own transaction (as the collector does), and reports the CPU the database server used per event
(``/proc`` of the connection's backend, and of the whole cluster: WAL writer, checkpointer,
autovacuum included), for variants of the schema:

    python benchmarks/profile_pg_copy.py                       # every variant, 3 rounds
    python benchmarks/profile_pg_copy.py --variants current,no-triggers --events 200000

Variants run interleaved (round 1 of every variant, then round 2, ...) and the table shows the
medians. The server runs with PostgreSQL's durability defaults (fsync, full_page_writes,
synchronous_commit on), like ``bench_ingest.py``'s.

``--mix`` makes every fifth event an LLM call (model, tokens, cost) and every fifth a tool call
(name, 40 ms), so that the rollups have work; without it all are actions, like the benchmark's.

Variants (each applied to a database the collector migrated to its current schema):

- ``schema-7``: the database taken back to schema version 7 (``events.data`` as ``json``, two
  statement triggers), with tests/_schema.py: the schema before this benchmark's changes.
- ``schema-8``: taken back to schema version 8 (``events.session_id`` as ``text``, not ``uuid``).
- ``current``: the schema as the collector makes it.
- ``no-triggers``: without the statement trigger that keeps the rollups.
- ``no-seq-default``: ``seq`` not filled from its sequence (no ``nextval`` per row).
- ``no-pkey``, ``no-by-session``: without that index (schema 7 also had ``events_llm_by_session``
  and ``events_tool_cost_by_session``, partial: see ``schema-7``).
- ``default-collation``: the key ids as text with the database's default collation, as before
  schema 8 (schema 8 compares them byte by byte, collation ``"C"``; schema 9 keeps the session's
  id as a ``uuid``).
- ``bare``: no trigger, index or sequence (the heap and its WAL alone).

Results (2 cores shared with other work; 200,000 events, 1000-event COPYs, medians of 5):
see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from _schema import downgrade  # noqa: E402
from _servers import PostgresServer  # noqa: E402
from bench_ingest import _cpu_seconds  # noqa: E402
from bench_ingest import _server_cpu as _cluster_cpu  # noqa: E402

from agentops_async.collector._storage import ROW_COLUMNS  # noqa: E402
from agentops_async.events import EventType  # noqa: E402

_NO_TRIGGER = "DROP TRIGGER events_rollups ON events;"
_INDEXES = "ALTER TABLE events DROP CONSTRAINT events_pkey; DROP INDEX events_by_session;"
_NO_SEQ = "ALTER TABLE events ALTER COLUMN seq DROP DEFAULT, ALTER COLUMN seq DROP NOT NULL;"
_DEFAULT_COLLATION = (
    'ALTER TABLE events ALTER COLUMN session_id TYPE text COLLATE "default",'
    ' ALTER COLUMN id TYPE text COLLATE "default";'
)

# The variants: DDL run on a database the collector migrated (``schema-N`` is taken back to
# schema version N first, with tests/_schema.py).
VARIANTS: dict[str, str] = {
    "schema-7": "",
    "schema-8": "",
    "current": "",
    "no-triggers": _NO_TRIGGER,
    "no-seq-default": _NO_SEQ,
    "no-pkey": "ALTER TABLE events DROP CONSTRAINT events_pkey;",
    "no-by-session": "DROP INDEX events_by_session;",
    "default-collation": _DEFAULT_COLLATION,
    "bare": _NO_TRIGGER + _INDEXES + _NO_SEQ,
}


def batches(
    events: int, batch: int, sessions: int, mix: bool = False
) -> list[list[tuple[object, ...]]]:
    """``bench_ingest.py``'s raw events as the collector's COPY records, ``batch`` a COPY, the
    batches spread over ``sessions`` sessions in turn (with ``mix``, LLM and tool calls too)."""
    session_ids = [str(uuid.uuid4()) for _ in range(sessions)]
    prefix = str(uuid.uuid4())[:24]
    counter = itertools.count()
    out = []
    for n in range(events // batch):
        session_id = session_ids[n % sessions]
        records = []
        for i in range(batch):
            kind = ("llms", "tools", "actions", "actions", "actions")[i % 5] if mix else "actions"
            event: dict[str, object] = {
                "id": f"{prefix}{next(counter):012x}",
                "event_type": kind,
                "init_timestamp": "2026-01-01T00:00:00.000000Z",
                "end_timestamp": "2026-01-01T00:00:00.040000Z",
                "session_id": session_id,
                "params": {"query": "benchmark", "k": 3},
                "returns": 1,
            }
            usage: tuple[object, ...] = (None, None, None, None)
            if kind == "llms":
                event.update(model="gpt-4o", prompt_tokens=120, completion_tokens=30, cost=0.001)
                usage = ("gpt-4o", 120, 30, 0.001)
            elif kind == "tools":
                event["name"] = "search"
            else:
                event["action_type"] = "step"
            records.append(
                (session_id, event["id"], kind, *_span(event, kind), json.dumps(event), *usage)
            )
        # As the collector's rows (EventRow): no column that is NULL for the whole batch.
        out.append(records if mix else [(r[0], r[1], r[2], r[5]) for r in records])
    return out


def _span(event: dict[str, object], kind: str) -> tuple[object, object]:
    """The timestamps' columns of an event: a tool call's only, as the collector stores them."""
    if kind != EventType.TOOL:
        return None, None
    return event["init_timestamp"], event["end_timestamp"]


async def _copy_all(conn: Any, work: list[list[tuple[object, ...]]]) -> None:
    for records in work:  # each COPY its own transaction, as the collector's
        columns = ROW_COLUMNS[len(records[0])]
        await conn.copy_records_to_table("events", records=records, columns=columns)


async def measure(
    pg: PostgresServer, variant: str, work: list[list[tuple[object, ...]]], events: int
) -> tuple[float, float, float]:
    """One run of ``variant``: (backend µs/event, cluster µs/event, events/s)."""
    import asyncpg

    from agentops_async.collector._postgres import PostgresStorage

    dsn = pg.create_database()
    try:
        storage = PostgresStorage(dsn)
        await storage.open()
        await storage.close()
        conn = await asyncpg.connect(dsn)
        try:
            if variant.startswith("schema-"):
                await downgrade(dsn, int(variant.removeprefix("schema-")))
            if VARIANTS[variant]:
                await conn.execute(VARIANTS[variant])
            await conn.execute("CHECKPOINT")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            before, cluster_before = _cpu_seconds(backend), _cluster_cpu(pg)
            started = time.perf_counter()
            await _copy_all(conn, work)
            elapsed = time.perf_counter() - started
            used, cluster_used = _cpu_seconds(backend) - before, _cluster_cpu(pg) - cluster_before
        finally:
            await conn.close()
    finally:
        pg.drop_database(dsn)
    return used / events * 1e6, cluster_used / events * 1e6, events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--mix", action="store_true", help="LLM and tool calls among the events")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
    work = batches(args.events, args.batch_size, args.sessions, args.mix)
    events = len(work) * args.batch_size
    pg = PostgresServer.start(
        settings={"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
    )
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    try:
        for _ in range(args.rounds):
            for variant in variants:
                results[variant].append(asyncio.run(measure(pg, variant, work, events)))
    finally:
        pg.stop()
    mixed = ", mixed types" if args.mix else ""
    print(
        f"\n{events} events, {args.batch_size}-event COPYs over {args.sessions} sessions, "
        f"{args.rounds} rounds (medians){mixed}; load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| variant | backend µs/event | cluster µs/event | events/s |")
    print("|---|---:|---:|---:|")
    for variant in variants:
        rows = results[variant]
        backend = statistics.median(r[0] for r in rows)
        cluster = statistics.median(r[1] for r in rows)
        rate = statistics.median(r[2] for r in rows)
        print(f"| {variant} | {backend:.2f} | {cluster:.2f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
