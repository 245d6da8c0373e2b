"""A ``create_sessions`` batch on PostgreSQL, storage alone: time and statements per request.

Each request holds ``--sessions`` sessions with two tags each: first a batch that creates them
(with three events each), then one that ends them (with one event each), as a web service's
requests do. For each checkout of ``--code`` (run in turn, ``--runs`` times, each in a subprocess
on a fresh database of one private PostgreSQL server), the median time per request and the
statements its connection sent (asyncpg's query logger, plus the ``COPY``) are printed.

    python benchmarks/bench_pg_sessions_batch.py --code main=/tmp/main,new=. --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def _measure(dsn: str, sessions: int, requests: int) -> None:
    from agentops_async.collector._auth import new_project
    from agentops_async.collector._postgres import PostgresStorage
    from agentops_async.collector._storage import SessionWrite

    storage = PostgresStorage(dsn, pool_size=1)
    await storage.open()
    project, _ = await new_project(storage, "bench")
    sent: list[str] = []
    async with storage.pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    times: dict[str, list[float]] = {"create": [], "end": []}
    statements: dict[str, int] = {}
    for _ in range(requests):
        sids = [str(uuid.uuid4()) for _ in range(sessions)]
        batches: dict[str, tuple[list[Any], list[Any]]] = {
            "create": (
                [SessionWrite(session_id=s, project_id=project, tags=["t1", "t2"]) for s in sids],
                [(s, f"e{i}", "actions", None, None, '{"a": 1}') for s in sids for i in range(3)],
            ),
            "end": (
                [
                    SessionWrite(
                        session_id=s,
                        project_id=project,
                        state="SUCCEEDED",
                        end_state="Success",
                        tags=["t1", "t2"],
                    )
                    for s in sids
                ],
                [(s, "end", "actions", None, None, "{}") for s in sids],
            ),
        }
        for kind, (writes, rows) in batches.items():
            sent.clear()
            started = time.perf_counter()
            await storage.upsert_sessions(writes, rows)
            times[kind].append(time.perf_counter() - started)
            statements[kind] = len(sent) + 1  # and the COPY, which the logger does not see
    await storage.close()
    for kind, values in times.items():
        median = statistics.median(values[requests // 5 :]) * 1000  # after a warm-up
        print(f"{kind}\t{median:.2f}\t{statements[kind]}")


def _run(code: Path, dsn: str, sessions: int, requests: int) -> list[str]:
    args = [str(code), dsn, str(sessions), str(requests)]
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return out.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", default="new=.", help="NAME=DIR,... checkouts to compare")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20, help="sessions per request")
    parser.add_argument("--requests", type=int, default=60, help="requests of each kind")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        code, dsn, sessions, requests = args.child
        sys.path.insert(0, code)
        import agentops_async

        if not Path(agentops_async.__file__).resolve().is_relative_to(code):
            raise RuntimeError(f"{code}: imported {agentops_async.__file__} instead")
        asyncio.run(_measure(dsn, int(sessions), int(requests)))
        return
    sys.path.insert(0, str(REPO / "tests"))
    from _servers import PostgresServer

    checkouts = [item.split("=", 1) for item in args.code.split(",")]
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    server = PostgresServer.start()
    try:
        for _ in range(args.runs):  # run 1 of every checkout, then run 2, ...
            for name, directory in checkouts:
                code = Path(directory).resolve()
                for line in _run(code, server.create_database(), args.sessions, args.requests):
                    kind, ms, count = line.split("\t")
                    results.setdefault((name, kind), []).append((float(ms), int(count)))
    finally:
        server.stop()
    print(f"{args.sessions} sessions per request, median of {args.runs} runs")
    print("| checkout | request | ms/request (median) | min | max | statements |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, kind), values in results.items():
        ms = [v[0] for v in values]
        print(
            f"| {name} | {kind} | {statistics.median(ms):.2f} | {min(ms):.2f} | {max(ms):.2f}"
            f" | {values[-1][1]} |"
        )


if __name__ == "__main__":
    main()
