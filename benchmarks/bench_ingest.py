"""Ingest benchmark: events/s stored by the collector, SQLite and PostgreSQL.

The collector runs as a subprocess (``python -m agentops_async serve``) on a fresh database per run.
This process is the client:

- ``sdk``: one AsyncClient recording events into a few concurrent sessions as fast as it can;
  timed from the first record to the moment every event is acknowledged (``client.close()``).
- ``sdk-otlp``: the same with ``protocol="otlp"`` (OTLP/JSON exports to ``/v1/traces``).
- ``raw``: pre-encoded ``create_events`` batches posted over a few aiohttp connections (what the
  collector alone can take).

Every run checks delivered == recorded == stored (read back through the read API). Prints a
Markdown table with the median of the runs.

    python benchmarks/bench_ingest.py                      # both backends, both clients
    python benchmarks/bench_ingest.py --backends sqlite --events 500000 --runs 5
    git worktree add /tmp/old 5b20090       # compare an older collector, interleaved in one run
    python benchmarks/bench_ingest.py --backends postgres --code old=/tmp/old,new=.

With ``--code NAME=DIR,...`` each checkout runs in turn (run 1 of every checkout, then run 2,
...: a noisy machine hits all alike), all of it: the collector subprocess runs that checkout's
``agentops_async``, and so does the ``sdk``/``sdk-otlp`` client, in a subprocess of its own
(``_ingest_client.py``, that checkout first on ``sys.path``; the recording loop is this file's
``run_sdk``). The ``raw`` client needs no SDK and runs here. Each row's ratio is to the first
checkout's row. A checkout may carry ``serve`` arguments after ``+`` signs, to compare settings
of one collector, and ``NAME=value`` environment variables for its SDK client (upper case):

    python benchmarks/bench_ingest.py --backends postgres \
        --code old=/tmp/old,new=.,async=.+--pg-synchronous-commit+off
    python benchmarks/bench_ingest.py --code k1=.,k2=.+AGENTOPS_MAX_CONCURRENT_EXPORTS=2

The PostgreSQL server runs with its durability defaults (fsync, full_page_writes and
synchronous_commit on), like a deployment's, and like a server that has been running: before the
runs it writes ~1.5 GB of WAL once, and each run starts from a ``CHECKPOINT``, so that every run,
whichever ran before it, fills recycled WAL segments with a checkpoint just behind it. A fresh
cluster instead creates, zero-fills and fsyncs a new 16 MB segment for every 16 MB of WAL while
every commit waits (``--cold-wal`` skips the warm-up and the checkpoints, as this benchmark did
before; both gave the same ratios in the runs of benchmarks/README.md). Each run prints the CPU
the collector, the database server and this client used, and how idle the machine's CPUs were
(all processes: read it with the load average printed beside it); for the ``raw`` client all of
these are read over the timed window alone (the bodies are built before it).

``--pg-waits`` samples what the database's sessions do during each run (``pg_stat_activity``,
every 5 ms) and prints, per row, the mean number of sessions on CPU and in each wait event: where
a run is not CPU-bound, this says why.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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


async def run_sdk(
    url: str, api_key: str, events: int, sessions: int, protocol: str = "agentops_v2"
) -> float:
    """Record ``events`` with our SDK; returns events/s (first record -> all acknowledged)."""
    import agentops_async as ao

    # (protocol only when not the default: checkouts from before the OTLP target lack it)
    options: dict[str, Any] = {"protocol": protocol} if protocol != "agentops_v2" else {}
    client = ao.AsyncClient(
        api_key=api_key,
        endpoint=url,
        log_session_stats=False,
        backpressure="block",
        backpressure_timeout=60.0,
        max_queue_size=100_000,
        flush_interval=0.05,
        **options,
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


async def run_raw(
    url: str,
    api_key: str,
    events: int,
    batch: int,
    connections: int,
    mark: Callable[[str], None] | None = None,
) -> float:
    """Post pre-encoded batches with aiohttp; returns events/s. ``mark("start")`` and
    ``mark("end")`` are called at the edges of the timed window (the bodies are built before)."""
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

        if mark is not None:
            mark("start")
        started = time.perf_counter()
        await asyncio.gather(*(post_batches() for _ in range(connections)))
        elapsed = time.perf_counter() - started
        if mark is not None:
            mark("end")
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


def _idle_ticks() -> tuple[int, int]:
    """The machine's idle (idle + iowait) and total CPU ticks so far (``/proc/stat``)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return ticks[3] + ticks[4], sum(ticks[:8])


@dataclass
class Sample:
    """One run: events/s, and the CPU seconds the collector and the database server used."""

    rate: float
    collector_cpu: float
    database_cpu: float
    client_cpu: float
    idle: float  # the machine's idle share of its CPUs during the run (all processes)
    waits: dict[str, float] = field(default_factory=dict)  # --pg-waits: mean sessions per state


# WAL that a server which has been running has recycled segments for (see the module docstring).
_WARM_WAL = (
    "CREATE TABLE agentops_warm_wal AS"
    " SELECT repeat('x', 900) AS t FROM generate_series(1, 1500000)"
)


def _execute(dsn: str, *statements: str) -> None:
    """Run statements on ``dsn`` (a connection of its own, outside any timed window)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


class _WaitSampler:
    """Samples what the database's client sessions are doing, every 5 ms, in a thread of its own
    (``pg_stat_activity``: on CPU, or the wait event), between :meth:`start` and :meth:`stop`."""

    _QUERY = (
        "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()"
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                for (state,) in await conn.fetch(self._QUERY):
                    self.counts[state] += 1
                self.samples += 1
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling (if it runs); the mean number of sessions in each state."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        return {state: n / max(1, self.samples) for state, n in self.counts.items()}


class Unsupported(Exception):
    """The checkout's SDK has no such client (e.g. ``sdk-otlp`` before the OTLP target)."""


def _run_sdk_client(
    code_dir: Path, client_env: dict[str, str], url: str, api_key: str, job: dict[str, Any]
) -> tuple[float, float]:
    """Run the SDK client of ``code_dir`` in a subprocess; returns (events/s, its CPU seconds)."""
    env = {**os.environ, **client_env}
    env.pop("PYTHONPATH", None)  # the checkout goes first on sys.path, nothing else
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "_ingest_client.py"),
            str(code_dir),
            json.dumps({"url": url, "api_key": api_key, **job}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0 and "unknown setting 'protocol'" in done.stderr:
        raise Unsupported(f"{code_dir}: this SDK has no OTLP target")
    if done.returncode != 0:
        raise RuntimeError(f"the SDK client of {code_dir} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["sdk"]).resolve().is_relative_to(code_dir):
        raise RuntimeError(f"the SDK client of {code_dir} imported {result['sdk']}")
    return float(result["rate"]), float(result["client_cpu"])


def _one_run(
    backend: str,
    client: str,
    args: argparse.Namespace,
    pg: PostgresServer | None,
    work: Path,
    code_dir: Path,
    serve_args: list[str],
    client_env: dict[str, str],
) -> Sample:
    database = pg.create_database() if pg else str(work / f"bench-{uuid.uuid4().hex[:8]}.db")
    if pg is not None and not args.cold_wal:
        _execute(database, "CHECKPOINT")  # the WAL segments of the run before are recycled
    process = CollectorProcess(
        database, backend, work / "collector.log", extra_args=serve_args, code_dir=code_dir
    )
    process.start()
    sampler = _WaitSampler(database) if pg is not None and args.pg_waits else None
    try:
        _, api_key = process.create_project("bench")
        assert process.process is not None
        pid = process.process.pid
        marks: dict[str, tuple[float, float, float, tuple[int, int]]] = {}

        def mark(name: str) -> None:
            if name == "start" and sampler is not None:
                sampler.start()
            if name == "end" and sampler is not None:
                waits.update(sampler.stop())
            marks[name] = (
                _cpu_seconds(pid),
                _server_cpu(pg) if pg else 0.0,
                time.process_time(),
                _idle_ticks(),
            )

        waits: dict[str, float] = {}
        mark("before")
        if client in ("sdk", "sdk-otlp"):
            protocol = "otlp" if client == "sdk-otlp" else "agentops_v2"
            job = {"events": args.events, "sessions": args.sessions, "protocol": protocol}
            if sampler is not None:
                sampler.start()
            rate, client_cpu = _run_sdk_client(code_dir, client_env, process.url, api_key, job)
            if sampler is not None:
                waits.update(sampler.stop())
            mark("after")
            first, last = marks["before"], marks["after"]
        else:
            rate = asyncio.run(
                run_raw(process.url, api_key, args.events, args.batch_size, args.connections, mark)
            )
            first, last = marks["start"], marks["end"]
            client_cpu = last[2] - first[2]
        idle_before, idle = first[3], last[3]
        return Sample(
            rate,
            last[0] - first[0],
            last[1] - first[1],
            client_cpu,
            (idle[0] - idle_before[0]) / max(1, idle[1] - idle_before[1]),
            waits,
        )
    finally:
        if sampler is not None:
            sampler.stop()  # a run that failed midway
        process.stop()
        if pg is None:
            for suffix in ("", "-wal", "-shm"):
                Path(database + suffix).unlink(missing_ok=True)
        else:
            pg.drop_database(database)


_CLIENT_ENV = re.compile(r"[A-Z][A-Z0-9_]*=")


def _checkouts(text: str) -> list[tuple[str, Path, list[str], dict[str, str]]]:
    """``--code``: ``name=dir`` items (a bare ``dir`` is named after itself), each optionally
    followed by ``+``-separated ``serve`` arguments (``async=.+--pg-synchronous-commit+off``)
    and ``NAME=value`` environment variables of the SDK client
    (``k2=.+AGENTOPS_MAX_CONCURRENT_EXPORTS=2``)."""
    pairs = []
    for item in filter(None, text.split(",")):
        name, _, rest = item.partition("=") if "=" in item.split("+", 1)[0] else ("", "", item)
        path, *extras = rest.split("+")
        code_dir = Path(path).resolve()
        if not (code_dir / "agentops_async" / "__init__.py").exists():
            raise SystemExit(f"--code {item}: no agentops_async package in {code_dir}")
        serve_args = [arg for arg in extras if not _CLIENT_ENV.match(arg)]
        client_env = dict(arg.split("=", 1) for arg in extras if _CLIENT_ENV.match(arg))
        pairs.append((name or path, code_dir, serve_args, client_env))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--clients", default="sdk,sdk-otlp,raw")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent SDK sessions")
    parser.add_argument("--batch-size", type=int, default=1000, help="raw client batch size")
    parser.add_argument("--connections", type=int, default=4, help="raw client connections")
    parser.add_argument(
        "--cold-wal",
        action="store_true",
        help="PostgreSQL: no WAL warm-up and no CHECKPOINT before each run (a fresh cluster's"
        " new WAL segments stall commits)",
    )
    parser.add_argument(
        "--pg-waits",
        action="store_true",
        help="PostgreSQL: sample what the database's sessions wait for during each run",
    )
    parser.add_argument(
        "--code",
        default=f"current={REPO}",
        help="NAME=DIR,...: the checkouts (collector and SDK client) compared (default: this one)",
    )
    args = parser.parse_args()
    checkouts = _checkouts(args.code)

    rows = []
    waits: dict[tuple[str, str, str], dict[str, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="agentops-bench-"))
    for backend in args.backends.split(","):
        pg = None
        if backend == "postgres":
            if find_postgres_bin() is None:
                print("postgres: initdb not found, skipped", file=sys.stderr)
                continue
            # A deployment's server: PostgreSQL's defaults for durability (the test servers turn
            # them off). A collector run with --pg-synchronous-commit off commits asynchronously.
            pg = PostgresServer.start(
                settings={"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}
            )
            if not args.cold_wal:
                warm = pg.create_database()
                _execute(warm, _WARM_WAL, "DROP TABLE agentops_warm_wal", "CHECKPOINT")
                pg.drop_database(warm)
        try:
            for client in args.clients.split(","):
                runs: dict[str, list[Sample]] = {name: [] for name, *_ in checkouts}
                for _ in range(args.runs):
                    for name, code_dir, serve_args, client_env in checkouts:
                        try:
                            sample = _one_run(
                                backend, client, args, pg, work, code_dir, serve_args, client_env
                            )
                        except Unsupported as exc:
                            print(f"{backend}/{client}/{name}: skipped ({exc})", file=sys.stderr)
                            continue
                        runs[name].append(sample)
                        print(
                            f"{backend}/{client}/{name}: {sample.rate:,.0f} events/s, CPU"
                            f" {sample.collector_cpu:.2f} s collector +"
                            f" {sample.database_cpu:.2f} s database +"
                            f" {sample.client_cpu:.2f} s client, machine idle"
                            f" {sample.idle:.0%}, load {os.getloadavg()[0]:.1f}",
                            file=sys.stderr,
                        )
                reference = runs[checkouts[0][0]]
                first = statistics.median(s.rate for s in reference) if reference else 0.0
                for name, samples in runs.items():
                    if not samples:
                        continue
                    rates = [s.rate for s in samples]
                    median = statistics.median(rates)
                    per_event = 1e6 / args.events
                    collector_us = statistics.median(s.collector_cpu for s in samples) * per_event
                    database_us = statistics.median(s.database_cpu for s in samples) * per_event
                    client_us = statistics.median(s.client_cpu for s in samples) * per_event
                    idle = statistics.median(s.idle for s in samples)
                    if args.pg_waits and backend == "postgres":
                        states = Counter[str]()
                        for sample in samples:
                            states.update(sample.waits)
                        waits[(backend, client, name)] = {
                            state: total / len(samples) for state, total in states.items()
                        }
                    rows.append(
                        (
                            backend,
                            client,
                            name,
                            median,
                            min(rates),
                            max(rates),
                            median / first if first else float("nan"),
                            collector_us,
                            database_us,
                            client_us,
                            idle,
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
        " collector CPU µs/event | database CPU µs/event | client CPU µs/event | idle |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        backend, client, name, median, low, high, ratio, collector_us, database_us = row[:9]
        client_us, idle = row[9:]
        database = f"{database_us:.1f}" if backend == "postgres" else "(in the collector)"
        print(
            f"| {backend} | {client} | {name} | {median:,.0f} | {low:,.0f} | {high:,.0f}"
            f" | {ratio:.2f}x | {collector_us:.1f} | {database} | {client_us:.1f} | {idle:.0%} |"
        )
    if waits:
        print("\nDatabase sessions by state, mean over the run (CPU, or what they wait for):\n")
        print("| backend | client | collector | states (sessions) |")
        print("|---|---|---|---|")
        for (backend, client, name), means in waits.items():
            top = sorted(means.items(), key=lambda item: -item[1])[:8]
            listed = ", ".join(f"{state} {mean:.2f}" for state, mean in top)
            print(f"| {backend} | {client} | {name} | {listed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
