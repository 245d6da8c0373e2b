"""PostgreSQL: a create_sessions batch is one statement for all its sessions and tags, and one
``COPY`` for its events, with no savepoint; a re-sent batch and concurrent batches of the same
new sessions, in any order, still store everything once and never deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from _servers import PostgresServer

from agentops_async.collector._auth import new_project
from agentops_async.collector._postgres import PostgresStorage
from agentops_async.collector._storage import EventRow, SessionFilter, SessionWrite

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


def _row(session_id: str, event_id: str) -> EventRow:
    data = f'{{"id": "{event_id}", "event_type": "actions"}}'
    return (session_id, event_id, "actions", None, None, data)


@pytest_asyncio.fixture
async def pg(postgres_server: PostgresServer) -> AsyncIterator[PostgresStorage]:
    """A storage with one pool connection (what it sends can be logged on that connection)."""
    storage = PostgresStorage(postgres_server.create_database(), pool_size=1)
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def _statements_of(storage: PostgresStorage) -> list[str]:
    """A list that collects the statements (not COPY) the storage's connection sends."""
    sent: list[str] = []
    async with storage.pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query.strip()))
    return sent


@contextlib.asynccontextmanager
async def _two_collectors(
    server: PostgresServer,
) -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages (two collectors' pools) on one new database."""
    dsn = server.create_database()
    one, two = PostgresStorage(dsn, pool_size=2), PostgresStorage(dsn, pool_size=2)
    await one.open()
    await two.open()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def _tags_of(storage: PostgresStorage, session_id: str) -> list[str]:
    rows = await storage.pool.fetch(
        "SELECT tag FROM session_tags WHERE session_id = $1 ORDER BY tag", session_id
    )
    return [row[0] for row in rows]


async def test_a_batch_of_sessions_is_one_statement_and_no_savepoint(pg: PostgresStorage) -> None:
    project, _ = await new_project(pg, "p")
    known = [str(uuid.uuid4()) for _ in range(10)]
    fresh = [str(uuid.uuid4()) for _ in range(10)]
    for sid in known:
        await pg.upsert_session(SessionWrite(session_id=sid, project_id=project, tags=["a", "b"]))
    writes = [
        SessionWrite(session_id=sid, project_id=project, tags=["t", "t", "u"]) for sid in fresh
    ] + [
        SessionWrite(
            session_id=sid,
            project_id=project,
            state="SUCCEEDED",
            end_state="Success",
            tags=["b", "c"],
        )
        for sid in known
    ]
    rows = [_row(sid, f"e{i}") for sid in fresh + known for i in range(3)]
    # A connection's first batch also looks up the array types once (asyncpg's type cache).
    warm = str(uuid.uuid4())
    await pg.upsert_sessions([SessionWrite(session_id=warm, project_id=project)], [_row(warm, "e")])
    sent = await _statements_of(pg)

    assert await pg.upsert_sessions(writes, rows) == ([project] * 20, 60)

    # BEGIN, the sessions and tags, COMMIT (the COPY is not a logged statement); before: a
    # statement or more per session and a savepoint around the COPY.
    assert len(sent) == 3, sent
    assert sent[0].startswith("BEGIN") and sent[2].startswith("COMMIT")
    assert not [q for q in sent if "SAVEPOINT" in q]
    for sid in fresh:
        assert await _tags_of(pg, sid) == ["t", "u"]
        row = await pg.get_session(sid)
        assert row is not None and (row.state, row.tags) == ("RUNNING", ["t", "t", "u"])
    for sid in known:
        assert await _tags_of(pg, sid) == ["b", "c"]  # replaced: "a" went, "c" came
        row = await pg.get_session(sid)
        assert row is not None and (row.state, row.end_state) == ("SUCCEEDED", "Success")
    listed = await pg.list_sessions(SessionFilter(project_id=project, limit=100))
    assert [r.id for r in reversed(listed)] == [*known, warm, *fresh]  # the batch's order (seq)
    counts = await pg.event_counts(fresh + known)
    assert counts == {sid: {"actions": 3} for sid in fresh + known}


async def test_a_resent_batch_stores_and_counts_nothing_twice(pg: PostgresStorage) -> None:
    project, _ = await new_project(pg, "p")
    sids = [str(uuid.uuid4()) for _ in range(4)]
    writes = [SessionWrite(session_id=sid, project_id=project, tags=["x"]) for sid in sids]
    rows = [_row(sid, f"e{i}") for sid in sids for i in range(5)]
    assert await pg.upsert_sessions(writes, rows) == ([project] * 4, 20)
    ended = [
        SessionWrite(
            session_id=sid, project_id=project, state="FAILED", end_state="Fail", tags=["y"]
        )
        for sid in sids
    ]
    # The same events again and one new: the COPY meets stored ids, the batch is redone through
    # the staging table, and the sessions' update is kept exactly once.
    assert await pg.upsert_sessions(ended, [*rows, _row(sids[0], "new")]) == ([project] * 4, 1)
    assert await pg.event_counts(sids) == {
        sid: {"actions": 6 if sid == sids[0] else 5} for sid in sids
    }
    for sid in sids:
        row = await pg.get_session(sid)
        assert row is not None and (row.state, row.tags) == ("FAILED", ["y"])
        assert await _tags_of(pg, sid) == ["y"]
    page = await pg.list_events(sids[0], None, 10, None)
    assert [event_id for event_id, _ in page] == [f"e{i}" for i in range(5)] + ["new"]


async def test_another_projects_session_in_a_batch_stores_nothing(pg: PostgresStorage) -> None:
    mine, _ = await new_project(pg, "a")
    theirs, _ = await new_project(pg, "b")
    taken = str(uuid.uuid4())
    await pg.upsert_session(SessionWrite(session_id=taken, project_id=theirs, tags=["keep"]))
    fresh = str(uuid.uuid4())
    writes = [
        SessionWrite(session_id=fresh, project_id=mine, tags=["f"]),
        SessionWrite(session_id=taken, project_id=mine, end_state="Success", tags=["steal"]),
    ]
    owners, stored = await pg.upsert_sessions(writes, [_row(fresh, "e1"), _row(taken, "e2")])
    assert (owners, stored) == ([mine, theirs], 0)
    assert await pg.get_session(fresh) is None
    row = await pg.get_session(taken)
    assert row is not None and (row.project_id, row.state, row.tags) == (
        theirs,
        "RUNNING",
        ["keep"],
    )
    assert await _tags_of(pg, taken) == ["keep"]
    assert await pg.event_counts([fresh, taken]) == {}


async def test_concurrent_batches_of_the_same_new_sessions_store_them_once(
    postgres_server: PostgresServer,
) -> None:
    async with _two_collectors(postgres_server) as (one, two):
        project, _ = await new_project(one, "p")
        for round_ in range(20):
            sids = [str(uuid.uuid4()) for _ in range(5)]

            def batch(
                name: str, sids: list[str] = sids
            ) -> tuple[list[SessionWrite], list[EventRow]]:
                writes = [SessionWrite(session_id=s, project_id=project, tags=[name]) for s in sids]
                return writes, [_row(s, f"{name}-{i}") for s in sids for i in range(2)]

            results = await asyncio.gather(
                one.upsert_sessions(*batch("one")), two.upsert_sessions(*batch("two"))
            )
            assert results == [([project] * 5, 10), ([project] * 5, 10)], round_
            counts = await one.event_counts(sids)
            assert counts == {s: {"actions": 4} for s in sids}
            for sid in sids:
                assert await _tags_of(one, sid) in (["one"], ["two"])
            listed = await one.pool.fetchval(
                "SELECT count(*) FROM sessions WHERE id = ANY($1::text[])", sids
            )
            assert listed == 5


async def test_concurrent_batches_creating_the_same_sessions_in_other_orders_never_deadlock(
    postgres_server: PostgresServer,
) -> None:
    """Two collectors (or two SDKs sharing sessions) create the same new sessions, each request
    in its own order. Each waits for the other's inserts of the same keys; inserted in the
    requests' orders they waited for each other, and PostgreSQL answered one with a deadlock
    (a 503 after deadlock_timeout, 1 s) in ~4% of such pairs. Every request must succeed."""
    async with _two_collectors(postgres_server) as (one, two):
        project, _ = await new_project(one, "p")
        for round_ in range(40):
            sids = [str(uuid.uuid4()) for _ in range(8)]
            orders = {"fwd": sids, "rev": sids[::-1], "odd": sids[1::2] + sids[::2]}
            requests = [
                storage.upsert_sessions(
                    [SessionWrite(session_id=s, project_id=project, tags=["x", name]) for s in ids],
                    [_row(s, f"{name}-{s}") for s in ids],
                )
                for storage, (name, ids) in zip((one, two, one), orders.items(), strict=True)
            ]
            results = await asyncio.gather(*requests, return_exceptions=True)
            assert results == [([project] * 8, 8)] * 3, round_
            assert await one.event_counts(sids) == {s: {"actions": 3} for s in sids}
            stored = await one.pool.fetch(
                "SELECT id FROM sessions WHERE id = ANY($1::text[]) ORDER BY seq", sids
            )
            assert sorted(row[0] for row in stored) == sorted(sids)  # each once


async def _until_waiting_for_a_lock(storage: PostgresStorage, timeout: float = 10.0) -> None:
    """Return once a backend of the storage's database waits for a lock (another's insert)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await storage.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ):
        assert loop.time() < deadline, "the batch never waited for the other insert"
        await asyncio.sleep(0.005)  # polling the server's view of the wait, not a guess


@pytest.mark.parametrize("same_project", [True, False])
async def test_a_session_inserted_by_another_transaction_meanwhile_is_upserted_once(
    postgres_server: PostgresServer, same_project: bool
) -> None:
    import asyncpg

    dsn = postgres_server.create_database()
    storage = PostgresStorage(dsn, pool_size=2)
    await storage.open()
    other = await asyncpg.connect(dsn)
    try:
        mine, _ = await new_project(storage, "a")
        theirs, _ = await new_project(storage, "b")
        owner = mine if same_project else theirs
        raced, fresh = str(uuid.uuid4()), str(uuid.uuid4())
        async with other.transaction():
            await other.execute(
                "INSERT INTO sessions (id, project_id, state, tags) VALUES ($1, $2, 'RUNNING',"
                " '[\"before\"]'::json)",
                raced,
                owner,
            )
            await other.execute("INSERT INTO session_tags VALUES ($1, 'before')", raced)
            writes = [
                SessionWrite(session_id=fresh, project_id=mine, tags=["f"]),
                SessionWrite(session_id=raced, project_id=mine, state="SUCCEEDED", tags=["after"]),
            ]
            # The batch's statement takes its snapshot, then waits for this insert of `raced`.
            batch = asyncio.create_task(
                storage.upsert_sessions(writes, [_row(fresh, "e1"), _row(raced, "e2")])
            )
            await _until_waiting_for_a_lock(storage)
        owners, stored = await batch
        row = await storage.get_session(raced)
        assert row is not None
        if same_project:
            assert (owners, stored) == ([mine, mine], 2)
            assert (row.state, row.tags) == ("SUCCEEDED", ["after"])
            assert await _tags_of(storage, raced) == ["after"]
            assert await storage.event_counts([fresh, raced]) == {
                fresh: {"actions": 1},
                raced: {"actions": 1},
            }
        else:
            assert (owners, stored) == ([mine, theirs], 0)
            assert (row.project_id, row.state, row.tags) == (theirs, "RUNNING", ["before"])
            assert await storage.get_session(fresh) is None
    finally:
        await other.close()
        await storage.close()


async def test_a_sessions_batches_through_two_collectors_read_in_the_order_they_were_stored(
    postgres_server: PostgresServer,
) -> None:
    """Events are numbered (``seq``) from blocks of the sequence that a backend draws at once;
    a block left over from an earlier statement would number a later batch below a batch that
    another connection stored in between. Batches of one session alternate between two
    collectors (each with two connections), through ``create_events``, ``create_sessions`` and a
    re-sent batch's staging path, in sizes below, at and above a block: the session's page reads
    them in the order they were stored."""
    async with _two_collectors(postgres_server) as (one, two):
        project, _ = await new_project(one, "p")
        sid = str(uuid.uuid4())
        await one.upsert_session(SessionWrite(session_id=sid, project_id=project))
        sizes = [1, 2, 999, 1, 1000, 3, 1500, 1, 700, 2, 1, 1, 5, 1001, 1, 1]
        stored: list[str] = []
        for n, size in enumerate(sizes):
            storage = (one, two)[n % 2]
            fresh = [_row(sid, f"b{n:02d}-{i:04d}") for i in range(size)]
            if n % 3 == 0:
                assert await storage.insert_events(fresh) == size
            elif n % 3 == 1:
                write = SessionWrite(session_id=sid, project_id=project)
                assert await storage.upsert_sessions([write], fresh) == ([project], size)
            else:  # re-sent with the previous batch's last event: through the staging table
                assert await storage.insert_events([_row(sid, stored[-1]), *fresh]) == size
            stored += [row[1] for row in fresh]
        page = await two.list_events(sid, None, len(stored) + 1, None)
        assert [event_id for event_id, _ in page] == stored
