"""SessionMiddleware during an outage: no request waits on the network, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from _asgi_service import EXPECTED_STATE, EXPECTED_STATUS, drive, ids_for, make_app, outcome_of
from _asgi_service import serving as serving_app

import agentops_async as ao
from agentops_async.telemetry._exporter import Exporter

from .ledger import Ledger
from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.asyncio

REQUESTS = 30
CONCURRENCY = 8
# The longest the middleware's own session start + end may take per request: no network wait
# (the old exit waited up to shutdown_timeout, 10 s by default, for the whole backlog).
MIDDLEWARE_BOUND = 0.25


async def test_collector_down_adds_no_wait_to_requests_and_every_session_arrives_later(
    collector: Any, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    spent: list[float] = []  # per request: time inside the session's start() and its end
    waits: list[str] = []  # exporter waits (flush / flush_session) while requests are served

    def timed(name: str) -> None:
        original = getattr(ao.AsyncSession, name)

        async def wrapper(self: ao.AsyncSession, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(self, *args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t0)

        monkeypatch.setattr(ao.AsyncSession, name, wrapper)

    def counted(name: str) -> None:
        original = getattr(Exporter, name, None)

        def wrapper(self: Exporter, *args: Any) -> Any:
            waits.append(name)
            return original(self, *args)  # type: ignore[misc]

        monkeypatch.setattr(Exporter, name, wrapper, raising=False)

    def timed_sync(name: str) -> None:
        original = getattr(ao.AsyncSession, name)

        def wrapper(self: ao.AsyncSession, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t0)

        monkeypatch.setattr(ao.AsyncSession, name, wrapper)

    timed("start")
    # The middleware ends its session with the synchronous end(wait=False) minus the stats it
    # does not read: no await, so no network wait by construction; timed all the same.
    timed_sync("_end_nowait")
    for name in ("flush", "flush_session"):
        counted(name)

    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=proxy.url,
        log_session_stats=False,
        shutdown_timeout=10.0,
        flush_interval=0.05,
    )
    app, seen = make_app(client, exclude_paths=["/health"])
    outage = proxy.add(Fault("status", path="/v2/", status=502))  # the collector is down
    refused = asyncio.Event()
    match = proxy._match

    def noting_match(path: str, **options: Any) -> Fault | None:
        fault = match(path, **options)
        if fault is outage:
            refused.set()
        return fault

    monkeypatch.setattr(proxy, "_match", noting_match)
    async with serving_app(app) as url:
        statuses = await drive(url, REQUESTS, CONCURRENCY)
        await asyncio.wait_for(refused.wait(), 20)  # the SDK tried to deliver, and was refused
        assert client.stats.delivered == 0
        assert waits == []
        assert len(spent) == 2 * REQUESTS
        assert max(spent) < MIDDLEWARE_BOUND, sorted(spent)[-5:]
        proxy.clear()  # the collector is back; the lifespan's close delivers the backlog
    assert waits == ["flush"]  # the lifespan's bounded close, at shutdown

    assert statuses == {n: EXPECTED_STATUS[outcome_of(n)] for n in range(REQUESTS)}
    assert client.stats.dropped == 0
    assert client.stats.ops_dropped == 0
    ledger = Ledger()
    for n, session_id in seen.items():
        ledger.recorded[session_id] = ids_for(n)
        stored = await collector.get_session(session_id)
        assert stored is not None
        assert stored["end_state"] == EXPECTED_STATE[outcome_of(n)]
    result = await ledger.check(collector, client, "ASGI service, collector down", proxy.injected)
    errors = sum(outcome_of(n) in ("raise", "http500") for n in range(REQUESTS))
    assert result.missing == 0
    assert result.duplicated == 0
    # Spans FastAPI itself makes (and an ErrorEvent for each that failed) are captured into the
    # request's session when the process has an SDK TracerProvider (an earlier test may have set
    # the global one): stored too, on top of what the handlers recorded.
    framework = 0
    for session_id in seen.values():
        events = await collector.get_events(session_id)
        spans = {e["id"] for e in events if e.get("action_type") == "span"}
        framework += len(spans) + sum(
            e["event_type"] == "errors" and e.get("trigger_event_id") in spans for e in events
        )
    # plus one ErrorEvent per failed request
    assert result.stored == result.recorded + errors + framework
