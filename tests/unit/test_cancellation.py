"""Cancellation never loses acknowledged events, never leaks tasks, and is always accounted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentops_async as ao

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_cancelling_a_record_blocked_on_backpressure_counts_the_event(
    api: FakeApi, make_client: Any
) -> None:
    hold = asyncio.Event()
    client = make_client(
        max_queue_size=3, max_batch_size=3, backpressure="block", backpressure_timeout=30
    )
    session = await client.start_session()
    exporter = session._exporter
    original = exporter.target.api.create_events  # type: ignore[union-attr]

    async def held(*args: Any) -> None:
        await hold.wait()
        await original(*args)

    exporter.target.api.create_events = held  # type: ignore[union-attr]
    for _ in range(3):
        await session.record(ao.ActionEvent())
    await session.flush(0.05)  # the exporter takes the 3 events and waits on the held request
    for _ in range(3):
        await session.record(ao.ActionEvent())  # the buffer is full again
    blocked = asyncio.create_task(session.record(ao.ActionEvent()))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    hold.set()
    await session.end()
    assert await client.close()
    stats = session.stats
    assert stats.recorded == 7
    assert stats.delivered == 6
    assert stats.dropped == 1
    assert client.stats.dropped_by_reason == {"cancelled while waiting for room in the queue": 1}
    assert not exporter._room_waiters or all(f.done() for f in exporter._room_waiters)  # type: ignore[union-attr]


async def test_cancelling_a_flush_does_not_disturb_delivery(api: FakeApi, make_client: Any) -> None:
    client = make_client(flush_interval=60)
    async with client.session() as session:
        for i in range(10):
            await session.record(ao.ActionEvent(params={"i": i}))
        flushing = asyncio.create_task(session.flush(30))
        await asyncio.sleep(0)
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        assert await session.flush(5)
    assert await client.close()
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(10))
    assert other_tasks() == set()


async def test_close_cancels_the_exporter_and_leaves_no_task_running(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(shutdown_timeout=0.2)
    api.script("/v2/create_events", *([503] * 10_000))
    async with client.session() as session:
        for _ in range(5):
            await session.record(ao.ActionEvent())
    assert await client.close() is False
    assert other_tasks() == set()
    assert session.stats.dropped == 5
    assert client.stats.pending == 0


async def test_events_recorded_after_close_are_counted_not_lost_silently(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    session = await client.start_session()
    await session.record(ao.ActionEvent())
    assert await client.close()
    await session.record(ao.ActionEvent())
    await session.end()
    assert session.stats.dropped == 1
    assert client.stats.dropped_by_reason == {"recorded after the client was closed": 1}


async def test_cancelling_the_closing_task_propagates_and_still_stops_the_exporter(
    api: FakeApi, make_client: Any
) -> None:
    hold = asyncio.Event()
    client = make_client(shutdown_timeout=30)
    session = await client.start_session()
    exporter = session._exporter

    async def never_answers(*_: Any) -> None:
        await hold.wait()

    exporter.target.api.create_events = never_answers  # type: ignore[union-attr]
    await session.record(ao.ActionEvent())
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0.05)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    hold.set()
    # The exporter task is gone either way; a second close is harmless.
    await exporter.close(0.1)  # type: ignore[union-attr]
    await session.end(wait=False)
    assert other_tasks() == set()
