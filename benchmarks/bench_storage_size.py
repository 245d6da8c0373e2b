"""Database size per million events, SQLite and PostgreSQL; and after a prune of all of it.

Fills a fresh database of each backend directly through the storage (no HTTP: fast) with
``--events`` events of the shape the SDK sends (an ActionEvent, 388 bytes of JSON) in
``--sessions`` sessions, then reports the size on disk scaled to a million events. Then prunes
everything and reports the size again (SQLite gives the pages back; PostgreSQL keeps its files for
new rows). About 20 s for the defaults.

    python benchmarks/bench_storage_size.py
    python benchmarks/bench_storage_size.py --backends sqlite --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from _servers import PostgresServer, find_postgres_bin  # noqa: E402

from agentops_async.collector import open_storage, prune  # noqa: E402
from agentops_async.collector._auth import new_project  # noqa: E402
from agentops_async.collector._storage import EventRow, SessionWrite  # noqa: E402

_BATCH = 1000


def _event(session_id: str) -> EventRow:
    event_id = str(uuid.uuid4())
    stamp = "2026-01-01T00:00:00.000000+00:00"
    data = json.dumps(
        {
            "id": event_id,
            "event_type": "actions",
            "init_timestamp": stamp,
            "end_timestamp": stamp,
            "session_id": session_id,
            "agent_id": None,
            "action_type": "search",
            "params": {"query": "what is the capital of France", "k": 3},
            "returns": ["Paris", "Lyon", "Marseille"],
            "logs": None,
            "screenshot": None,
        },
        separators=(",", ":"),
    )
    return (session_id, event_id, "actions", data)  # as the collector's rows (EventRow)


async def _size(database: str) -> int:
    if database.startswith("postgresql://"):
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            await conn.execute("CHECKPOINT")
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        finally:
            await conn.close()
    # After close: the WAL is checkpointed into the file.
    return await asyncio.to_thread(os.path.getsize, database)


async def measure(database: str, events: int, sessions: int) -> tuple[int, int, int, float]:
    """``(empty, full, after prune)`` sizes in bytes and the fill rate (events/s)."""
    storage = open_storage(database)
    await storage.open()
    project_id, _ = await new_project(storage, "size")
    await storage.close()
    empty = await _size(database)

    storage = open_storage(database)
    await storage.open()
    started = time.perf_counter()
    ids = [str(uuid.uuid4()) for _ in range(sessions)]
    for session_id in ids:
        write = SessionWrite(session_id, project_id, init_ts=time.time() - 86400 * 60, end_ts=0.0)
        await storage.upsert_session(write)
    per_session = events // sessions
    for session_id in ids:
        for start in range(0, per_session, _BATCH):
            count = min(_BATCH, per_session - start)
            await storage.insert_events([_event(session_id) for _ in range(count)])
    rate = per_session * sessions / (time.perf_counter() - started)
    await storage.close()
    full = await _size(database)

    storage = open_storage(database)
    await storage.open()
    await prune(storage, 30 * 86400)
    await storage.close()
    return empty, full, await _size(database), rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agentops-size-"))
    rows = []
    for backend in args.backends.split(","):
        pg = None
        if backend == "postgres":
            if find_postgres_bin() is None:
                print("postgres: initdb not found, skipped", file=sys.stderr)
                continue
            pg = PostgresServer.start()
            database = pg.create_database()
        else:
            database = str(work / "size.db")
        try:
            empty, full, pruned, rate = asyncio.run(measure(database, args.events, args.sessions))
        finally:
            if pg is not None:
                pg.stop()
        stored = args.events // args.sessions * args.sessions
        per_event = (full - empty) / stored
        rows.append((backend, per_event, per_event * 1e6 / 2**20, full, pruned, rate))

    print(f"\n{args.events:,} events in {args.sessions} sessions (388-byte ActionEvent JSON)\n")
    print("| backend | bytes/event | MiB per million events | full | after prune (all) |")
    print("|---|---:|---:|---:|---:|")
    for backend, per_event, mib, full, pruned, _ in rows:
        print(
            f"| {backend} | {per_event:,.0f} | {mib:,.0f} | {full / 2**20:,.1f} MiB"
            f" | {pruned / 2**20:,.1f} MiB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
