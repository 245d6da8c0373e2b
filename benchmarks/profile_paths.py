"""Where the time goes: py-spy profiles of the hot path, the exporter and the collector.

    python benchmarks/profile_paths.py [--events 300000] [--rate 1000]

A worker process records ``--events`` ``ActionEvent``s with ``await session.record()`` (the
queue has room, so record() never yields and the exporter is idle: the *hot path*), then ends the
session and closes the client (the *exporter* drains everything to a collector subprocess on
SQLite). py-spy samples the worker and the collector (``--nonblocking``, so the timing is not
disturbed); the worker's samples are split into the hot path (stacks through ``_record_loop``)
and the exporter (stacks through ``Exporter.*``/``ApiClient.*``) and printed as inclusive and own
time per function; import time and setup are left out. Needs ``py-spy`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from _servers import CollectorProcess  # noqa: E402


async def _record_loop(session: object, n: int) -> None:
    import agentops_async as ao

    record, Event = session.record, ao.ActionEvent  # type: ignore[attr-defined]
    for i in range(n):
        await record(Event(action_type="search", params={"q": "weather", "i": i}))


async def _worker(url: str, key: str, n: int) -> dict[str, float]:
    import agentops_async as ao

    client = ao.AsyncClient(api_key=key, endpoint=url, log_session_stats=False,
                            max_queue_size=n + 1000, shutdown_timeout=300)  # fmt: skip
    session = await client.session(tags=["profile"]).start()
    await asyncio.sleep(0.5)  # let py-spy attach before the measured phases
    t0 = time.perf_counter()
    await _record_loop(session, n)
    t1 = time.perf_counter()
    await session.end(timeout=300)
    await client.close(300)
    t2 = time.perf_counter()
    return {"record_us": (t1 - t0) / n * 1e6, "drain_s": t2 - t1,
            "delivered": session.stats.delivered}  # fmt: skip


async def _breakdown(n: int) -> list[tuple[str, float]]:
    """µs per call of each piece of the hot path, each timed alone (best of 5 loops of ``n``)."""
    from _stub import serve_in_thread

    import agentops_async as ao
    from agentops_async.api._wire import events_body
    from agentops_async.events import _wire_events

    stub = serve_in_thread()
    client = ao.AsyncClient(api_key="bench", endpoint=stub.url, log_session_stats=False,
                            max_queue_size=6 * n + 1000, shutdown_timeout=120)  # fmt: skip
    session = await client.session(tags=["breakdown"]).start()
    Event = ao.ActionEvent
    sid, tid = session.session_id, session.trace_id
    from agentops_async.api._client import ApiClient
    from agentops_async.telemetry._exporter import Exporter

    # offer() is timed on a throwaway exporter that is never started (nothing is sent), so the
    # real one's counters stay true.
    spare = Exporter(client.config, asyncio.get_running_loop(), ApiClient(client.config))
    channel = spare.open_channel(sid, tid)
    data = Event(action_type="search")

    async def noop(event: object) -> None:
        return None

    def best(fn: object) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times) / n * 1e6

    async def best_async(fn: object) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            await fn()  # type: ignore[operator]
            times.append(time.perf_counter() - t0)
        return min(times) / n * 1e6

    def loop_only() -> None:
        for i in range(n):
            _ = {"q": "weather", "i": i}

    def construct() -> None:
        for i in range(n):
            Event(action_type="search", params={"q": "weather", "i": i})

    def construct_check() -> None:
        now = time.time
        for i in range(n):
            Event(action_type="search", params={"q": "weather", "i": i})._check(now())

    def checked_events() -> list[ao.Event]:
        events = [Event(action_type="search", params={"q": "weather", "i": i}) for i in range(n)]
        for event in events:
            event._check(time.time())
        return events

    def time_exporter_piece(piece: str) -> float:
        """µs per event of one exporter piece, on fresh events, in slices of 256 (as it runs)."""
        times = []
        for _ in range(3):
            events = checked_events()
            t0 = time.perf_counter()
            ready = [_wire_events(events[i : i + 256], sid, tid) for i in range(0, n, 256)]
            t1 = time.perf_counter()
            for part in ready:
                events_body(part)
            t2 = time.perf_counter()
            times.append(t1 - t0 if piece == "wire" else t2 - t1)
        return min(times) / n * 1e6

    def offer() -> None:
        put = spare.offer
        for _ in range(n):
            put(channel, data)
        spare._take_buffered()  # room for the next repetition

    async def await_noop() -> None:
        for i in range(n):
            await noop(Event(action_type="search", params={"q": "weather", "i": i}))

    async def full() -> None:
        record = session.record
        for i in range(n):
            await record(Event(action_type="search", params={"q": "weather", "i": i}))

    rows = [
        ("loop + params dict (caller's own work)", best(loop_only)),
        ("ActionEvent(...) construction (init_timestamp = time.time())", best(construct)),
        (
            "construction + the compiled check (typed fields, timestamps, end)",
            best(construct_check),
        ),
        ("exporter.offer(channel, event) alone", best(offer)),
        ("construction + await of an empty coroutine", await best_async(await_noop)),
        ("construction + await session.record() (everything)", await best_async(full)),
        ("exporter: _wire_events() (ids, ISO timestamps), per event", time_exporter_piece("wire")),
        (
            "exporter: events_body() (one msgspec call per slice), per event",
            time_exporter_piece("encode"),
        ),
    ]
    await session.end(timeout=120)
    await client.close(120)
    stub.stop()
    return rows


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy (the bench extra)")
    return found


def _load(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _report(title: str, stacks: list[tuple[list[str], int]], limit: int = 14) -> str:
    total = sum(c for _, c in stacks)
    if not total:
        return f"{title}: no samples"
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"===== {title}: {total} samples =====", "inclusive  own     function"]
    for frame, count in inclusive.most_common(limit * 2):
        if count / total < 0.01:
            break
        lines.append(f"{count / total * 100:6.1f}%  {own[frame] / total * 100:5.1f}%  {frame}")
    lines.append("-- top own time --")
    for frame, count in own.most_common(limit):
        lines.append(f"{count / total * 100:6.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--breakdown-events", type=int, default=200_000)
    parser.add_argument("--worker", nargs=3, metavar=("URL", "KEY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, key, n = args.worker
        print(json.dumps(asyncio.run(_worker(url, key, int(n)))))
        return 0
    print(
        f"===== hot path, piece by piece (µs per call, best of 5 x {args.breakdown_events:,}) ====="
    )
    for name, us in asyncio.run(_breakdown(args.breakdown_events)):
        print(f"{us:7.3f}  {name}")
    print()
    work = Path(tempfile.mkdtemp(prefix="agentops-prof-"))
    process = CollectorProcess(str(work / "prof.db"), "sqlite", work / "collector.log").start()
    try:
        _, key = process.create_project("profile")
        assert process.process is not None
        spy = [_py_spy(), "record", "--nolineno", "--nonblocking", "--format", "raw",
               "--rate", str(args.rate)]  # fmt: skip
        collector_spy = subprocess.Popen(
            [*spy, "--pid", str(process.process.pid), "-o", str(work / "collector.raw")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        worker = subprocess.run(
            [*spy, "-o", str(work / "worker.raw"), "--", sys.executable, __file__,
             "--worker", process.url, key, str(args.events)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        collector_spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        collector_spy.wait(60)
    finally:
        process.stop()
    result = json.loads([ln for ln in worker.stdout.splitlines() if ln.startswith("{")][-1])
    print(f"{args.events:,} events: record {result['record_us']:.2f} µs/event (under py-spy), "
          f"drain {result['drain_s']:.2f} s, delivered {result['delivered']:,}\n")  # fmt: skip
    stacks = _load(work / "worker.raw")
    hot = [(f, c) for f, c in stacks if any(x.startswith("_record_loop ") for x in f)]
    exporter = [
        (f, c)
        for f, c in stacks
        if any(x.startswith("Exporter.") or x.startswith("ApiClient.") for x in f)
        and not any(x.startswith("_record_loop ") for x in f)
    ]
    print(_report("worker, hot path (stacks through _record_loop)", hot) + "\n")
    print(_report("worker, exporter (stacks through Exporter.*/ApiClient.*)", exporter) + "\n")
    collector_raw = work / "collector.raw"
    if collector_raw.exists():
        print(_report("collector process", _load(collector_raw)))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
