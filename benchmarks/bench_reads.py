"""Read benchmark: the read API's queries on a large database, median and p95 per query.

Each backend is filled straight from Python (``_fill.py``: COPY / executemany, not HTTP) with
``--sessions`` sessions and ``--events`` events (a few sessions of 100,000), then a collector
subprocess serves it on loopback and every query of :data:`QUERIES` is timed over HTTP (request
sent to response read, keep-alive), the queries taking turns so that noise hits all alike.
The dashboard's requests (every request a person's first view of a page makes: the HTML and the
JSON its script loads) are timed the same way, signed in once through the real sign-in form.
The database is deleted afterwards (``--keep`` keeps the SQLite file).

    python benchmarks/bench_reads.py --events 1000000                # both backends, ~3 min
    python benchmarks/bench_reads.py --backends postgres --events 10000000 --repeats 50

A query is one entry of :data:`QUERIES`: a name, its goal (ms at p95, or None) and a function of
the :class:`Reads` context that returns the URL path to GET (it may pick a different session each
time), and whether it is a dashboard request (sent with the sign-in cookie, not the API key). Add
yours there.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from _fill import Fill, fill_database  # noqa: E402
from _servers import CollectorProcess, PostgresServer, find_postgres_bin  # noqa: E402


@dataclass
class Reads:
    """What a query can use: the filled database's ids, cursors made in setup, a seeded rng."""

    fill: Fill
    rng: random.Random
    deep_sessions_cursor: str = ""  # the session list, 2,500 sessions in
    later_events_cursor: str = ""  # a big session's events, 50,000 in
    small_session_ids: list[str] = field(default_factory=list)
    deep_list_path: str = ""  # the dashboard's sessions list, 2,500 sessions in
    newest_ids: list[str] = field(default_factory=list)  # the rows of the list's first page
    big_after_first: dict[str, str] = field(default_factory=dict)  # a big session: its 2nd page

    def any_session(self) -> str:
        return self.rng.choice(self.small_session_ids)

    def big_session(self) -> str:
        return self.rng.choice(self.fill.big_session_ids)

    def status_path(self) -> str:
        """The list's live-update call for its whole first page (as if every row ran)."""
        return "/ui/api/sessions/status?" + "&".join(f"id={i}" for i in self.newest_ids)

    def big_next_events(self) -> str:
        """The waterfall's second request on a big session: the next 5,000 events."""
        session_id = self.big_session()
        cursor = self.big_after_first[session_id]
        return f"/ui/api/sessions/{session_id}/events?limit=5000&cursor={cursor}"

    def old_range(self) -> str:
        """A week, 60 days ago (the list walks the newer sessions before it finds these)."""
        start = self.fill.last_ts - 60 * 86400
        return f"since={start:.0f}&until={start + 7 * 86400:.0f}"


@dataclass(frozen=True)
class ReadQuery:
    name: str
    goal_ms: float | None
    path: Callable[[Reads], str]
    dashboard: bool = False


QUERIES: list[ReadQuery] = [
    ReadQuery("sessions list, newest 50", 100, lambda r: "/api/sessions"),
    ReadQuery("sessions list, state=failed", 100, lambda r: "/api/sessions?state=failed"),
    ReadQuery("sessions list, tag=env-prod", 100, lambda r: "/api/sessions?tag=env-prod"),
    ReadQuery("sessions list, a week 60 days ago", 100, lambda r: f"/api/sessions?{r.old_range()}"),
    ReadQuery(
        "sessions list, page 51 (2,500 in)",
        100,
        lambda r: f"/api/sessions?cursor={r.deep_sessions_cursor}",
    ),
    ReadQuery("session detail (counts, cost)", None, lambda r: f"/api/sessions/{r.any_session()}"),
    ReadQuery(
        "session detail, 100k-event session",
        None,
        lambda r: f"/api/sessions/{r.big_session()}",
    ),
    ReadQuery("events, first page (100)", 50, lambda r: f"/api/sessions/{r.any_session()}/events"),
    ReadQuery(
        "events, first page of a 100k-event session",
        300,
        lambda r: f"/api/sessions/{r.big_session()}/events",
    ),
    ReadQuery(
        "events, later page (50,000 in)",
        50,
        lambda r: (
            f"/api/sessions/{r.fill.big_session_ids[0]}/events?cursor={r.later_events_cursor}"
        ),
    ),
    ReadQuery(
        "events, first page, type=llms",
        50,
        lambda r: f"/api/sessions/{r.any_session()}/events?event_type=llms",
    ),
    ReadQuery("overview, 30 days", 500, lambda r: "/api/overview"),
    ReadQuery(
        "overview, 90 days (every session)",
        None,
        lambda r: f"/api/overview?since={r.fill.first_ts - 86400:.0f}",
    ),
    # The dashboard: what a person's first view of each page requests (HTML, then its JSON).
    ReadQuery("dashboard: /sessions (HTML)", 100, lambda r: "/sessions", True),
    ReadQuery("dashboard: /sessions?state=failed", 100, lambda r: "/sessions?state=failed", True),
    ReadQuery("dashboard: /sessions?tag=env-prod", 100, lambda r: "/sessions?tag=env-prod", True),
    ReadQuery("dashboard: /sessions, page 51", 100, lambda r: r.deep_list_path, True),
    ReadQuery("dashboard: live rows (50 ids)", 100, lambda r: r.status_path(), True),
    ReadQuery(
        "dashboard: session page (HTML)", 100, lambda r: f"/sessions/{r.any_session()}", True
    ),
    ReadQuery(
        "dashboard: its first events (500 of ~100)",
        100,
        lambda r: f"/ui/api/sessions/{r.any_session()}/events?limit=500",
        True,
    ),
    ReadQuery(
        "dashboard: 100k-event session page (HTML)",
        300,
        lambda r: f"/sessions/{r.big_session()}",
        True,
    ),
    ReadQuery(
        "dashboard: its first events (500 of 100k)",
        300,
        lambda r: f"/ui/api/sessions/{r.big_session()}/events?limit=500",
        True,
    ),
    ReadQuery(
        "dashboard: its next events (5,000)",
        None,
        lambda r: r.big_next_events(),
        True,
    ),
    ReadQuery("dashboard: /overview (HTML, 30 days)", 500, lambda r: "/overview", True),
]


def _ok(body: dict[str, str], status: int) -> dict[str, str]:
    if status != 200:
        raise AssertionError(f"{status}: {body}")
    return body


async def _prepare(http: object, url: str, reads: Reads) -> None:
    """Cursors for the deep pages (walked once, untimed)."""
    get = http.get  # type: ignore[attr-defined]
    cursor = ""
    for _ in range(50):  # or fewer, on a small database
        async with get(f"{url}/api/sessions?limit=50&cursor={cursor}") as response:
            cursor = _ok(await response.json(), response.status)["next_cursor"] or cursor
    reads.deep_sessions_cursor = cursor
    cursor, session_id = "", reads.fill.big_session_ids[0]
    for _ in range(50):
        async with get(f"{url}/api/sessions/{session_id}/events?limit=1000&cursor={cursor}") as r:
            cursor = _ok(await r.json(), r.status)["next_cursor"] or cursor
    reads.later_events_cursor = cursor


async def _sign_in(url: str, api_key: str) -> object:
    """A client session signed in to the dashboard through its sign-in form (the cookie jar
    keeps the cookie: ``unsafe=True`` because aiohttp's jar ignores cookies of IP addresses)."""
    import aiohttp

    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    form = {"key": api_key, "next": "/sessions"}
    async with http.post(f"{url}/signin", data=form, allow_redirects=False) as response:
        if response.status != 303:
            raise AssertionError(f"sign-in answered {response.status}: {await response.text()}")
    async with http.get(f"{url}/sessions", allow_redirects=False) as response:
        if response.status != 200:  # a redirect back to /signin: the cookie was not kept
            raise AssertionError(f"GET /sessions signed in answered {response.status}")
    return http


_ROW_ID = re.compile(r'<tr[^>]* data-id="([0-9a-f-]{36})"')
_NEXT_LINK = re.compile(r'<a href="([^"]+)" id="page-next"')


async def _prepare_dashboard(http: object, url: str, reads: Reads) -> None:
    """The list's deep page (its "Older sessions" links followed 50 times) and the cursors of
    the big sessions' second events page (untimed)."""
    get = http.get  # type: ignore[attr-defined]
    async with get(f"{url}/sessions") as response:
        page = await response.text()
    reads.newest_ids = _ROW_ID.findall(page)
    path = "/sessions"
    for _ in range(50):  # or fewer, on a small database
        found = _NEXT_LINK.search(page)
        if found is None:
            break
        path = html.unescape(found.group(1))
        async with get(url + path) as response:
            page = await response.text()
    reads.deep_list_path = path
    for session_id in reads.fill.big_session_ids:
        async with get(f"{url}/ui/api/sessions/{session_id}/events?limit=500") as response:
            body = _ok(await response.json(), response.status)
        reads.big_after_first[session_id] = quote(body["next_cursor"], safe="")


async def time_queries(
    url: str, fill: Fill, repeats: int, queries: list[ReadQuery]
) -> dict[str, list[float]]:
    """``repeats`` timings (ms) of each query, the queries taking turns."""
    import aiohttp

    big = set(fill.big_session_ids)
    reads = Reads(
        fill, random.Random(7), small_session_ids=[s for s in fill.session_ids if s not in big]
    )
    samples: dict[str, list[float]] = {q.name: [] for q in queries}
    headers = {"X-Agentops-Api-Key": fill.api_key}
    async with aiohttp.ClientSession(headers=headers) as api:
        dashboard = await _sign_in(url, fill.api_key)
        try:
            await _prepare(api, url, reads)
            await _prepare_dashboard(dashboard, url, reads)
            clients = {False: api, True: dashboard}
            for query in queries:  # one untimed round: connections, caches, statement caches
                async with clients[query.dashboard].get(url + query.path(reads)) as response:
                    await response.read()
            for _ in range(repeats):
                for query in queries:
                    path = query.path(reads)
                    http = clients[query.dashboard]
                    started = time.perf_counter()
                    async with http.get(url + path, allow_redirects=False) as response:
                        await response.read()
                        status = response.status
                    samples[query.name].append((time.perf_counter() - started) * 1000)
                    if status != 200:
                        raise AssertionError(f"{query.name}: GET {path} answered {status}")
        finally:
            await dashboard.close()  # type: ignore[attr-defined]
    return samples


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _size(database: str, pg: PostgresServer | None) -> int:
    if pg is None:
        return sum(
            os.path.getsize(database + s) for s in ("", "-wal") if os.path.exists(database + s)
        )
    import asyncpg

    async def size() -> int:
        conn = await asyncpg.connect(database)
        try:
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        finally:
            await conn.close()

    return asyncio.run(size())


def run_backend(backend: str, args: argparse.Namespace, work: Path) -> list[tuple[object, ...]]:
    pg = None
    if backend == "postgres":
        if find_postgres_bin() is None:
            print("postgres: initdb not found, skipped", file=sys.stderr)
            return []
        # A durable server with the defaults a deployment starts from (see docs/deploy.md).
        pg = PostgresServer.start(settings={"fsync": "on", "full_page_writes": "on"})
    database = pg.create_database() if pg else str(work / "reads.db")
    try:
        fill = asyncio.run(
            fill_database(
                database,
                sessions=args.sessions,
                events=args.events,
                big=args.big,
                big_events=args.big_events,
            )
        )
        size = _size(database, pg)
        print(
            f"{backend}: filled {fill.events:,} events in {fill.seconds:.0f} s,"
            f" {size / 1e9:.2f} GB ({size / max(1, fill.events):,.0f} bytes per event)",
            file=sys.stderr,
        )
        process = CollectorProcess(database, backend, work / "collector.log").start()
        try:
            queries = [q for q in QUERIES if args.only in q.name]
            samples = asyncio.run(time_queries(process.url, fill, args.repeats, queries))
        finally:
            process.stop()
        rows: list[tuple[object, ...]] = []
        for query in queries:
            values = samples[query.name]
            median, p95 = statistics.median(values), _p95(values)
            holds = "" if query.goal_ms is None else ("yes" if p95 <= query.goal_ms else "NO")
            goal = "" if query.goal_ms is None else f"{query.goal_ms:.0f}"
            rows.append((backend, query.name, median, p95, max(values), goal, holds))
        rows.append((backend, f"bytes per event ({fill.events:,} events)", size / fill.events))
        return rows
    finally:
        if pg is not None:
            pg.stop()  # the cluster and its files
        elif not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=3, help="sessions of --big-events events")
    parser.add_argument("--big-events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=40, help="timings per query")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file")
    parser.add_argument("--only", default="", help="time only the queries whose name has this")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agentops-reads-"))
    rows: list[tuple[object, ...]] = []
    try:
        for backend in args.backends.split(","):
            rows += run_backend(backend, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{args.sessions:,} sessions, {args.events:,} events ({args.big} sessions of"
        f" {args.big_events:,}); {args.repeats} timings per query over HTTP on loopback\n"
    )
    print("| backend | query | median ms | p95 ms | max ms | goal p95 ms | holds |")
    print("|---|---|---:|---:|---:|---:|---|")
    for row in rows:
        if len(row) == 3:
            print(f"| {row[0]} | {row[1]} | {row[2]:,.0f} | | | | |")
        else:
            backend, name, median, p95, high, goal, holds = row
            print(
                f"| {backend} | {name} | {median:.1f} | {p95:.1f} | {high:.1f} | {goal} | {holds} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
