"""Ingest benchmark: events/s stored by the collector, SQLite and PostgreSQL.

The collector runs as a subprocess (``python -m agentops_async serve``) on a fresh database per run.
This process is the client:

- ``sdk``: one AsyncClient recording events into a few concurrent sessions as fast as it can;
  timed from the first record to the moment every event is acknowledged (``client.close()``).
- ``raw``: pre-encoded ``create_events`` batches posted over a few aiohttp connections (what the
  collector alone can take).

Every run checks delivered == recorded == stored (read back through the read API). Prints a
Markdown table with the median of the runs.

    python benchmarks/bench_ingest.py                      # both backends, both clients
    python benchmarks/bench_ingest.py --backends sqlite --events 500000 --runs 5
    git worktree add /tmp/old 5b20090       # compare an older collector, interleaved in one run
    python benchmarks/bench_ingest.py --backends postgres --code old=/tmp/old,new=.

With ``--code NAME=DIR,...`` the collector subprocess runs the ``agentops_async`` of each checkout
in turn (run 1 of every checkout, then run 2, ...: a noisy machine hits all alike); the client
side is always this checkout's SDK. Each row's ratio is to the first checkout's row.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from _servers import CollectorProcess, PostgresServer, find_postgres_bin  # noqa: E402


async def _stored_total(url: str, api_key: str, session_ids: list[str]) -> int:
    import aiohttp

    total = 0
    async with aiohttp.ClientSession(headers={"X-Agentops-Api-Key": api_key}) as http:
        for session_id in session_ids:
            async with http.get(f"{url}/api/sessions/{session_id}") as response:
                total += (await response.json())["events_total"]
    return total


async def run_sdk(url: str, api_key: str, events: int, sessions: int) -> float:
    """Record ``events`` with our SDK; returns events/s (first record -> all acknowledged)."""
    import agentops_async as ao

    client = ao.AsyncClient(
        api_key=api_key,
        endpoint=url,
        log_session_stats=False,
        backpressure="block",
        backpressure_timeout=60.0,
        max_queue_size=100_000,
        flush_interval=0.05,
    )
    per_session = events // sessions
    opened = [await client.session(tags=["bench"]).start() for _ in range(sessions)]
    params = {"query": "benchmark", "k": 3}

    async def record_all(session: Any) -> None:
        record = session.record
        for i in range(per_session):
            await record(ao.ActionEvent(action_type="step", params=params, returns=i))

    started = time.perf_counter()
    await asyncio.gather(*(record_all(s) for s in opened))
    for session in opened:
        await session.end(ao.SessionState.SUCCEEDED)
    await client.close(timeout=300)
    elapsed = time.perf_counter() - started
    recorded = per_session * sessions
    delivered = sum(s.stats.delivered for s in opened)
    stored = await _stored_total(url, api_key, [s.session_id for s in opened])
    if not recorded == delivered == stored:
        raise AssertionError(f"recorded {recorded}, delivered {delivered}, stored {stored}")
    return recorded / elapsed


async def run_raw(url: str, api_key: str, events: int, batch: int, connections: int) -> float:
    """Post pre-encoded batches with aiohttp; returns events/s."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        session_id = str(uuid.uuid4())
        async with http.post(
            f"{url}/v2/create_session",
            json={"session": {"session_id": session_id}},
            headers={"X-Agentops-Api-Key": api_key},
        ) as response:
            jwt = (await response.json())["jwt"]
        prefix = str(uuid.uuid4())[:24]  # time-ordered ids, like the SDK's
        counter = itertools.count()
        bodies = []
        for _ in range(events // batch):
            batch_events = [
                {
                    "id": f"{prefix}{next(counter):012x}",
                    "event_type": "actions",
                    "init_timestamp": "2026-01-01T00:00:00.000000Z",
                    "end_timestamp": "2026-01-01T00:00:00.000100Z",
                    "session_id": session_id,
                    "action_type": "step",
                    "params": {"query": "benchmark", "k": 3},
                    "returns": 1,
                }
                for _ in range(batch)
            ]
            bodies.append(json.dumps({"events": batch_events}).encode())
        headers = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
        pending = list(reversed(bodies))

        async def post_batches() -> None:
            while pending:
                body = pending.pop()
                async with http.post(
                    f"{url}/v2/create_events", data=body, headers=headers
                ) as response:
                    if response.status != 200:
                        raise AssertionError(f"{response.status}: {await response.text()}")

        started = time.perf_counter()
        await asyncio.gather(*(post_batches() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    sent = batch * len(bodies)
    stored = await _stored_total(url, api_key, [session_id])
    if stored != sent:
        raise AssertionError(f"sent {sent}, stored {stored}")
    return sent / elapsed


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time of a process (Linux ``/proc``); with ``children``, also of its exited children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (exited, waited for)
    return ticks / os.sysconf("SC_CLK_TCK")


def _server_cpu(pg: PostgresServer) -> float:
    """CPU time of this PostgreSQL cluster: the postmaster, its exited and its live children."""
    try:
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = _cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                total += _cpu_seconds(int(entry.name))
    return total


@dataclass
class Sample:
    """One run: events/s, and the CPU seconds the collector and the database server used."""

    rate: float
    collector_cpu: float
    database_cpu: float


def _one_run(
    backend: str,
    client: str,
    args: argparse.Namespace,
    pg: PostgresServer | None,
    work: Path,
    code_dir: Path,
) -> Sample:
    database = pg.create_database() if pg else str(work / f"bench-{uuid.uuid4().hex[:8]}.db")
    process = CollectorProcess(database, backend, work / "collector.log", code_dir=code_dir)
    process.start()
    try:
        _, api_key = process.create_project("bench")
        assert process.process is not None
        pid = process.process.pid
        collector_before = _cpu_seconds(pid)
        database_before = _server_cpu(pg) if pg else 0.0
        if client == "sdk":
            rate = asyncio.run(run_sdk(process.url, api_key, args.events, args.sessions))
        else:
            rate = asyncio.run(
                run_raw(process.url, api_key, args.events, args.batch_size, args.connections)
            )
        return Sample(
            rate,
            _cpu_seconds(pid) - collector_before,
            (_server_cpu(pg) - database_before) if pg else 0.0,
        )
    finally:
        process.stop()
        if pg is None:
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)
        else:
            pg.drop_database(database)


def _checkouts(text: str) -> list[tuple[str, Path]]:
    """``--code``: ``name=dir`` pairs (a bare ``dir`` is named after itself)."""
    pairs = []
    for item in filter(None, text.split(",")):
        name, _, path = item.rpartition("=")
        code_dir = Path(path).resolve()
        if not (code_dir / "agentops_async" / "__init__.py").exists():
            raise SystemExit(f"--code {item}: no agentops_async package in {code_dir}")
        pairs.append((name or path, code_dir))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--clients", default="sdk,raw")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent SDK sessions")
    parser.add_argument("--batch-size", type=int, default=1000, help="raw client batch size")
    parser.add_argument("--connections", type=int, default=4, help="raw client connections")
    parser.add_argument(
        "--code",
        default=f"current={REPO}",
        help="NAME=DIR,...: the checkouts whose collectors are compared (default: this one)",
    )
    args = parser.parse_args()
    checkouts = _checkouts(args.code)

    rows = []
    work = Path(tempfile.mkdtemp(prefix="agentops-bench-"))
    for backend in args.backends.split(","):
        pg = None
        if backend == "postgres":
            if find_postgres_bin() is None:
                print("postgres: initdb not found, skipped", file=sys.stderr)
                continue
            # A durable server (fsync on), commits not waiting for the disk, like SQLite's WAL
            # with synchronous=NORMAL.
            pg = PostgresServer.start(settings={"fsync": "on", "full_page_writes": "on"})
        try:
            for client in args.clients.split(","):
                runs: dict[str, list[Sample]] = {name: [] for name, _ in checkouts}
                for _ in range(args.runs):
                    for name, code_dir in checkouts:
                        sample = _one_run(backend, client, args, pg, work, code_dir)
                        runs[name].append(sample)
                        print(
                            f"{backend}/{client}/{name}: {sample.rate:,.0f} events/s, CPU"
                            f" {sample.collector_cpu:.2f} s collector +"
                            f" {sample.database_cpu:.2f} s database",
                            file=sys.stderr,
                        )
                first = statistics.median(s.rate for s in runs[checkouts[0][0]])
                for name, samples in runs.items():
                    rates = [s.rate for s in samples]
                    median = statistics.median(rates)
                    per_event = 1e6 / args.events
                    collector_us = statistics.median(s.collector_cpu for s in samples) * per_event
                    database_us = statistics.median(s.database_cpu for s in samples) * per_event
                    rows.append(
                        (
                            backend,
                            client,
                            name,
                            median,
                            min(rates),
                            max(rates),
                            median / first,
                            collector_us,
                            database_us,
                        )
                    )
        finally:
            if pg is not None:
                pg.stop()
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.events:,} events per run, median of {args.runs} runs "
          f"(sdk: {args.sessions} sessions; raw: {args.batch_size}-event batches, "
          f"{args.connections} connections)\n")  # fmt: skip
    print(
        "| backend | client | collector | events/s (median) | min | max | ratio |"
        " collector CPU µs/event | database CPU µs/event |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for backend, client, name, median, low, high, ratio, collector_us, database_us in rows:
        database = f"{database_us:.1f}" if backend == "postgres" else "(in the collector)"
        print(
            f"| {backend} | {client} | {name} | {median:,.0f} | {low:,.0f} | {high:,.0f}"
            f" | {ratio:.2f}x | {collector_us:.1f} | {database} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
