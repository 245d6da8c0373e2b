"""SQLite: create_sessions and create_events batches that arrive together share one commit."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentops_async.collector._auth import new_project
from agentops_async.collector._sqlite import SqliteStorage
from agentops_async.collector._storage import EventRow, SessionWrite

pytestmark = pytest.mark.asyncio


def _row(session_id: str, event_id: str, event_type: str = "actions") -> EventRow:
    data = f'{{"id": "{event_id}", "event_type": "{event_type}"}}'
    return (session_id, event_id, event_type, None, None, data)


def _llm_row(session_id: str, event_id: str) -> EventRow:
    data = f'{{"id": "{event_id}", "event_type": "llms"}}'
    return (session_id, event_id, "llms", None, None, data, "gpt-4o", 10, 5, 0.5)


@pytest_asyncio.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(str(tmp_path / "group.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class _WriterGate:
    """Holds the writer thread (so that the batches queue up) and counts its commits."""

    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage
        self.commits = 0
        self.release = threading.Event()
        self.held = threading.Event()

    def _count(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.commits += 1

    def _hold(self) -> None:
        self.held.set()
        if not self.release.wait(timeout=10):
            raise TimeoutError("the test never released the writer")

    async def hold(self) -> None:
        conn = self.storage._writer
        assert conn is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.storage._writer_pool, conn.set_trace_callback, self._count)
        self.storage._writer_pool.submit(self._hold)
        assert await asyncio.to_thread(self.held.wait, 10)


async def _queued(tasks: list[asyncio.Task[object]]) -> None:
    """Let every task run up to its wait on the writer (a few loop turns; no timer)."""
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)


async def test_create_sessions_and_create_events_batches_share_one_commit(
    sqlite_storage: SqliteStorage,
) -> None:
    storage = sqlite_storage
    project, _ = await new_project(storage, "p")
    other_project, _ = await new_project(storage, "other")
    long_session, new_session, foreign, refused_new = (str(uuid.uuid4()) for _ in range(4))
    await storage.upsert_session(SessionWrite(session_id=long_session, project_id=project))
    await storage.upsert_session(SessionWrite(session_id=foreign, project_id=other_project))

    gate = _WriterGate(storage)
    await gate.hold()
    tasks: list[asyncio.Task[object]] = [
        asyncio.ensure_future(
            storage.insert_events([_row(long_session, f"a{i}") for i in range(3)])
        ),
        # a long session's next batch: create_sessions with its events only
        asyncio.ensure_future(
            storage.upsert_sessions(
                [], [_row(long_session, f"b{i}") for i in range(4)] + [_llm_row(long_session, "l1")]
            )
        ),
        # a new session with its events
        asyncio.ensure_future(
            storage.upsert_sessions(
                [SessionWrite(session_id=new_session, project_id=project, tags=["t"])],
                [_row(new_session, "c1"), _row(long_session, "a0")],  # a0: a duplicate
            )
        ),
        # another project's session: nothing of this batch is stored, the others are
        asyncio.ensure_future(
            storage.upsert_sessions(
                [
                    SessionWrite(session_id=refused_new, project_id=project),
                    SessionWrite(session_id=foreign, project_id=project, tags=["x"]),
                ],
                [_row(refused_new, "d1"), _row(long_session, "d2")],
            )
        ),
    ]
    await _queued(tasks)
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    assert results == [
        3,
        ([], 5),
        ([project], 1),
        ([project, other_project], 0),
    ]
    assert gate.commits == 1  # one transaction for all four requests
    assert await storage.event_counts([long_session, new_session, refused_new]) == {
        long_session: {"actions": 7, "llms": 1},
        new_session: {"actions": 1},
    }
    assert await storage.session_project(refused_new) is None
    assert (await storage.get_sessions([new_session]))[0].tags == ["t"]
    foreign_row = await storage.get_session(foreign)
    assert foreign_row is not None and foreign_row.tags == []
    usage = await storage.llm_usage([long_session])
    assert [(u.model, u.prompt_tokens, u.completion_tokens) for u in usage] == [("gpt-4o", 10, 5)]


async def test_a_failing_batch_fails_alone_in_a_group(sqlite_storage: SqliteStorage) -> None:
    storage = sqlite_storage
    project, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    gate = _WriterGate(storage)
    await gate.hold()
    bad: EventRow = (session_id, "bad", None, None, None, "{}")  # type: ignore[assignment]
    tasks: list[asyncio.Task[object]] = [
        asyncio.ensure_future(
            storage.upsert_sessions(
                [SessionWrite(session_id=session_id, project_id=project)],
                [_row(session_id, "e1")],
            )
        ),
        asyncio.ensure_future(storage.upsert_sessions([], [bad])),
        asyncio.ensure_future(storage.insert_events([_row(session_id, "e2")])),
    ]
    await _queued(tasks)
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
    assert results[0] == ([project], 1)
    assert isinstance(results[1], sqlite3.IntegrityError)  # NOT NULL event_type
    assert results[2] == 1
    assert await storage.event_counts([session_id]) == {session_id: {"actions": 2}}


async def test_a_group_of_new_rows_adds_exact_counts_and_usage(
    sqlite_storage: SqliteStorage,
) -> None:
    storage = sqlite_storage
    project, _ = await new_project(storage, "p")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    gate = _WriterGate(storage)
    await gate.hold()
    tasks: list[asyncio.Task[object]] = [
        asyncio.ensure_future(
            storage.upsert_sessions(
                [SessionWrite(session_id=first, project_id=project)],
                [_row(first, "a1"), _llm_row(first, "l1"), _row(first, "t1", "tools")],
            )
        ),
        asyncio.ensure_future(
            storage.upsert_sessions(
                [SessionWrite(session_id=second, project_id=project)],
                [_llm_row(second, "l2"), _row(second, "a2")],
            )
        ),
        asyncio.ensure_future(storage.insert_events([_llm_row(first, "l3"), _row(second, "a3")])),
    ]
    await _queued(tasks)
    gate.release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert results == [([project], 3), ([project], 2), 2]
    assert gate.commits == 1
    assert await storage.event_counts([first, second]) == {
        first: {"actions": 1, "llms": 2, "tools": 1},
        second: {"actions": 2, "llms": 1},
    }
    usage = sorted(
        (u.session_id, u.prompt_tokens, u.completion_tokens)
        for u in await storage.llm_usage([first, second])
        if u.model is not None
    )
    assert usage == sorted([(first, 20, 10), (second, 10, 5)])
    # the same rows again store nothing and change no rollup
    assert await storage.insert_events([_llm_row(first, "l3"), _row(second, "a3")]) == 0
    assert (await storage.event_counts([first]))[first] == {"actions": 1, "llms": 2, "tools": 1}
