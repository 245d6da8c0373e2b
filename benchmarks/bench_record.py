"""Hot-path cost of recording one event: agentops_async vs an OpenTelemetry SDK span.

Rows (same process, same run, interleaved repetitions; median, min and max of the repetitions):
- ``await session.record(ActionEvent(...))`` on an active session whose exporter posts to a stub
  AgentOps v2 server on 127.0.0.1 (construction of the event included, like the span's);
- the same with ``await agentops_async.record(...)`` (current session looked up via contextvars);
- ``await session.record(event)`` alone, the events built before the timed loop;
- ``session.record_threadsafe(...)`` from a plain thread (the sync facade's path);
- ``await session.record(ActionEvent(...))`` on a client with ``protocol="otlp"`` (the OTLP
  target, exporting to the stub's ``/v1/traces``): the hot path does not depend on the target;
- OpenTelemetry SDK: ``tracer.start_span(...)``/``span.end()`` with the same attributes, on a
  TracerProvider with a BatchSpanProcessor and a no-op exporter.

Run: ``python benchmarks/bench_record.py [--events N] [--repeats R] [--json FILE]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import agentops_async as ao


class _NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


async def _stub_server() -> tuple[web.AppRunner, str]:
    """A minimal AgentOps v2 stub that acknowledges everything (counts events)."""
    received = {"events": 0}

    async def create_session(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        return web.json_response({"jwt": "stub-" + body["session"]["session_id"]})

    async def update_session(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"token_cost": "0"})

    async def create_events(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read())
        received["events"] += len(body["events"])
        return web.json_response({"status": "ok"})

    async def traces(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v2/create_session", create_session)
    app.router.add_post("/v2/update_session", update_session)
    app.router.add_post("/v2/create_events", create_events)
    app["received"] = received
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def _time_async_record(session: ao.AsyncSession, n: int, module_level: bool) -> float:
    record = ao.record if module_level else session.record
    Event = ao.ActionEvent
    t0 = time.perf_counter()
    for i in range(n):
        await record(Event(action_type="search", params={"q": "weather", "i": i}))
    elapsed = time.perf_counter() - t0
    await session.flush(60)
    return elapsed / n * 1e6


async def _time_prebuilt_record(session: ao.AsyncSession, n: int) -> float:
    events = [
        ao.ActionEvent(action_type="search", params={"q": "weather", "i": i}) for i in range(n)
    ]
    record = session.record
    t0 = time.perf_counter()
    for event in events:
        await record(event)
    elapsed = time.perf_counter() - t0
    await session.flush(60)
    return elapsed / n * 1e6


async def _time_thread_record(session: ao.AsyncSession, n: int) -> float:
    Event = ao.ActionEvent
    result: list[float] = []

    def produce() -> None:
        record = session.record_threadsafe
        t0 = time.perf_counter()
        for i in range(n):
            record(Event(action_type="search", params={"q": "weather", "i": i}))
        result.append(time.perf_counter() - t0)

    await asyncio.to_thread(produce)
    await session.flush(60)
    return result[0] / n * 1e6


def _time_otel_span(n: int) -> float:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_NullSpanExporter(), max_queue_size=n + 10))
    tracer = provider.get_tracer("bench")
    t0 = time.perf_counter()
    for i in range(n):
        span = tracer.start_span("search", attributes={"q": "weather", "i": i})
        span.end()
    elapsed = time.perf_counter() - t0
    provider.shutdown()
    return elapsed / n * 1e6


async def run(events: int, repeats: int) -> dict[str, list[float]]:
    """Interleaved repetitions of every row; returns µs/event samples per row."""
    runner, url = await _stub_server()
    client = ao.AsyncClient(
        api_key="bench", endpoint=url, max_queue_size=events * 2, log_session_stats=False
    )
    otlp_client = ao.AsyncClient(
        api_key="bench",
        endpoint=url,
        max_queue_size=events * 2,
        log_session_stats=False,
        protocol="otlp",
    )
    rows: dict[str, Callable[[], Any]] = {}
    samples: dict[str, list[float]] = {}
    try:
        # The v2 session is opened last: it is the current one, for the record() row.
        async with otlp_client.session() as otlp, client.session(tags=["bench"]) as session:
            rows = {
                "agentops_async await session.record()": lambda: _time_async_record(
                    session, events, False
                ),
                "agentops_async await record() (contextvar)": lambda: _time_async_record(
                    session, events, True
                ),
                "agentops_async await session.record(), event built beforehand": lambda: (
                    _time_prebuilt_record(session, events)
                ),
                "agentops_async record_threadsafe() from a thread": lambda: _time_thread_record(
                    session, events
                ),
                "agentops_async await session.record(), OTLP target": lambda: _time_async_record(
                    otlp, events, False
                ),
                "OpenTelemetry SDK span start/end (BatchSpanProcessor)": lambda: asyncio.to_thread(
                    _time_otel_span, events
                ),
            }
            for _ in range(repeats):
                for name, fn in rows.items():
                    samples.setdefault(name, []).append(await fn())
        stats = client.stats
        expected = events * repeats * 4
        if stats.delivered != expected or stats.dropped:
            raise SystemExit(f"delivery check failed: {stats} (expected {expected} delivered)")
        otlp_stats = otlp_client.stats
        if otlp_stats.delivered != events * repeats or otlp_stats.dropped:
            raise SystemExit(f"OTLP delivery check failed: {otlp_stats}")
    finally:
        await otlp_client.close()
        await client.close()
        await runner.cleanup()
    return samples


def table(samples: dict[str, list[float]], reference: str) -> str:
    """A Markdown table: median/min/max µs per event and the ratio against ``reference``."""
    ref = statistics.median(samples[reference])
    lines = [
        "| what | µs/event (median) | min | max | OTel span / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in samples.items():
        med = statistics.median(values)
        lines.append(
            f"| {name} | {med:.2f} | {min(values):.2f} | {max(values):.2f} | {ref / med:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per repetition")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions (median reported)")
    parser.add_argument("--json", help="also write the samples to this JSON file")
    args = parser.parse_args(argv)
    samples = asyncio.run(run(args.events, args.repeats))
    print(
        f"python {sys.version.split()[0]}, {args.events} events x {args.repeats} repetitions, "
        f"{threading.active_count()} threads"
    )
    print(table(samples, "OpenTelemetry SDK span start/end (BatchSpanProcessor)"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(samples, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
