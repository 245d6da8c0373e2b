"""Figure 2: end-to-end throughput, events/s from ``record()`` to stored in the collector.

Reuses ``bench_ingest.py`` (helper-1's): a collector subprocess (``python -m agentops_async
serve``) on a fresh SQLite file or PostgreSQL database per run; the ``sdk`` client records into 4
concurrent sessions and is timed until ``client.close()`` returns with everything acknowledged;
``raw`` posts pre-encoded 1,000-event batches over 4 connections (the collector's own ceiling).
``bench_ingest.run_sdk``/``run_raw`` verify recorded == delivered == stored (read API) on every
run. The agentops 0.3.26 row is taken from figure 1's peer runs (record until ``end_session()``
returned, stored count checked through our collector's read API).
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from typing import Any

from _report import Figure, Options
from _servers import CollectorProcess, PostgresServer, find_postgres_bin
from bench_ingest import run_raw, run_sdk

SQLITE_SDK = "agentops_async SDK -> collector (SQLite)"
SQLITE_RAW = "raw pre-encoded batches -> collector (SQLite)"
PG_SDK = "agentops_async SDK -> collector (PostgreSQL)"
PG_RAW = "raw pre-encoded batches -> collector (PostgreSQL)"
AGENTOPS = "agentops 0.3.26 -> collector (SQLite)"


def _one(figure: Figure, row: str, opts: Options, database: str, backend: str, events: int,
         client: str) -> None:  # fmt: skip
    process = CollectorProcess(database, backend, opts.work_dir / f"collector-{backend}.log")
    process.start()
    try:
        _, key = process.create_project("bench")
        if client == "sdk":
            rate = asyncio.run(run_sdk(process.url, key, events, 4))
        else:
            rate = asyncio.run(run_raw(process.url, key, events, 1000, 4))
    except AssertionError as exc:
        figure.row(row).extra["delivered"] = f"FAILED: {exc}"
        return
    finally:
        process.stop()
    recorded = events // 4 * 4 if client == "sdk" else events // 1000 * 1000
    figure.row(row).samples.append(rate)
    figure.row(row).extra.setdefault("delivered", f"{recorded:,}/{recorded:,} stored")


def _start_postgres(figure: Figure, opts: Options) -> PostgresServer | None:
    why = None
    if not opts.postgres:
        why = "--no-postgres"
    elif find_postgres_bin() is None:
        why = "PostgreSQL server binaries (initdb) not found"
    else:
        try:
            # Durable like SQLite WAL + synchronous=NORMAL (bench_ingest's choice).
            return PostgresServer.start(settings={"fsync": "on", "full_page_writes": "on"})
        except (OSError, RuntimeError) as exc:
            why = f"could not start PostgreSQL: {str(exc).splitlines()[0][:160]}"
    for row in (PG_SDK, PG_RAW):
        figure.row(row).why_missing = why
    return None


def _agentops_row(figure: Figure, peers: dict[str, list[dict[str, Any]]] | None) -> None:
    results = (peers or {}).get("agentops") or []
    row = figure.row(AGENTOPS)
    if not results:
        row.why_missing = "no agentops 0.3.26 results from figure 1 (peers off or failed)"
        return
    row.samples = [r.get("timed_events", r["recorded"]) / r["total_s"] for r in results]
    stored = min(r["stored"] for r in results)
    row.extra["delivered"] = f"{stored:,}/{results[0]['recorded']:,} stored"
    figure.notes.append(
        f"agentops 0.3.26: figure 1's runs ({results[0].get('timed_events', 0):,} timed events "
        "each, half of them built inside the loop), from the first record() to end_session() "
        "returning; its export is a BatchSpanProcessor of 32-span batches over `requests`."
    )


def run(opts: Options, peers: dict[str, list[dict[str, Any]]] | None = None) -> Figure:
    """Measure figure 2."""
    events = opts.size(200_000, 4_000)
    repeats = min(opts.repeats, 3)
    figure = Figure("throughput", "2. End-to-end throughput, record() to stored", "events/s",
                    lower_is_better=False, reference=SQLITE_SDK)  # fmt: skip
    for name in (SQLITE_SDK, SQLITE_RAW, PG_SDK, PG_RAW):
        figure.row(name)
    pg = _start_postgres(figure, opts)
    try:
        for _ in range(repeats):
            for client, row in (("sdk", SQLITE_SDK), ("raw", SQLITE_RAW)):
                path = str(opts.work_dir / f"tp-{uuid.uuid4().hex[:8]}.db")
                _one(figure, row, opts, path, "sqlite", events, client)
            if pg is not None:
                for client, row in (("sdk", PG_SDK), ("raw", PG_RAW)):
                    _one(figure, row, opts, pg.create_database(), "postgres", events, client)
    finally:
        if pg is not None:
            pg.stop()
    _agentops_row(figure, peers)
    figure.notes.insert(0, (
        f"{events:,} events per run, {repeats} runs per row (bench_ingest.py: SDK with 4 "
        "concurrent sessions, max_queue_size=100k, flush_interval=0.05 s; raw: 1,000-event "
        "batches over 4 connections). Collector and client share the 2 CPUs."
    ))  # fmt: skip
    if figure.rows[0].samples:
        figure.notes.append(
            f"Goal >= 100,000 events/s on SQLite: median "
            f"{statistics.median(figure.rows[0].samples):,.0f}."
        )
    return figure
