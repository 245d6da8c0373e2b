"""Batching, backpressure, drops, flush and close of the exporter, against the fake API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from typing import Any

import pytest

import agentops_async as ao
from agentops_async.testing import Capture

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


def event_batches(api: FakeApi) -> list[int]:
    return [len(body["events"]) for path, _, body in api.requests if path == "/v2/create_events"]


async def test_batches_are_cut_by_count(api: FakeApi, make_client: Any) -> None:
    client = make_client(max_batch_size=10)
    async with client.session() as session:
        for i in range(25):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert event_batches(api) == [10, 10, 5]
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(25))


async def test_batches_are_cut_by_encoded_size(api: FakeApi, make_client: Any) -> None:
    client = make_client(max_batch_bytes=4_000)
    async with client.session() as session:
        for i in range(20):
            await session.record(ao.ActionEvent(params={"i": i, "blob": "x" * 500}))
    await client.close()
    bodies = [body for path, _, body in api.requests if path == "/v2/create_events"]
    assert len(bodies) > 1
    assert sum(len(b["events"]) for b in bodies) == 20
    import msgspec

    assert all(len(msgspec.json.encode(b)) <= 4_000 for b in bodies)
    assert session.stats.delivered == 20


async def test_an_event_larger_than_a_request_is_dropped_naming_the_field_and_nothing_else(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    client = make_client(max_batch_bytes=2_000)
    async with client.session() as session:
        await session.record(ao.ActionEvent(params={"small": 0}))
        await session.record(ao.ActionEvent(returns="x" * 5_000))  # encoded by the exporter
        with pytest.raises(ao.InvalidEvent, match="largest field is 'prompt'"):
            session.record_threadsafe(ao.LLMEvent(prompt="y" * 5_000))  # encoded right here
        await session.record(ao.ActionEvent(params={"small": 1}))
    await client.close()
    assert [e["params"]["small"] for e in api.events[session.session_id]] == [0, 1]
    assert session.stats.recorded == 3
    assert session.stats.delivered == 2
    assert session.stats.dropped == 1
    assert client.stats.dropped_by_reason == {"event larger than max_batch_bytes (2000 bytes)": 1}
    warning = next(r.getMessage() for r in caplog.records if "larger than" in r.getMessage())
    assert re.search(r"ActionEvent is [\d,]+ bytes encoded.*largest field is 'returns'", warning)
    assert "raise max_batch_bytes" in warning


async def test_413_splits_the_batch_until_it_fits(api: FakeApi, client: ao.AsyncClient) -> None:
    api.script("/v2/create_events", 413, 413)
    async with client.session() as session:
        for i in range(8):
            await session.record(ao.ActionEvent(params={"i": i}))
    assert event_batches(api) == [8, 4, 2, 2, 4]
    assert sorted(e["params"]["i"] for e in api.events[session.session_id]) == list(range(8))
    assert session.stats.dropped == 0


async def test_a_refused_event_is_isolated_and_only_it_is_dropped(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    api.poison = lambda event: event["params"]["i"] in (3, 11)
    client = make_client(max_batch_size=8)
    async with client.session() as session:
        for i in range(16):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    delivered = sorted(e["params"]["i"] for e in api.events[session.session_id])
    assert delivered == [i for i in range(16) if i not in (3, 11)]
    assert session.stats.dropped == 2
    assert client.stats.dropped_by_reason == {"create_events refused (HTTP 400)": 2}
    logged = [r for r in caplog.records if "create_events refused" in r.getMessage()]
    assert len(logged) == 1
    assert "events[0].params: bad" in logged[0].getMessage()


async def test_an_outage_that_outlasts_max_retry_time_drops_the_batch_whole(
    api: FakeApi, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(max_retry_time=0.0)
    api.script("/v2/create_events", 503)
    async with client.session() as session:
        for i in range(6):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert len(api.calls("/v2/create_events")) == 1  # no bisecting an outage
    assert client.stats.dropped_by_reason == {"create_events gave up after retries": 6}


async def test_full_queue_in_drop_mode_drops_and_counts_exactly(
    captured: Capture, make_client: Any
) -> None:
    client = make_client(max_queue_size=5, backpressure="drop")
    async with client.session() as session:
        for i in range(8):  # no await yields to the exporter in between: the buffer fills
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert session.stats.recorded == 8
    assert session.stats.delivered == 5
    assert session.stats.dropped == 3
    assert client.stats.dropped_by_reason == {"queue full (max_queue_size reached)": 3}
    assert [e["params"]["i"] for e in captured.session().events] == [
        0,
        1,
        2,
        3,
        4,
    ]


def completes_without_suspending(call: Any) -> None:
    """Drive the coroutine ``call`` one step: it must finish there, never waiting on anything
    (no future, no timer; a suspended call would yield to the loop instead)."""
    try:
        call.send(None)
    except StopIteration:
        return
    call.close()
    pytest.fail("the call suspended: it waited for something (room in the queue)")


async def test_default_backpressure_never_waits_on_a_full_queue_and_warns_once(
    captured: Capture, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    client = make_client(max_queue_size=5, flush_interval=60)  # the default backpressure
    async with client.session() as session:
        for i in range(5):
            await session.record(ao.ActionEvent(params={"i": i}))  # the buffer is now full
        for i in range(5, 9):
            completes_without_suspending(session.record(ao.ActionEvent(params={"i": i})))
            completes_without_suspending(ao.record(ao.ActionEvent(params={"i": i})))
        assert client.stats.dropped_by_reason == {"queue full (max_queue_size reached)": 8}
    await client.close()
    assert (session.stats.recorded, session.stats.delivered, session.stats.dropped) == (13, 5, 8)
    assert [e["params"]["i"] for e in captured.session().events] == [
        0,
        1,
        2,
        3,
        4,
    ]
    (warning,) = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    for hint in ("backpressure='drop'", "max_queue_size", "spool_dir", "backpressure='block'"):
        assert hint in warning.getMessage()


async def test_default_backpressure_with_a_spool_keeps_the_overflow_without_waiting(
    captured: Capture, make_client: Any, tmp_path: Any
) -> None:
    client = make_client(max_queue_size=5, flush_interval=60, spool_dir=str(tmp_path))
    async with client.session() as session:
        for i in range(5):
            await session.record(ao.ActionEvent(params={"i": i}))
        for i in range(5, 9):
            completes_without_suspending(session.record(ao.ActionEvent(params={"i": i})))
    assert await client.close()
    assert (session.stats.delivered, session.stats.dropped) == (9, 0)
    assert [e["params"]["i"] for e in captured.session().events] == list(range(9))


async def test_full_queue_in_block_mode_waits_for_room_and_loses_nothing(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(
        max_queue_size=5, max_batch_size=5, backpressure="block", backpressure_timeout=10
    )
    async with client.session() as session:
        for i in range(40):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert session.stats.dropped == 0
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(40))
    assert max(event_batches(api)) <= 5


async def test_flush_returns_after_the_api_acknowledged_everything(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(flush_interval=60)  # only an explicit flush sends before 60 s
    async with client.session() as session:
        for i in range(7):
            await session.record(ao.ActionEvent(params={"i": i}))
        assert api.events[session.session_id] == []
        assert await session.flush(5)
        assert len(api.events[session.session_id]) == 7
        assert session.stats.delivered == 7
    await client.close()


async def test_close_with_the_api_down_reports_every_unsent_event_as_dropped(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(shutdown_timeout=0.3)
    api.script("/v2/create_events", *([503] * 1000))
    session = await client.start_session()
    for i in range(12):
        await session.record(ao.ActionEvent(params={"i": i}))
    stats = await session.end(wait=False)
    assert stats.state is ao.SessionState.SUCCEEDED
    assert await client.close() is False
    assert client.stats.delivered == 0
    assert session.stats.dropped == 12
    dropped = client.stats.dropped_by_reason
    assert dropped == {"not acknowledged before the shutdown timeout": 12}


async def test_close_cutting_a_batch_in_flight_and_one_prepared_ahead_counts_each_event_once(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(shutdown_timeout=0.3, max_batch_size=5)
    api.script("/v2/create_events", *([503] * 1000))
    session = await client.start_session()
    for i in range(12):  # one batch on the wire (retrying), the next prepared meanwhile, 2 queued
        await session.record(ao.ActionEvent(params={"i": i}))
    await session.end(wait=False)
    assert await client.close() is False
    assert client.stats.delivered == 0
    assert session.stats.dropped == 12
    assert client.stats.dropped_by_reason == {"not acknowledged before the shutdown timeout": 12}
    assert client.stats.pending == 0


async def test_create_session_refused_drops_its_events_with_the_reason(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    api.script("/v2/create_session", (401, '{"message": "invalid api key"}', {}))
    async with client.session() as session:
        for _ in range(4):
            await session.record(ao.ActionEvent())
    assert session.stats.dropped == 4
    assert client.stats.dropped_by_reason == {"session could not be created": 4}
    assert api.calls("/v2/create_events") == []
    assert api.calls("/v2/update_session") == []


async def test_expired_jwt_midway_is_reauthorised_and_nothing_is_lost(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(max_batch_size=3)
    api.script("/v2/create_events", None)  # placeholder replaced below
    api.scripted["/v2/create_events"].clear()
    async with client.session() as session:
        for i in range(3):
            await session.record(ao.ActionEvent(params={"i": i}))
        assert await session.flush(5)
        api.script("/v2/create_events", (401, '{"message": "Expired Token"}', {}))
        for i in range(3, 6):
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(6))
    assert len(api.calls("/v2/reauthorize_jwt")) == 1
    assert api.calls("/v2/update_session")[-1][1]["Authorization"].endswith("-1")


async def test_record_threadsafe_from_many_threads_delivers_everything_once(
    captured: Capture, make_client: Any
) -> None:
    client = make_client(max_batch_size=200)
    async with client.session() as session:

        def produce(worker: int) -> None:
            for i in range(500):
                assert session.record_threadsafe(ao.ToolEvent(name=f"w{worker}", params={"i": i}))

        threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
    await client.close()
    events = captured.session().events
    assert len(events) == 2_000
    assert len({e["id"] for e in events}) == 2_000
    for worker in range(4):  # each thread's events arrive in the order it recorded them
        mine = [e["params"]["i"] for e in events if e["name"] == f"w{worker}"]
        assert mine == list(range(500))


async def test_events_carry_the_session_trace_id_and_their_own_span_ids(
    captured: Capture, make_client: Any
) -> None:
    client = make_client()
    async with client.session() as session:
        await session.record(ao.ActionEvent())
        await session.record(ao.ActionEvent())
    await client.close()
    events = captured.session().events
    assert {e["trace_id"] for e in events} == {session.trace_id}
    assert len(session.trace_id) == 32
    assert all(len(e["span_id"]) == 16 for e in events)
    assert len({e["span_id"] for e in events}) == 2


async def test_an_exporter_bug_does_not_stop_delivery(
    api: FakeApi, client: ao.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client.session() as session:
        exporter = session._exporter
        real = exporter.target._send_part  # type: ignore[union-attr]
        calls = {"n": 0}

        async def flaky(*args: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("bug")
            await real(*args)

        monkeypatch.setattr(exporter.target, "_send_part", flaky)  # type: ignore[union-attr]
        await session.record(ao.ActionEvent())
        assert await session.flush(5)
        await session.record(ao.ActionEvent())
        await session.flush(5)
        await session.record(ao.ActionEvent())
    assert session.stats.delivered == 2
    assert client.stats.dropped_by_reason == {"internal exporter error": 1}


async def test_a_large_batch_mixing_both_paths_arrives_whole_and_in_order(
    api: FakeApi, make_client: Any
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    client = make_client(max_batch_size=1_000, flush_interval=60)
    async with client.session() as session:
        for i in range(1_000):  # > one encoding slice: encoded in slices and joined
            params: dict[str, Any] = {"i": i}
            if i == 700:
                params["o"] = Opaque()  # makes its slice fall back to one event at a time
            if i % 3:
                await session.record(ao.ActionEvent(params=params))
            else:  # encoded in the calling thread, embedded as it is
                session.record_threadsafe(ao.ActionEvent(params=params))
    await client.close()
    assert event_batches(api) == [1_000]
    sent = api.events[session.session_id]
    assert [e["params"]["i"] for e in sent] == list(range(1_000))
    assert sent[700]["params"]["o"] == "<opaque>"
    assert len({e["id"] for e in sent}) == 1_000
    assert session.stats.delivered == 1_000 and session.stats.dropped == 0


async def test_batches_prepared_ahead_are_sent_one_at_a_time_in_order(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(max_batch_size=10)
    async with client.session() as session:
        for i in range(55):  # several full batches queued: each is prepared while one is sent
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    paths = [path for path, _, _ in api.requests]
    assert paths == ["/v2/create_session", *["/v2/create_events"] * 6, "/v2/update_session"]
    assert event_batches(api) == [10, 10, 10, 10, 10, 5]
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(55))
    assert session.stats.delivered == 55 and client.stats.pending == 0


async def _loop_turns_while_preparing(client: ao.AsyncClient) -> list[int]:
    """Flush ``client``; how many times another task ran while each batch was prepared."""
    exporter = client._exporter_for_running_loop()
    turns = 0
    per_batch: list[int] = []

    async def ticker() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    prepare = exporter._prepare  # type: ignore[union-attr]

    async def counted(taken: Any) -> Any:
        before = turns
        prepared = await prepare(taken)
        per_batch.append(turns - before)
        return prepared

    exporter._prepare = counted  # type: ignore[union-attr]
    task = asyncio.create_task(ticker())
    try:
        await client.flush(10.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return per_batch


async def test_preparing_many_small_sessions_yields_every_few_dozen_events_not_each_session(
    api: FakeApi, make_client: Any
) -> None:
    # A service's batch: 100 request sessions of 3 events each. The loop gets a turn about
    # every 64 events (bounded stretches), not after every session (a loop turn costs as much
    # as preparing a small run). (One lane: its batch holds all 100 sessions.)
    client = make_client(flush_interval=60.0, max_batch_size=1_000, max_concurrent_exports=1)
    sessions = []
    for n in range(100):
        async with ao.AsyncSession(client=client, flush_on_exit=False) as session:
            for kind in ("llm", "tool", "action"):
                await session.record(ao.ActionEvent(action_type=kind, params={"n": n}))
        sessions.append(session)
    small = await _loop_turns_while_preparing(client)
    assert all(len(api.events[s.session_id]) == 3 for s in sessions)
    assert len(small) == 1 and 3 <= small[0] <= 100 * 4 // 64 + 2, small

    # One large session still yields every 64 events or so.
    client2 = make_client(flush_interval=60.0, max_batch_size=1_000)
    async with ao.AsyncSession(client=client2, flush_on_exit=False) as big:
        for i in range(640):
            await big.record(ao.ActionEvent(params={"i": i}))
    large = await _loop_turns_while_preparing(client2)
    assert len(api.events[big.session_id]) == 640
    assert len(large) == 1 and 9 <= large[0] <= 12, large
    await client.close()
    await client2.close()
