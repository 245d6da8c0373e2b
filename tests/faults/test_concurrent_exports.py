"""Several export requests in flight (``max_concurrent_exports``), against a real collector.

Sessions are spread over lanes, each lane one request on the wire: a session's events are stored
in the order they were recorded whatever order the collector answers the lanes in, and the
accounting stays exact (recorded = delivered + dropped by reason) through failures, outages and
close() with several requests in flight. Both export targets (v2 and OTLP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

import agentops_async as ao

from .ledger import Ledger
from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.asyncio

# The requests that carry a batch's events (v2 standard, v2 many-session, OTLP).
EXPORTS = ("/v2/create_events", "/v2/create_sessions", "/v1/traces")
SHUTDOWN = "not acknowledged before the shutdown timeout"


class LaneProxy(FaultProxy):
    """A FaultProxy that counts the export requests in flight and can hold some back.

    ``hold_if(body)`` picks the export requests to hold; a held request waits for
    ``release`` (then goes on to the collector). ``held`` counts them; ``on_held`` is set each
    time one more is held.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold_if: Callable[[bytes], bool] = lambda body: False
        self.release = asyncio.Event()
        self.held = 0
        self.on_held = asyncio.Event()
        self.answered: list[bytes] = []  # bodies of export requests answered 200, in order
        self.on_answered: Callable[[bytes], None] = lambda body: None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path not in EXPORTS:
            return await super()._handle(request)
        body = await request.read()  # (cached: the proxy reads the same bytes again)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold_if(body):
                self.held += 1
                self.on_held.set()
                await self.release.wait()
            response = await super()._handle(request)
            if response.status == 200:
                self.answered.append(body)
                self.on_answered(body)
            return response
        finally:
            self.in_flight -= 1

    async def wait_held(self, count: int, timeout: float = 20) -> None:
        while self.held < count:
            self.on_held.clear()
            await asyncio.wait_for(self.on_held.wait(), timeout)


@pytest_asyncio.fixture
async def lane_proxy(collector: Any) -> Any:
    proxy = await LaneProxy(collector.url).start()
    yield proxy
    proxy.release.set()
    await proxy.stop()


def _client(url: str, api_key: str, protocol: str, **settings: Any) -> ao.AsyncClient:
    settings.setdefault("max_concurrent_exports", 2)
    settings.setdefault("request_timeout", 2.0)
    settings.setdefault("flush_interval", 0.02)
    settings.setdefault("max_batch_size", 100)
    settings.setdefault("log_session_stats", False)
    return ao.AsyncClient(api_key=api_key, endpoint=url, protocol=protocol, **settings)


def _check_accounting(client: ao.AsyncClient, recorded: int) -> None:
    stats = client.stats
    assert stats.pending == 0
    assert stats.delivered + sum(stats.dropped_by_reason.values()) == recorded, stats
    assert stats.dropped == sum(stats.dropped_by_reason.values())


async def test_a_session_keeps_its_order_when_the_collector_answers_another_lane_first(
    collector: Any, lane_proxy: LaneProxy, protocol: str
) -> None:
    client = _client(lane_proxy.url, collector.api_key, protocol)
    first = await client.session(tags=["first"]).start()  # lane 1
    other = await client.session(tags=["other"]).start()  # lane 2
    first_id, other_id = first.session_id.encode(), other.session_id.encode()
    seen_first = 0
    other_answered_while_held = asyncio.Event()

    def hold(body: bytes) -> bool:
        nonlocal seen_first
        if first_id not in body:
            return False
        seen_first += 1
        return seen_first == 2  # the first session's second export waits...

    def answered(body: bytes) -> None:
        if lane_proxy.held and other_id in body and first_id not in body:
            other_answered_while_held.set()  # ...until the other lane has been answered
            lane_proxy.release.set()

    lane_proxy.hold_if, lane_proxy.on_answered = hold, answered
    ledger = Ledger()
    for i in range(600):
        await ledger.record(first, ao.ActionEvent(action_type="step", params={"i": i}))
        await ledger.record(other, ao.ActionEvent(action_type="step", params={"i": i}))
        if i % 50 == 0:
            await asyncio.sleep(0)
    await lane_proxy.wait_held(1)
    await asyncio.wait_for(other_answered_while_held.wait(), 20)
    # While the held request waited, nothing else of its session went out (one request in
    # flight per lane): the collector's answer to the other lane came first.
    assert seen_first == 2
    await first.end()
    await other.end()
    assert await client.close()

    _check_accounting(client, 1_200)
    assert client.stats.dropped == 0
    for session in (first, other):
        stored = await collector.get_events(session.session_id)
        assert [e["id"] for e in stored] == ledger.recorded[session.session_id]  # record order
        assert [e["params"]["i"] for e in stored] == list(range(600))
        assert (await collector.get_session(session.session_id))["end_state"] == "Success"


async def test_one_of_several_requests_in_flight_failing_or_retried_is_counted_exactly(
    collector: Any, lane_proxy: LaneProxy, protocol: str
) -> None:
    # (v2: the standard calls, whose refused create_events drops its events; a refused
    # create_sessions request would be sent again with the standard calls instead)
    path = "/v1/traces" if protocol == "otlp" else "/v2/create_events"
    client = _client(
        lane_proxy.url,
        collector.api_key,
        protocol,
        max_concurrent_exports=4,
        session_batches=protocol == "otlp",
    )
    await (await client.session(tags=["warm-up"]).start()).end()  # the batch path is known
    refused = lane_proxy.add(Fault("status", path=path, status=403, every=3, times=1))
    retried = lane_proxy.add(Fault("status", path=path, status=503, times=2))
    ledger = Ledger()
    sessions = [await client.session(tags=[f"agent-{n}"]).start() for n in range(8)]
    for i in range(150):
        for session in sessions:
            await ledger.record(session, ao.ToolEvent(name="t", params={"i": i}))
        if i % 10 == 0:
            await asyncio.sleep(0)
    for session in sessions:
        await session.end()
    assert await client.close(timeout=30)

    assert (refused.applied, retried.applied) == (1, 2)
    assert lane_proxy.most_in_flight >= 2
    recorded = 8 * 150
    _check_accounting(client, recorded)
    reasons = client.stats.dropped_by_reason
    assert len(reasons) == 1 and 0 < client.stats.dropped < recorded, reasons
    assert "403" in next(iter(reasons)), reasons
    stored_total = 0
    for session in sessions:
        stored = [e["id"] for e in await collector.get_events(session.session_id)]
        assert len(stored) == len(set(stored)) == session.stats.delivered  # none twice
        assert session.stats.delivered + session.stats.dropped == 150
        assert stored == [i for i in ledger.recorded[session.session_id] if i in set(stored)]
        stored_total += len(stored)
    assert stored_total == client.stats.delivered


async def test_collector_down_with_several_requests_in_flight_loses_nothing_uncounted(
    collector_factory: Any, protocol: str
) -> None:
    collector = collector_factory("sqlite")
    proxy = await LaneProxy(collector.url).start()
    try:
        client = _client(proxy.url, collector.api_key, protocol, max_concurrent_exports=3)
        await (await client.session(tags=["warm-up"]).start()).end()
        ledger = Ledger()
        sessions = [await client.session(tags=[f"agent-{n}"]).start() for n in range(3)]
        assert await client.flush(10)  # the sessions exist on the collector
        proxy.hold_if = lambda body: True
        for i in range(300):
            for session in sessions:
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
        await proxy.wait_held(3)  # one request of each lane on the wire
        assert proxy.in_flight == 3
        await asyncio.to_thread(collector.process.stop)
        proxy.release.set()  # they reach a collector that is gone: 502, retried
        for session in sessions:
            await session.end(wait=False)
        assert await client.close(timeout=1) is False
        recorded = 3 * 300
        _check_accounting(client, recorded)
        assert set(client.stats.dropped_by_reason) == {SHUTDOWN}
        await asyncio.to_thread(collector.process.start)
        collector.url = collector.process.url
        result = await ledger.check(collector, client, "collector down, 3 requests in flight")
        assert (result.duplicated, result.missing) == (0, client.stats.dropped)
        assert result.stored == client.stats.delivered == recorded - client.stats.dropped
    finally:
        proxy.release.set()
        await proxy.stop()


async def test_close_waits_for_every_request_in_flight(
    collector: Any, lane_proxy: LaneProxy, protocol: str
) -> None:
    client = _client(lane_proxy.url, collector.api_key, protocol)
    ledger = Ledger()
    sessions = [await client.session().start() for _ in range(2)]
    lane_proxy.hold_if = lambda body: True
    for i in range(100):
        for session in sessions:
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
    for session in sessions:
        await session.end(wait=False)
    await lane_proxy.wait_held(2)
    assert lane_proxy.in_flight == 2  # both lanes on the wire
    closing = asyncio.create_task(client.close(timeout=30))
    lane_proxy.release.set()
    assert await closing
    assert client.stats.delivered == 200 and client.stats.dropped == 0
    _check_accounting(client, 200)
    result = await ledger.check(collector, client, "close with 2 requests in flight")
    assert (result.stored, result.missing, result.duplicated) == (200, 0, 0)


async def test_close_times_out_with_several_requests_held_and_counts_them(
    collector: Any, lane_proxy: LaneProxy, protocol: str
) -> None:
    client = _client(lane_proxy.url, collector.api_key, protocol, request_timeout=30.0)
    sessions = [await client.session().start() for _ in range(2)]
    lane_proxy.hold_if = lambda body: True
    for i in range(100):
        for session in sessions:
            await session.record(ao.ActionEvent(params={"i": i}))
    await lane_proxy.wait_held(2)
    for session in sessions:
        await session.end(wait=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.close(timeout=0.5) is False
    assert loop.time() - started < 5  # bounded by its timeout, not by the held requests
    _check_accounting(client, 200)
    assert client.stats.dropped_by_reason == {SHUTDOWN: 200}


async def test_flush_waits_for_a_slow_lane_while_another_delivers_newer_events(
    collector: Any, lane_proxy: LaneProxy, protocol: str
) -> None:
    client = _client(lane_proxy.url, collector.api_key, protocol)
    slow = await client.session().start()  # lane 1
    fast = await client.session().start()  # lane 2
    await client.flush(10)
    slow_id = slow.session_id.encode()
    lane_proxy.hold_if = lambda body: slow_id in body
    await slow.record(ao.ActionEvent(params={"i": 0}))
    await lane_proxy.wait_held(1)
    flushing = asyncio.create_task(client.flush(30))
    await asyncio.sleep(0)  # (a yield, no wait: the flush begins here, before what follows)
    for i in range(20):  # recorded after the flush began, on the other lane: delivered first
        await fast.record(ao.ActionEvent(params={"i": i}))
    await fast.end()  # waits for this session only
    assert fast.stats.delivered == 20
    # The flush still waits for the slow lane's older event (a flush counting items in all,
    # not per lane, would return now: as many items were resolved as were pending).
    done, _ = await asyncio.wait({flushing}, timeout=1.0)
    assert not done and slow.stats.delivered == 0
    lane_proxy.release.set()
    assert await flushing
    assert slow.stats.delivered == 1
    await slow.end()
    await client.close()
