"""Sync facade: `session.record(event)` from a plain thread, beside `await session.record()`.

Rows (same process, same run, interleaved repetitions; median, min and max of the repetitions):
- ``Session.record(ActionEvent(...))`` of the sync facade, called from a plain thread (the main
  thread of this script; the session lives on the facade's background loop thread);
- the same through the module-level helper ``agentops_async.sync.record(...)`` (current session
  looked up per call);
- ``await AsyncSession.record(ActionEvent(...))`` on an asyncio loop (the async engine's figure).

Both sessions post to one stub AgentOps v2 server on 127.0.0.1 (in its own thread); construction
of the event is included in every row. Each repetition ends with a flush, and the script checks
that every event was delivered.

Run: ``python benchmarks/bench_sync.py [--events N] [--repeats R] [--json FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable

import msgspec
from aiohttp import web

import agentops_async as ao
from agentops_async import sync


def _start_stub_server() -> tuple[str, Callable[[], None]]:
    """A minimal AgentOps v2 stub on its own loop thread; returns its URL and a stop function."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def create_session(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        return web.json_response({"jwt": "stub-" + body["session"]["session_id"]})

    async def acknowledge(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "ok", "token_cost": "0"})

    async def serve() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v2/create_session", create_session)
        app.router.add_post("/v2/update_session", acknowledge)
        app.router.add_post("/v2/create_events", acknowledge)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        stop = asyncio.Event()
        state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        state["stop"] = stop
        state["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise SystemExit("the stub server did not start")

    def stop() -> None:
        loop = state["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        stop_event = state["stop"]
        assert isinstance(stop_event, asyncio.Event)
        loop.call_soon_threadsafe(stop_event.set)
        thread.join(10)

    return str(state["url"]), stop


def _time_sync_record(session: ao.Session, n: int, module_level: bool) -> float:
    record = sync.record if module_level else session.record
    event = ao.ActionEvent
    t0 = time.perf_counter()
    for i in range(n):
        record(event(action_type="search", params={"q": "weather", "i": i}))
    elapsed = time.perf_counter() - t0
    if not session.flush(60):
        raise SystemExit("sync flush timed out")
    return elapsed / n * 1e6


async def _time_async_record(session: ao.AsyncSession, n: int) -> float:
    event = ao.ActionEvent
    t0 = time.perf_counter()
    for i in range(n):
        await session.record(event(action_type="search", params={"q": "weather", "i": i}))
    elapsed = time.perf_counter() - t0
    if not await session.flush(60):
        raise SystemExit("async flush timed out")
    return elapsed / n * 1e6


def run(events: int, repeats: int) -> dict[str, list[float]]:
    """Interleaved repetitions of every row; returns µs/event samples per row."""
    url, stop_server = _start_stub_server()
    settings = {"max_queue_size": events * 2, "log_session_stats": False}
    client = ao.Client(api_key="bench", endpoint=url, **settings)  # type: ignore[arg-type]
    async_client = ao.AsyncClient(api_key="bench", endpoint=url, **settings)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    sync_row = "sync Session.record() from a plain thread"
    helper_row = "sync agentops_async.sync.record() (current session) from a thread"
    async_row = "async await AsyncSession.record() on the loop"
    samples: dict[str, list[float]] = {sync_row: [], helper_row: [], async_row: []}
    try:
        async_session = loop.run_until_complete(async_client.session(tags=["bench"]).start())
        with client.session(tags=["bench"]) as session:
            for _ in range(repeats):
                samples[sync_row].append(_time_sync_record(session, events, False))
                samples[helper_row].append(_time_sync_record(session, events, True))
                samples[async_row].append(
                    loop.run_until_complete(_time_async_record(async_session, events))
                )
            sync_stats = session.stats
        async_stats = loop.run_until_complete(async_session.end())
        expected = events * repeats
        if sync_stats.delivered != 2 * expected or sync_stats.dropped:
            raise SystemExit(f"sync delivery check failed: {sync_stats}")
        if async_stats.delivered != expected or async_stats.dropped:
            raise SystemExit(f"async delivery check failed: {async_stats}")
    finally:
        loop.run_until_complete(async_client.close())
        loop.close()
        client.close()
        stop_server()
    return samples


def table(samples: dict[str, list[float]]) -> str:
    """A Markdown table: median/min/max µs per event."""
    lines = ["| what | µs/event (median) | min | max |", "|---|---:|---:|---:|"]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per repetition")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions (median reported)")
    parser.add_argument("--json", help="also write the samples to this JSON file")
    args = parser.parse_args(argv)
    samples = run(args.events, args.repeats)
    print(f"python {sys.version.split()[0]}, {args.events} events x {args.repeats} repetitions")
    print(table(samples))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(samples, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
