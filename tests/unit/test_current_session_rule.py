"""In async code, module-level helpers and decorators use the session current in this task only.

A task with no current session (post-processing after a request's ``async with`` block, a
background task) must never record into a session that another task opened: ``record()`` raises
``NoActiveSession`` saying how to pass the session, and decorated functions run unrecorded.
"""

from __future__ import annotations

import asyncio

import pytest

import agentops_async as ao

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


@ao.record_tool("lookup")
def lookup(key: str) -> str:
    return key.upper()


@ao.record_action("summarise")
async def summarise(text: str) -> str:
    await asyncio.sleep(0)
    return text[:3]


async def test_record_in_a_task_without_a_session_never_lands_in_another_tasks_session(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    opened, stray_done = asyncio.Event(), asyncio.Event()

    async def request_with_a_session() -> ao.AsyncSession:
        async with client.session(tags=["request-a"]) as session:
            opened.set()
            await session.record(ao.ActionEvent(action_type="mine"))
            await asyncio.wait_for(stray_done.wait(), 10)
        return session

    async def request_without_a_session() -> None:
        await asyncio.wait_for(opened.wait(), 10)
        try:
            with pytest.raises(ao.NoActiveSession) as raised:
                await ao.record(ao.ActionEvent(action_type="stray"))
        finally:
            stray_done.set()
        message = str(raised.value)
        assert "no session is current in this task" in message
        assert "await session.record(event)" in message
        assert "async with" in message

    session, _ = await asyncio.gather(request_with_a_session(), request_without_a_session())
    assert session.event_counts == {"actions": 1}
    assert [e["action_type"] for e in api.events[session.session_id]] == ["mine"]


async def test_background_task_recording_after_its_session_ended_raises_no_active_session(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    other_open, release_other, request_ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def other_request() -> ao.AsyncSession:  # running the whole time, in another task
        async with client.session(tags=["other"]) as other:
            other_open.set()
            await asyncio.wait_for(release_other.wait(), 10)
        return other

    async def post_processing() -> None:  # a BackgroundTask: inherits the request's session
        await asyncio.wait_for(request_ended.wait(), 10)
        await ao.record(ao.ActionEvent(action_type="late"))

    other_task = asyncio.create_task(other_request())
    await asyncio.wait_for(other_open.wait(), 10)
    async with client.session(tags=["request"]) as session:
        background = asyncio.create_task(post_processing())
    request_ended.set()
    with pytest.raises(ao.NoActiveSession, match=rf"\({session.session_id}\) has ended"):
        await background
    release_other.set()
    other = await other_task
    assert other.event_counts == {}
    assert session.event_counts == {}
    assert api.all_events == []


async def test_record_with_sessions_only_in_other_tasks_raises_no_active_session(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    sessions: list[ao.AsyncSession] = []

    async def open_one() -> None:  # started in another task: not current here
        sessions.append(await client.start_session())

    await asyncio.gather(open_one(), open_one())
    with pytest.raises(ao.NoActiveSession, match="never used"):
        await ao.record(ao.ActionEvent())
    await sessions[0].end()
    # One session left running: still not this task's, so still not used.
    with pytest.raises(ao.NoActiveSession, match="no session is current in this task"):
        await ao.record(ao.ActionEvent(action_type="only"))
    await sessions[1].end()
    assert [s.event_counts for s in sessions] == [{}, {}]
    assert api.all_events == []


async def test_decorated_functions_in_a_task_without_a_session_run_unrecorded(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    opened, stray_done = asyncio.Event(), asyncio.Event()

    async def request_with_a_session() -> ao.AsyncSession:
        async with client.session() as session:
            opened.set()
            assert lookup("mine") == "MINE"
            await asyncio.wait_for(stray_done.wait(), 10)
        return session

    async def request_without_a_session() -> tuple[str, str]:
        await asyncio.wait_for(opened.wait(), 10)
        try:
            return lookup("stray"), await summarise("stray")
        finally:
            stray_done.set()

    session, results = await asyncio.gather(request_with_a_session(), request_without_a_session())
    assert results == ("STRAY", "str")  # the functions ran, unrecorded
    assert session.event_counts == {"tools": 1}
    assert [(e["name"], e["params"]) for e in api.events[session.session_id]] == [
        ("lookup", {"key": "mine"})
    ]
