"""The exporter's lifecycle: a task that ends unexpectedly, a loop that goes away, close()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agentops_async as ao
from agentops_async.telemetry._exporter import Exporter

from .fake_api import FakeApi

LOOP_CLOSED = "event loop closed before delivery"
SHUTDOWN = "not acknowledged before the shutdown timeout"


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10) -> None:
    """Poll ``predicate`` until true (bounded); the test fails with ``what`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def exporter_of(session: ao.AsyncSession) -> Exporter:
    exporter = session._exporter
    assert isinstance(exporter, Exporter)
    return exporter


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "agentops_async" and r.levelno >= logging.WARNING
    ]


def params_of(api: FakeApi, session: ao.AsyncSession) -> list[int]:
    return [e["params"]["i"] for e in api.events[session.session_id]]


# -- item 1: the export task never dies silently --------------------------------------------------
@pytest.mark.asyncio
async def test_an_export_task_that_fails_drops_its_batch_counted_and_the_next_record_restarts_it(
    api: FakeApi,
    client: ao.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client.session() as session:
        await session.record(ao.ActionEvent(params={"i": 0}))
        assert await session.flush(5)
        exporter = exporter_of(session)
        real_take = exporter._take_batch

        def take_then_fail(lane: Any) -> Any:  # a bug outside the per-batch error handling, once
            monkeypatch.setattr(exporter, "_take_batch", real_take)
            real_take(lane)
            raise RuntimeError("bug in the export task")

        monkeypatch.setattr(exporter, "_take_batch", take_then_fail)
        task = exporter._task
        assert task is not None
        with caplog.at_level(logging.WARNING, logger="agentops_async"):
            for i in range(1, 6):
                await session.record(ao.ActionEvent(params={"i": i}))
            await asyncio.wait({task}, timeout=5)
        assert task.done()
        reason = "exporter task failed (RuntimeError)"
        assert client.stats.dropped_by_reason == {reason: 5}
        assert session.stats.dropped == 5
        (warning,) = warnings_in(caplog)
        assert "the exporter task failed; 5 event(s)" in warning.getMessage()
        assert warning.exc_info is not None and "bug in the export task" in str(warning.exc_info[1])
        for i in range(6, 9):  # the next record starts a new task, which delivers
            await session.record(ao.ActionEvent(params={"i": i}))
        assert await session.flush(5)
    assert params_of(api, session) == [0, 6, 7, 8]
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert client.stats.pending == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("cancelled", ["the export task", "one lane's task"])
async def test_an_export_task_cancelled_with_several_lanes_in_flight_loses_nothing(
    api: FakeApi, make_client: Any, cancelled: str
) -> None:
    client = make_client(max_concurrent_exports=3, flush_interval=0.01)
    api.script("/v2/create_events", *[503] * 1000)  # every lane's request is being retried
    sessions = [await client.start_session() for _ in range(3)]
    exporter = exporter_of(sessions[0])
    for i in range(5):
        for session in sessions:
            await session.record(ao.ActionEvent(params={"i": i}))
    await wait_for(
        lambda: all(lane.batches for lane in exporter._lanes), "a batch in flight on every lane"
    )
    task = exporter._task
    assert task is not None
    if cancelled == "the export task":
        task.cancel()
    else:  # its lane's loop ends: the export task ends with every lane, as if cancelled
        (lane,) = [t for t in asyncio.all_tasks() if t.get_name().endswith("exporter-lane-1")]
        lane.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
    assert not any(lane.batches for lane in exporter._lanes)  # every lane's batch taken back
    assert client.stats.pending > 0 and client.stats.dropped == 0
    api.scripted["/v2/create_events"].clear()  # the API is back
    assert await client.flush(10)  # a new task sends what the lanes held, in order
    for session in sessions:
        await session.end()
    await client.close()
    for session in sessions:
        assert params_of(api, session) == [0, 1, 2, 3, 4]  # each once, in order
    assert client.stats.dropped == 0 and client.stats.delivered == 15


@pytest.mark.asyncio
async def test_an_export_task_cancelled_by_someone_else_mid_batch_loses_nothing(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    api.script("/v2/create_events", 503, 503)
    async with client.session() as session:
        exporter = exporter_of(session)
        for i in range(5):
            await session.record(ao.ActionEvent(params={"i": i}))
        await wait_for(
            lambda: api.calls("/v2/create_events") and exporter._lanes[0].batches,
            "a batch in flight",
        )
        task = exporter._task
        assert task is not None
        task.cancel()  # e.g. a framework cancelling "all tasks" while the loop goes on
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
        assert client.stats.pending > 0 and client.stats.dropped == 0
        assert await session.flush(10)  # starts a new task, which sends the batch cut short
    await client.close()
    assert params_of(api, session) == [0, 1, 2, 3, 4]  # each once: nothing lost, nothing twice
    assert client.stats.dropped == 0 and client.stats.delivered == 5


# -- item 2: a loop that goes away ----------------------------------------------------------------
def test_a_client_reused_across_asyncio_run_delivers_what_the_first_loop_left(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(max_batch_size=10)
    api.script("/v2/create_events", 503)  # the first batch is cut by the end of the first loop

    async def first() -> ao.AsyncSession:
        session = await client.start_session()
        for i in range(25):
            await session.record(ao.ActionEvent(params={"i": i}))
        await wait_for(lambda: api.calls("/v2/create_events"), "the first batch to be sent")
        await session.end(wait=False)
        return session  # asyncio.run() cancels the export task and closes the loop

    session = asyncio.run(first())
    assert client.stats.pending > 0

    async def second() -> bool:  # the next test of a suite, using the same client
        return await client.close()

    assert asyncio.run(second())
    assert sorted(params_of(api, session)) == list(range(25))
    assert len(params_of(api, session)) == 25
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert client.stats.dropped == 0


def test_after_the_loop_closed_threadsafe_and_nowait_records_return_false_and_are_counted(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()

    async def start() -> ao.AsyncSession:
        return await client.start_session()

    session = asyncio.run(start())
    assert session.record_threadsafe(ao.ActionEvent()) is False
    assert session.record_nowait(ao.ActionEvent()) is False
    assert client.stats.dropped_by_reason == {LOOP_CLOSED: 2}
    assert session.stats.dropped == 2

    async def finish() -> bool:  # the session's creation and end are delivered from this loop
        await session.end()
        return await client.close()

    assert asyncio.run(finish())
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert client.stats.pending == 0


# -- item 4: close() says everything it could not deliver ----------------------------------------
@pytest.mark.asyncio
async def test_close_warns_once_with_every_event_and_session_update_it_could_not_deliver(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(
        shutdown_timeout=0.3, max_batch_size=5, max_queue_size=20, backpressure="drop"
    )
    api.script("/v2/create_events", *([503] * 1000))
    session = await client.start_session()
    for i in range(23):  # 3 dropped at once (queue full), 20 pending at close
        await session.record(ao.ActionEvent(params={"i": i}))
    await session.end(wait=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentops_async"):
        assert await client.close() is False
    stats = client.stats
    assert stats.dropped_by_reason == {SHUTDOWN: 20, "queue full (max_queue_size reached)": 3}
    assert (stats.ops_dropped, stats.sessions_not_ended, stats.pending) == (1, 1, 0)
    (warning,) = warnings_in(caplog)
    assert warning.getMessage() == (
        "agentops_async: close() could not deliver 20 event(s) (20 not acknowledged before the "
        "shutdown timeout) and 1 session operation(s) (1 session(s) left RUNNING on the server); "
        "23 event(s) dropped in all since the client started; see client.stats"
    )


@pytest.mark.asyncio
async def test_a_session_update_the_api_refuses_is_counted(api: FakeApi, make_client: Any) -> None:
    client = make_client()
    api.script("/v2/update_session", (400, '{"message": "bad"}', {}))
    async with client.session() as session:
        await session.record(ao.ActionEvent())
    assert (client.stats.ops_dropped, client.stats.sessions_not_ended) == (1, 1)
    assert await client.close()


# -- item 8: the spool at close and at start ------------------------------------------------------
@pytest.mark.asyncio
async def test_close_with_a_spool_says_how_many_events_went_to_disk_and_a_new_client_replays_them(
    api: FakeApi, make_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    first = make_client(shutdown_timeout=0.3, spool_dir=str(spool))
    api.script("/v2/create_session", *([503] * 1000))
    session = await first.start_session()
    for i in range(12):
        await session.record(ao.ActionEvent(params={"i": i}))
    await session.end(wait=False)
    with caplog.at_level(logging.INFO, logger="agentops_async"):
        assert await first.close() is False
    assert (first.stats.spooled, first.stats.dropped, first.stats.ops_dropped) == (12, 0, 0)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert (
        f"agentops_async: close(): 12 event(s) and 2 session operation(s) are in the spool "
        f"{spool}, for the next process that uses it"
    ) in lines
    assert not warnings_in(caplog)

    api.scripted.clear()  # the API is back; a new client on the same spool directory
    second = make_client(spool_dir=str(spool))
    async with second:  # replay starts with the client, with no new event recorded
        await wait_for(lambda: len(params_of(api, session)) == 12, "the spool replay")
        await wait_for(lambda: "end_state" in api.sessions[session.session_id], "the session end")
    assert params_of(api, session) == list(range(12))
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert second.stats.dropped == 0 and second.stats.spooled == 0


@pytest.mark.asyncio
async def test_records_and_session_updates_after_close_are_counted_with_that_reason(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    session = await client.start_session()
    assert await client.close()
    assert session.record_nowait(ao.ActionEvent()) is False
    assert session.record_threadsafe(ao.ActionEvent()) is False
    await session.end()  # its final update can no longer be sent: counted
    stats = client.stats
    assert stats.dropped_by_reason == {"recorded after the client was closed": 2}
    assert (stats.ops_dropped, stats.sessions_not_ended) == (1, 1)
