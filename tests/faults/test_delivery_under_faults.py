"""Delivery under real faults: nothing lost, nothing duplicated, every drop reported exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import pytest

import agentops_async as ao

from .ledger import Ledger
from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.asyncio

SESSIONS = 5
EVENTS = 200


def for_protocol(rules: list[Fault], protocol: str) -> list[Fault]:
    """``rules`` (written for the v2 API) aimed at the same traffic of ``protocol``: every v2
    call of a batch becomes the one OTLP export (``/v1/traces``) that carries it."""
    if protocol == "agentops_v2":
        return rules
    return [
        dataclasses.replace(rule, path="/v1/traces" if rule.path.startswith("/v2/") else rule.path)
        for rule in rules
    ]


def client_for(url: str, api_key: str, **settings: Any) -> ao.AsyncClient:
    settings.setdefault("request_timeout", 1.0)
    settings.setdefault("flush_interval", 0.02)
    settings.setdefault("max_batch_size", 50)
    settings.setdefault("log_session_stats", False)
    settings.setdefault("shutdown_timeout", 60)
    return ao.AsyncClient(api_key=api_key, endpoint=url, **settings)


async def run_agents(
    client: ao.AsyncClient, ledger: Ledger, sessions: int = SESSIONS, events: int = EVENTS
) -> list[ao.AsyncSession]:
    async def agent(index: int) -> ao.AsyncSession:
        async with client.session(tags=[f"agent-{index}"]) as session:
            for i in range(events):
                await ledger.record(session, ao.ToolEvent(name="t", params={"i": i}))
                if i % 25 == 0:
                    await asyncio.sleep(0)
        return session

    return list(await asyncio.gather(*(agent(i) for i in range(sessions))))


async def wait_for(predicate: Any, what: str, timeout: float = 20) -> None:
    """Poll ``predicate`` until true (bounded); the test fails with ``what`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


SCENARIOS = {
    "500/502/503 bursts": [
        Fault("status", path="/v2/create_events", status=500, times=3),
        Fault("status", path="/v2/create_events", status=502, times=2),
        Fault("status", path="/v2/create_session", status=503, times=2),
    ],
    "429 with Retry-After": [
        Fault("status", path="/v2/create_events", status=429, retry_after="1", times=2)
    ],
    "hang past the client timeout": [Fault("hang", path="/v2/create_events", delay=3, times=2)],
    "connection reset before the collector": [
        Fault("reset_before", path="/v2/create_events", times=3)
    ],
    "connection reset after the collector stored": [
        Fault("reset_after", path="/v2/create_events", times=3),
        Fault("reset_after", path="/v2/create_session", times=1),
    ],
    "slow answers": [Fault("slow", path="/v2/", delay=0.3, times=6)],
    "malformed JSON answers": [Fault("malformed", path="/v2/", every=3, times=6)],
    "expired JWT answers": [Fault("expire_jwt", path="/v2/create_events", every=2, times=3)],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_transient_faults_lose_and_duplicate_nothing(
    scenario: str, collector: Any, proxy: FaultProxy, protocol: str
) -> None:
    if protocol == "otlp" and scenario == "expired JWT answers":
        pytest.skip("OTLP exports carry the API key, not a session JWT")
    rules = [proxy.add(rule) for rule in for_protocol(SCENARIOS[scenario], protocol)]
    client = client_for(proxy.url, collector.api_key, protocol=protocol)
    ledger = Ledger()
    sessions = await run_agents(client, ledger)
    assert await client.close()
    result = await ledger.check(collector, client, scenario, proxy.injected)
    for rule in rules:  # the faults really happened
        assert rule.applied == rule.times, f"{rule} was applied {rule.applied} times"
    assert result.recorded == SESSIONS * EVENTS
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert result.stored == result.recorded
    for session in sessions:
        stored = await collector.get_session(session.session_id)
        assert stored is not None and stored["end_state"] == "Success"


async def test_collector_killed_and_restarted_on_the_same_database(
    collector_factory: Any, protocol: str
) -> None:
    collector = collector_factory("sqlite")
    proxy = await FaultProxy(collector.url).start()
    try:
        client = client_for(proxy.url, collector.api_key, protocol=protocol)
        ledger = Ledger()
        async with client.session() as session:
            for i in range(100):
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
            assert await session.flush(10)
            await asyncio.to_thread(collector.process.stop)
            for i in range(100, 300):
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
            await asyncio.sleep(0.5)  # the scenario: the SDK meets the outage and retries
            await asyncio.to_thread(collector.process.start)
            proxy.upstream = collector.process.url
            collector.url = collector.process.url
        assert await client.close()
        result = await ledger.check(collector, client, "collector killed and restarted")
        assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
        assert proxy.injected == {}  # the 502s came from the real outage, not from rules
    finally:
        await proxy.stop()


async def test_an_outage_longer_than_the_buffer_reports_exactly_what_is_missing(
    collector: Any, proxy: FaultProxy, protocol: str
) -> None:
    (rule,) = for_protocol([Fault("status", path="/v2/create_events", status=503)], protocol)
    outage = proxy.add(rule)
    client = client_for(
        proxy.url, collector.api_key, max_queue_size=100, backpressure="drop", protocol=protocol
    )
    ledger = Ledger()
    async with client.session() as session:
        for i in range(50):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        await wait_for(lambda: outage.applied >= 2, "the exporter to meet the outage")
        for i in range(50, 1_000):  # the exporter is stuck retrying: the buffer fills up
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
            if i % 10 == 0:
                await asyncio.sleep(0)
        proxy.clear()  # the collector is back
    assert await client.close() is True
    result = await ledger.check(collector, client, "outage longer than the buffer", proxy.injected)
    assert result.dropped_reported > 0
    assert result.missing == result.dropped_reported
    assert result.duplicated == 0
    assert result.stored == result.recorded - result.dropped_reported
    assert client.stats.dropped_by_reason == {
        "queue full (max_queue_size reached)": result.dropped_reported
    }
    assert session.stats.dropped == result.dropped_reported


SCALE = int(os.environ.get("AGENTOPS_FAULT_LOAD_EVENTS", "1000"))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_100_sessions_through_mixed_faults_with_bounded_memory(
    backend: str, collector_factory: Any
) -> None:
    collector = collector_factory(backend)
    proxy = await FaultProxy(collector.url).start()
    bound = 5_000
    for rule in (
        Fault("status", status=503, every=7, times=40),
        Fault("reset_after", path="/v2/create_events", every=11, times=20),
        Fault("slow", delay=0.05, every=5, times=40),
        Fault("malformed", every=13, times=15),
        Fault("status", path="/v2/create_events", status=429, retry_after="0", every=17, times=10),
    ):
        proxy.add(rule)
    try:
        client = client_for(
            proxy.url,
            collector.api_key,
            max_queue_size=bound,
            max_batch_size=500,
            backpressure="block",
            backpressure_timeout=60,
        )
        ledger = Ledger()
        peak = 0
        done = asyncio.Event()

        async def watch_buffer() -> None:
            nonlocal peak
            while not done.is_set():
                exporter = client._exporter
                if exporter is not None:
                    peak = max(peak, exporter._buffered_events)  # type: ignore[union-attr]
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch_buffer())
        await run_agents(client, ledger, sessions=100, events=SCALE)
        done.set()
        await watcher
        assert await client.close()
        result = await ledger.check(
            collector, client, f"100 sessions x {SCALE}, mixed faults ({backend})", proxy.injected
        )
        assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
        assert result.recorded == 100 * SCALE
        assert 0 < peak <= bound
        assert sum(proxy.injected.values()) > 50
    finally:
        await proxy.stop()


async def test_no_secret_reaches_any_log_record_across_faults(
    collector: Any, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for rule in (
        Fault("status", status=503, times=2),
        Fault("expire_jwt", path="/v2/create_events", times=2),
        Fault("malformed", path="/v2/create_session", times=1),
        Fault("reset_before", times=2),
        Fault("status", path="/v2/create_events", status=400, times=1),
    ):
        proxy.add(rule)
    client = client_for(proxy.url, collector.api_key, max_retry_time=20)
    async with client.session() as session:
        # What the v2 target knows of the session (the object outlives the session's end).
        auth = client._exporter.target._session(session.session_id).auth  # type: ignore[union-attr]
        for i in range(60):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    jwt = auth.jwt
    assert jwt and jwt.startswith("eyJ")
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert len(caplog.records) > 5  # the faults were logged...
    assert collector.api_key not in text  # ...without the key
    assert "eyJ" not in text  # ...or any JWT
    for shown in (repr(client), repr(client.config), repr(session), repr(auth)):
        assert collector.api_key not in shown and jwt not in shown
