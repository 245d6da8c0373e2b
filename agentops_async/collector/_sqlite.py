"""SQLite storage: stdlib sqlite3 on dedicated threads, WAL mode, never on the event loop.

One writer thread owns the writing connection (SQLite has one writer anyway, so serialising writes
in-process avoids busy waits); one reader thread owns a second connection, which WAL lets read while
the writer writes. Batches of events that arrive together share one transaction; each is a few
multi-row INSERTs (see ``_insert_run``).

The writer does not checkpoint the WAL on commit (that was a quarter of its time under load): a
background task checkpoints from the reader thread after writes, with ``PASSIVE`` so it never blocks
the writer; from the writer thread only when the WAL has grown large (see
``_checkpoint_after_writes``); and once more (``TRUNCATE``) on close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

from ._prices import Usage, usage_row
from ._storage import (
    EVENTS_PER_DELETE,
    ROW_COLUMNS,
    UPDATABLE_SESSION_FIELDS,
    EventRow,
    OverviewData,
    ProjectKeys,
    PruneResult,
    SessionFilter,
    SessionRow,
    SessionWrite,
    StorageUnavailable,
    newer_schema,
    session_page_sql,
)

__all__ = ["SqliteStorage"]

log = logging.getLogger("agentops_async")
T = TypeVar("T")

# The usage rollups summed from events: all of them (migration 6 fills the tables with these),
# or those above a seq (each write transaction adds its new events with those). total(), not
# sum(): a sum of integers raises on int64 overflow, which must never fail an ingest (a whole
# number total() is stored as an integer; the upserts' + turns to a float when it overflows).
# NOT INDEXED keeps the planner on the seq range (a transaction's new rows: a rowid search),
# off the indexes that hold every event of a type or of a session.
_LLM_USAGE_OF = """
    SELECT session_id, coalesce(model, ''), cost IS NOT NULL, count(*),
           total(prompt_tokens), total(completion_tokens), sum(cost)
    FROM events NOT INDEXED WHERE seq > {floor} AND event_type = 'llms' GROUP BY 1, 2, 3
"""
_TOOL_USAGE_OF = """
    SELECT session_id, name, count(*), count(seconds), total(seconds), max(seconds), sum(cost)
    FROM (SELECT session_id, cost,
                 coalesce(iif(json_valid(data), json_extract(data, '$.name'), NULL), '') AS name,
                 CASE WHEN span >= 0 THEN span END AS seconds
          FROM (SELECT session_id, cost, data,
                       (julianday(end_timestamp) - julianday(init_timestamp)) * 86400.0 AS span
                FROM events NOT INDEXED WHERE seq > {floor} AND event_type = 'tools'))
    GROUP BY 1, 2
"""
_USAGE_FROM_EVENTS = (
    "INSERT INTO session_llm_usage" + _LLM_USAGE_OF.format(floor=0),
    "INSERT INTO session_tool_usage" + _TOOL_USAGE_OF.format(floor=0),
)
# The events of each session by type (the sessions list and the session page read these, never
# the events: a session of 100,000 events is counted in a few rows).
_COUNTS_OF = """
    SELECT session_id, event_type, count(*)
    FROM events NOT INDEXED WHERE seq > {floor} GROUP BY 1, 2
"""
_COUNTS_FROM_EVENTS = "INSERT INTO session_event_counts" + _COUNTS_OF.format(floor=0)
_ADD_COUNTS = "ON CONFLICT DO UPDATE SET events = events + excluded.events"
_COUNTS_OF_NEW_EVENTS = (
    "INSERT INTO session_event_counts" + _COUNTS_OF.format(floor="?1") + _ADD_COUNTS
)
# A transaction that stored every row it was given adds their counts by type, summed here
# (a few rows), instead of reading its rows back.
_ADD_EVENT_COUNTS = (
    "INSERT INTO session_event_counts (session_id, event_type, events) VALUES (?, ?, ?)"
    + _ADD_COUNTS
)
_LLM_USAGE_OF_NEW_EVENTS = (
    "INSERT INTO session_llm_usage"
    + _LLM_USAGE_OF.format(floor="?1")
    + """ON CONFLICT DO UPDATE SET
        calls = calls + excluded.calls,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost = cost + excluded.cost"""
)
_TOOL_USAGE_OF_NEW_EVENTS = (
    "INSERT INTO session_tool_usage"
    + _TOOL_USAGE_OF.format(floor="?1")
    + """ON CONFLICT DO UPDATE SET
        calls = calls + excluded.calls,
        timed_calls = timed_calls + excluded.timed_calls,
        total_seconds = total_seconds + excluded.total_seconds,
        max_seconds = CASE WHEN max_seconds IS NULL OR excluded.max_seconds > max_seconds
            THEN excluded.max_seconds ELSE max_seconds END,
        cost = coalesce(cost + excluded.cost, cost, excluded.cost)"""
)

_MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(id),
        trace_id TEXT,
        init_timestamp TEXT,
        init_ts REAL,
        end_timestamp TEXT,
        end_ts REAL,
        state TEXT NOT NULL,
        end_state TEXT,
        end_state_reason TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        video TEXT,
        host_env TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sessions_by_project ON sessions(project_id, seq);
    CREATE INDEX sessions_by_trace ON sessions(trace_id) WHERE trace_id IS NOT NULL;
    CREATE TABLE session_tags (
        session_id TEXT NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (session_id, tag)
    ) WITHOUT ROWID;
    CREATE INDEX session_tags_by_tag ON session_tags(tag, session_id);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        init_timestamp TEXT,
        end_timestamp TEXT,
        model TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        cost REAL,
        data TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_by_session_id ON events(session_id, id);
    CREATE INDEX events_by_session ON events(session_id);
    CREATE INDEX events_llm_by_session ON events(session_id) WHERE event_type = 'llms';
    CREATE TABLE agents (
        session_id TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, id)
    );
    CREATE TABLE developer_errors (
        seq INTEGER PRIMARY KEY,
        project_id TEXT NOT NULL,
        session_id TEXT,
        data TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 2: API keys can be revoked
    """
    ALTER TABLE api_keys ADD COLUMN revoked_at REAL
    """,
    # 3: log uploads of a session and uploaded objects (agentops 0.4's /v4 uploads)
    """
    CREATE TABLE session_logs (
        seq INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX session_logs_by_session ON session_logs(session_id, seq);
    CREATE TABLE objects (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # 4: the costs of a session's tools events (agentops 0.4's @tool(cost=...)), summed into its
    # cost through this partial index (only those rows are read, not the whole session)
    """
    CREATE INDEX events_tool_cost_by_session ON events(session_id, cost)
        WHERE event_type = 'tools' AND cost IS NOT NULL
    """,
    # 5: a session's counts by type and its LLM usage are read from the indexes alone (covering
    # indexes): events_by_session carries seq (its order, as before) and event_type,
    # events_llm_by_session the usage columns. Same number of indexes, a little wider.
    """
    DROP INDEX events_by_session;
    CREATE INDEX events_by_session ON events(session_id, seq, event_type);
    DROP INDEX events_llm_by_session;
    CREATE INDEX events_llm_by_session
        ON events(session_id, event_type, model, prompt_tokens, completion_tokens, cost)
        WHERE event_type = 'llms'
    """,
    # 6: the overview's rollups: per session, the LLM usage by model and the tools by name. The
    # writer keeps them in the transaction that inserts the events, from the rows each INSERT
    # actually stored (see _store_jobs); here they are filled from the events stored before.
    # The overview reads these and the sessions (by project and start), never the events.
    """
    CREATE TABLE session_llm_usage (
        session_id TEXT NOT NULL,
        model TEXT NOT NULL,
        has_cost INTEGER NOT NULL,
        calls INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost REAL,
        PRIMARY KEY (session_id, model, has_cost)
    ) WITHOUT ROWID;
    CREATE TABLE session_tool_usage (
        session_id TEXT NOT NULL,
        name TEXT NOT NULL,
        calls INTEGER NOT NULL,
        timed_calls INTEGER NOT NULL,
        total_seconds REAL NOT NULL,
        max_seconds REAL,
        cost REAL,
        PRIMARY KEY (session_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_project_start ON sessions(project_id, init_ts);
    """
    + "; ".join(_USAGE_FROM_EVENTS),
    # 7: the events of each session by type (see _COUNTS_OF), kept like the usage rollups.
    """
    CREATE TABLE session_event_counts (
        session_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        events INTEGER NOT NULL,
        PRIMARY KEY (session_id, event_type)
    ) WITHOUT ROWID;
    """
    + _COUNTS_FROM_EVENTS,
]

# Events are inserted with multi-row INSERTs of 1, 2, 4, ... 512 rows (a run of n rows takes the
# binary digits of n): one statement steps through many rows, which costs half as much per row as
# executemany. Thirty statements in all (ten sizes for each width of row), so they stay in the
# connection's statement cache.
# Rows come in three widths (see EventRow): most events have neither LLM usage nor a tool's
# timestamps and bind four values, not six or ten. Binding None (or any type but str, int,
# float) takes sqlite3's adapter lookup, ~0.3 µs a value, more than the rest of a row's insert:
# so the columns a wider row may leave NULL are bound as '' where they are None and stored as
# NULL by NULLIF (an empty timestamp or model means no more than none does, in every rollup).
# A data value given as a Raw JSON fragment binds as a blob; the CAST stores it as text.
_MAX_ROWS_PER_INSERT = 512
_EVENT_COLUMNS = {width: ", ".join(columns) for width, columns in ROW_COLUMNS.items()}
_NULLABLE = set(ROW_COLUMNS[10]) - set(ROW_COLUMNS[4])  # the columns a row may lack


def _placeholder(column: str) -> str:
    if column == "data":
        return "CAST(? AS TEXT)"
    return "NULLIF(?, '')" if column in _NULLABLE else "?"


_EVENT_VALUES = {
    width: f"({','.join(map(_placeholder, columns))})" for width, columns in ROW_COLUMNS.items()
}


def _insert_events_sql(width: int, count: int) -> str:
    values = ",".join([_EVENT_VALUES[width]] * count)
    return (
        f"INSERT INTO events ({_EVENT_COLUMNS[width]}) VALUES {values}"
        " ON CONFLICT (session_id, id) DO NOTHING"
    )


_INSERT_EVENTS = {
    (width, 1 << bit): _insert_events_sql(width, 1 << bit)
    for width in _EVENT_COLUMNS
    for bit in range(_MAX_ROWS_PER_INSERT.bit_length())
}

_WAL_RESTART_FRAMES = 4096  # 64 MiB of 16 KiB pages
_SESSION_COLUMNS = (
    "seq, id, project_id, trace_id, init_timestamp, init_ts, end_timestamp, end_ts, state,"
    " end_state, end_state_reason, tags, video, host_env"
)


def _session_row(row: tuple[object, ...]) -> SessionRow:
    values = list(row)
    values[11] = json.loads(str(values[11]))
    return SessionRow(*values)  # type: ignore[arg-type]


DEFAULT_BUSY_TIMEOUT = 10.0

# Result codes (the low byte of an extended code) of failures that pass: another connection holds
# a lock past busy_timeout, the disk is full, the file system failed. A retry later succeeds.
_BUSY, _LOCKED, _NOMEM, _IOERR, _FULL, _CANTOPEN, _PROTOCOL = 5, 6, 7, 10, 13, 14, 15
_TRANSIENT = {
    _BUSY: "the database is locked by another connection (busy timeout passed)",
    _LOCKED: "the database is locked by another connection",
    _FULL: "the disk is full",
    _IOERR: "disk I/O error",
    _CANTOPEN: "cannot open the database file",
    _PROTOCOL: "the database lock protocol failed",
    _NOMEM: "out of memory",
}


def unavailable(exc: sqlite3.Error) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` that ``exc`` means, or None if it is not transient.

    The one place where SQLite errors are classified: every path to the database goes through
    ``SqliteStorage._read``, ``_write`` or ``insert_events``, which raise what this returns.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    reason = _TRANSIENT.get(code & 0xFF) if isinstance(code, int) else None
    if reason is None and isinstance(exc, sqlite3.OperationalError):
        text = str(exc)  # sqlite3 before 3.11 has no codes: the stable messages of the same codes
        if "locked" in text or "busy" in text:
            reason = _TRANSIENT[_BUSY]
        elif "disk is full" in text:
            reason = _TRANSIENT[_FULL]
        elif "disk I/O error" in text:
            reason = _TRANSIENT[_IOERR]
    return None if reason is None else StorageUnavailable(f"sqlite: {reason}")


def _connect(
    path: str, autocheckpoint: bool = True, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per operation.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if path != ":memory:":
        # Only takes effect on a new, empty file; 16 KiB pages cut insert and checkpoint cost ~15%.
        conn.execute("PRAGMA page_size = 16384")
        # Also only on a new file: pages freed by a prune can be given back to the file system
        # (see reclaim_space). An older file keeps auto_vacuum off until a VACUUM (`prune
        # --vacuum`), which this setting then switches to incremental.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        current = int(row[0] or 0)
        if current > len(_MIGRATIONS):
            raise newer_schema(current, len(_MIGRATIONS))
        for version, script in enumerate(_MIGRATIONS, start=1):
            if version > current:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                log.info("sqlite schema migrated to version %d", version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SqliteStorage:
    """Storage in a SQLite file (or ``":memory:"``).

    Args:
        path: The database file; created with its schema on :meth:`open`.
        busy_timeout: Seconds a write waits for a lock held by another connection (the CLI,
            another process) before the request is answered 503 (the client retries).
    """

    def __init__(self, path: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="agentops-sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="agentops-sqlite-reader")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._dirty = asyncio.Event()
        self._pending: list[_Job] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._checkpointer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r})"

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer
        if conn is None:
            raise RuntimeError("storage is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer_pool, fn, conn)
        except sqlite3.Error as exc:
            translated = unavailable(exc)
            if translated is None:
                raise
            raise translated from exc
        finally:
            self._dirty.set()

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        if conn is None:
            raise RuntimeError("storage is not open")
        pool = self._reader_pool if conn is not self._writer else self._writer_pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, conn)
        except sqlite3.Error as exc:
            translated = unavailable(exc)
            if translated is None:
                raise
            raise translated from exc

    async def open(self) -> None:
        """Open both connections and migrate the schema."""
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(
            self._writer_pool, _connect, self.path, False, self.busy_timeout
        )
        await loop.run_in_executor(self._writer_pool, _migrate, self._writer)
        if self.path == ":memory:":
            self._reader = self._writer  # a private memory database has one connection
        else:
            self._reader = await loop.run_in_executor(
                self._reader_pool, _connect, self.path, True, self.busy_timeout
            )
            self._checkpointer = asyncio.create_task(
                self._checkpoint_after_writes(), name="agentops-sqlite-checkpoint"
            )

    async def _checkpoint_after_writes(self, interval: float = 0.5) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                if await self._read(_checkpoint_passive) > _WAL_RESTART_FRAMES:
                    # Beside a busy writer a checkpoint never catches up, so the WAL never
                    # restarts from its beginning and grows by all that is written (as large as
                    # the database after a long ingest). Finished on the writer thread, between
                    # two transactions, the checkpoint completes and the next write restarts it.
                    await self._write(_checkpoint_passive)
            except (sqlite3.Error, StorageUnavailable) as exc:
                log.warning("sqlite WAL checkpoint failed: %s", exc)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Close the connections and stop the threads."""
        loop = asyncio.get_running_loop()
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            await loop.run_in_executor(self._reader_pool, reader.close)
        if writer is not None and reader is not writer:
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(self._writer_pool, _checkpoint_truncate, writer)
        if writer is not None:
            await loop.run_in_executor(self._writer_pool, writer.close)
        self._reader_pool.shutdown(wait=False)
        self._writer_pool.shutdown(wait=False)

    async def get_secret(self, candidate: bytes) -> bytes:
        """The stored JWT secret, storing ``candidate`` first if there is none."""

        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('jwt_secret', ?) ON CONFLICT DO NOTHING",
                (candidate.hex(),),
            )
            row = conn.execute("SELECT value FROM settings WHERE key = 'jwt_secret'").fetchone()
            return bytes.fromhex(row[0])

        return await self._write(run)

    async def create_project(self, project_id: str, name: str, key_hash: str) -> None:
        """Store a project and its key in one transaction."""

        def run(conn: sqlite3.Connection) -> None:
            now = time.time()
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)",
                    (project_id, name, now),
                )
                conn.execute(
                    "INSERT INTO api_keys (key_hash, project_id, created_at) VALUES (?, ?, ?)",
                    (key_hash, project_id, now),
                )

        await self._write(run)

    async def project_for_key(self, key_hash: str) -> str | None:
        """The project of a key hash."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT project_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def add_key(self, project_id: str, key_hash: str) -> bool:
        """Give an existing project one more API key; False when there is no such project."""

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                if conn.execute("SELECT 1 FROM projects WHERE id = ?", (project_id,)).fetchone():
                    conn.execute(
                        "INSERT INTO api_keys (key_hash, project_id, created_at) VALUES (?, ?, ?)",
                        (key_hash, project_id, time.time()),
                    )
                    return True
                return False

        return await self._write(run)

    async def revoke_key(self, key_hash: str) -> str | None:
        """Revoke an API key: its project id, or None when no live key has this hash."""

        def run(conn: sqlite3.Connection) -> str | None:
            with _transaction(conn):
                row = conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL"
                    " RETURNING project_id",
                    (time.time(), key_hash),
                ).fetchone()
            return None if row is None else str(row[0])

        return await self._write(run)

    async def list_projects(self) -> list[ProjectKeys]:
        """Every project with its live and revoked key counts, oldest first."""

        def run(conn: sqlite3.Connection) -> list[ProjectKeys]:
            rows = conn.execute(
                "SELECT p.id, p.name, count(k.key_hash) FILTER (WHERE k.revoked_at IS NULL),"
                " count(k.key_hash) FILTER (WHERE k.revoked_at IS NOT NULL)"
                " FROM projects p LEFT JOIN api_keys k ON k.project_id = p.id"
                " GROUP BY p.id ORDER BY p.created_at, p.id"
            ).fetchall()
            return [ProjectKeys(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

        return await self._read(run)

    async def upsert_session(self, write: SessionWrite) -> str:
        """Insert or update (same project only); returns the owning project."""

        def run(conn: sqlite3.Connection) -> str:
            with _transaction(conn):
                return _upsert_session(conn, write)

        return await self._write(run)

    async def upsert_sessions(
        self, writes: Sequence[SessionWrite], rows: Sequence[EventRow] = ()
    ) -> tuple[list[str], int]:
        """Upsert many sessions and store events, in one transaction (nothing when a session
        is another project's); the owning projects in order, and how many events were new.

        Committed with the other batches that arrive meanwhile, as :meth:`insert_events`."""
        return await self._store(writes, rows)

    async def update_session(self, write: SessionWrite) -> bool:
        """Update a session of the same project."""

        def run(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return _update_session(conn, write)

        return await self._write(run)

    async def session_project(self, session_id: str) -> str | None:
        """The owner of a session."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT project_id FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def sessions_for_traces(
        self, project_id: str, trace_ids: Sequence[str]
    ) -> dict[str, str]:
        """Map trace ids to session ids within a project."""
        if not trace_ids:
            return {}

        def run(conn: sqlite3.Connection) -> dict[str, str]:
            marks = ",".join("?" * len(trace_ids))
            rows = conn.execute(
                f"SELECT trace_id, id FROM sessions WHERE trace_id IN ({marks}) AND project_id = ?",
                (*trace_ids, project_id),
            ).fetchall()
            return {str(t): str(s) for t, s in rows}

        return await self._read(run)

    async def insert_events(self, rows: Sequence[EventRow]) -> int:
        """Store a batch (a few multi-row INSERTs); returns the number of new events.

        Batches that arrive while the writer is busy are committed together (see
        :meth:`_store`).
        """
        return (await self._store((), rows))[1]

    async def _store(
        self, writes: Sequence[SessionWrite], rows: Sequence[EventRow]
    ) -> tuple[list[str], int]:
        """Queue sessions to upsert and events to insert for the writer; their owners and how
        many events were new.

        Every batch queued while the writer is busy (``create_events`` and
        ``create_sessions`` alike) shares one transaction (group commit): a commit, and the
        rollups' statements, cost the same for one batch or many, so under load they are paid
        once for all of them.
        """
        conn = self._writer
        if conn is None:
            raise RuntimeError("storage is not open")
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[tuple[list[str], int]] = loop.create_future()
        with self._pending_lock:
            self._pending.append(_Job(writes, rows, stored))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._writer_pool.submit(self._flush_jobs, conn, loop)
        try:
            return await stored
        except sqlite3.Error as exc:
            translated = unavailable(exc)
            if translated is None:
                raise
            raise translated from exc
        finally:
            self._dirty.set()

    def _flush_jobs(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Writer thread: commit every pending job in one transaction."""
        with self._pending_lock:
            jobs, self._pending = self._pending, []
            self._flush_scheduled = False
        try:
            results = _store_jobs(conn, jobs)
        except Exception as exc:
            if len(jobs) == 1 or (isinstance(exc, sqlite3.Error) and unavailable(exc)):
                # One job, or the database is unavailable (locked, disk full): each would fail
                # alike, after as long a wait; they all get this error at once.
                for job in jobs:
                    loop.call_soon_threadsafe(_settle, job.future, None, exc)
                return
            # One bad job must not fail the others: retry them one by one.
            for job in jobs:
                try:
                    (result,) = _store_jobs(conn, [job])
                except Exception as one_exc:
                    loop.call_soon_threadsafe(_settle, job.future, None, one_exc)
                else:
                    loop.call_soon_threadsafe(_settle, job.future, result, None)
            return
        for job, result in zip(jobs, results, strict=True):
            loop.call_soon_threadsafe(_settle, job.future, result, None)

    async def create_agent(self, session_id: str, agent_id: str, name: str | None) -> None:
        """Store an agent (ignored if known)."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO agents (session_id, id, name, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (session_id, agent_id, name, time.time()),
            )

        await self._write(run)

    async def add_developer_error(self, project_id: str, session_id: str | None, data: str) -> None:
        """Store an SDK error report."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO developer_errors (project_id, session_id, data, created_at)"
                " VALUES (?, ?, ?, ?)",
                (project_id, session_id, data, time.time()),
            )

        await self._write(run)

    async def add_session_log(self, session_id: str, body: str) -> None:
        """Store a log upload of a session."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO session_logs (session_id, body, created_at) VALUES (?, ?, ?)",
                (session_id, body, time.time()),
            )

        await self._write(run)

    async def session_logs(self, session_id: str) -> list[tuple[str, float]]:
        """``(body, created_at)`` of a session's log uploads, oldest first."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = conn.execute(
                "SELECT body, created_at FROM session_logs WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
            return [(str(b), float(t)) for b, t in rows]

        return await self._read(run)

    async def project_name(self, project_id: str) -> str | None:
        """The name of a project, or None."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT name FROM projects WHERE id = ?", (project_id,)).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def session_agents(self, session_id: str) -> list[tuple[str, str | None]]:
        """``(agent id, name)`` of a session's agents, in id order."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
            rows = conn.execute(
                "SELECT id, name FROM agents WHERE session_id = ? ORDER BY id", (session_id,)
            ).fetchall()
            return [(str(i), None if n is None else str(n)) for i, n in rows]

        return await self._read(run)

    async def put_object(
        self, object_id: str, project_id: str, content_type: str, data: bytes
    ) -> None:
        """Store an uploaded object."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO objects (id, project_id, content_type, data, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (object_id, project_id, content_type, data, time.time()),
            )

        await self._write(run)

    async def get_object(self, object_id: str) -> tuple[str, bytes] | None:
        """``(content_type, data)`` of an uploaded object, or None."""

        def run(conn: sqlite3.Connection) -> tuple[str, bytes] | None:
            row = conn.execute(
                "SELECT content_type, data FROM objects WHERE id = ?", (object_id,)
            ).fetchone()
            return None if row is None else (str(row[0]), bytes(row[1]))

        return await self._read(run)

    async def session_of_trace(self, trace_id: str) -> str | None:
        """The session that names a trace id (the first stored), or None."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT id FROM sessions WHERE trace_id = ? ORDER BY seq LIMIT 1", (trace_id,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def list_sessions(self, flt: SessionFilter) -> list[SessionRow]:
        """A page of sessions, newest first."""
        sql, args = session_page_sql(flt, _SESSION_COLUMNS, lambda _: "?")

        def run(conn: sqlite3.Connection) -> list[SessionRow]:
            return [_session_row(r) for r in conn.execute(sql, args).fetchall()]

        return await self._read(run)

    async def get_session(self, session_id: str) -> SessionRow | None:
        """One session."""

        def run(conn: sqlite3.Connection) -> SessionRow | None:
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            return None if row is None else _session_row(row)

        return await self._read(run)

    async def get_sessions(self, session_ids: Sequence[str]) -> list[SessionRow]:
        """Some sessions, in one query (see :class:`Storage`)."""
        if not session_ids:
            return []

        def run(conn: sqlite3.Connection) -> list[SessionRow]:
            sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id IN ({_id_list(session_ids)})"
            return [_session_row(r) for r in conn.execute(sql, tuple(session_ids)).fetchall()]

        return await self._read(run)

    async def event_counts(self, session_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Counts by type per session."""
        if not session_ids:
            return {}

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for sid, event_type, n in conn.execute(
                "SELECT session_id, event_type, events FROM session_event_counts"
                f" WHERE session_id IN ({_id_list(session_ids)})",
                tuple(session_ids),
            ):
                counts.setdefault(sid, {})[event_type] = n
            return counts

        return await self._read(run)

    async def llm_usage(self, session_ids: Sequence[str]) -> list[Usage]:
        """Token sums per session and model, and the tools' costs per session."""
        if not session_ids:
            return []

        def run(conn: sqlite3.Connection) -> list[Usage]:
            # From the rollups, never the events (a 100,000-event session is a few rows).
            sql, args = _usage_of(session_ids)
            return [usage_row(*row) for row in conn.execute(sql, args).fetchall()]

        return await self._read(run)

    async def list_events(
        self, session_id: str, after_id: str | None, limit: int, event_type: str | None
    ) -> list[tuple[str, str]]:
        """A page of a session's events in arrival order."""
        sql = "SELECT id, data FROM events WHERE session_id = ?"
        args: list[object] = [session_id]
        if after_id is not None:
            sql += " AND seq > (SELECT seq FROM events WHERE session_id = ? AND id = ?)"
            args += [session_id, after_id]
        if event_type is not None:
            sql += " AND event_type = ?"
            args.append(event_type)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)

        def run(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return [(str(i), str(d)) for i, d in conn.execute(sql, args).fetchall()]

        return await self._read(run)

    async def overview(self, project_id: str, since: float, until: float) -> OverviewData:
        """The aggregates of the sessions that started in ``[since, until)``, in one read
        transaction (a consistent snapshot)."""
        args = (project_id, since, until)

        def run(conn: sqlite3.Connection) -> OverviewData:
            conn.execute("BEGIN")
            try:
                states = conn.execute(_OVERVIEW_STATES, args).fetchall()
                llm = conn.execute(_OVERVIEW_LLM, args).fetchall()
                tool_costs = conn.execute(_OVERVIEW_TOOL_COSTS, args).fetchall()
                tools = conn.execute(_OVERVIEW_TOOLS, args).fetchall()
            finally:
                conn.execute("COMMIT")
            return OverviewData(
                states=states,
                llm_usage=[
                    (r[0], r[1], bool(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6]) for r in llm
                ],
                tool_costs=tool_costs,
                tools=tools,
            )

        return await self._read(run)

    async def costliest_sessions(
        self,
        project_id: str,
        since: float,
        until: float,
        model_prices: Sequence[tuple[str, float, float]],
        limit: int,
    ) -> list[Usage]:
        """The usage rows of the sessions of the range that cost most (see :class:`Storage`)."""
        prices = json.dumps([list(p) for p in model_prices])

        def run(conn: sqlite3.Connection) -> list[Usage]:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(_COSTLIEST, (project_id, since, until, prices, limit))
                ids = [str(r[0]) for r in rows.fetchall()]
                if not ids:
                    return []
                sql, args = _usage_of(ids)
                return [usage_row(*r) for r in conn.execute(sql, args).fetchall()]
            finally:
                conn.execute("COMMIT")

        return await self._read(run)

    async def prune_sessions(self, cutoff: float, limit: int) -> PruneResult:
        """Delete up to ``limit`` old sessions with their rows (see :class:`Storage`)."""

        def pick(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(_OLD_SESSIONS, (cutoff, limit)).fetchall()
            return [str(r[0]) for r in rows]

        session_ids = await self._read(pick)
        events = 0
        if session_ids:
            # Events first, a bounded transaction at a time on the writer thread: batches that
            # arrive meanwhile are committed between two of them.
            while deleted := await self._write(functools.partial(_delete_events, session_ids)):
                events += deleted
        events += await self._write(functools.partial(_delete_sessions, session_ids, cutoff))
        return PruneResult(len(session_ids), events)

    async def reclaim_space(self) -> None:
        """Give freed pages back to the file system, a bounded step at a time.

        Only a database made with ``auto_vacuum = INCREMENTAL`` (every file made by this version)
        can; an older one keeps its free pages for new rows until ``prune --vacuum`` runs once.
        """
        if self.path == ":memory:":
            return
        mode = await self._read(lambda conn: int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]))
        if mode != _AUTO_VACUUM_INCREMENTAL:
            log.info(
                "sqlite: %s was created without auto_vacuum: freed pages are reused but the file"
                " does not shrink; run `agentops-async prune --vacuum` once to switch it",
                self.path,
            )
            return
        while await self._write(_incremental_vacuum_step):
            pass

    async def vacuum(self) -> None:
        """Rebuild the file (``VACUUM``), switching it to incremental auto_vacuum: a one-time
        step for databases made by older versions. It writes a full copy and holds the write lock
        throughout: run it while no collector writes to the file."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")

        await self._write(run)


# The overview's queries: the sessions of a project that started in a range, through
# sessions_by_project_start, and their rows in the usage tables, through those tables' keys.
_OVERVIEW_SESSIONS = "sessions WHERE project_id = ?1 AND init_ts >= ?2 AND init_ts < ?3"
_DAY = "CAST(init_ts / 86400 AS INTEGER)"  # init_ts >= 0 in a range (the caller clamps)
_OVERVIEW_STATES = f"SELECT {_DAY} AS day, state, count(*) FROM {_OVERVIEW_SESSIONS} GROUP BY 1, 2"
# total(), not sum(): a sum of integers raises on int64 overflow.
_OVERVIEW_LLM = (
    f"SELECT {_DAY} AS day, u.model, u.has_cost, total(u.calls), total(u.prompt_tokens),"
    " total(u.completion_tokens), sum(u.cost)"
    f" FROM (SELECT id, init_ts FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_llm_usage u ON u.session_id = s.id GROUP BY 1, 2, 3"
)
_OVERVIEW_TOOL_COSTS = (
    f"SELECT {_DAY} AS day, sum(u.cost) FROM (SELECT id, init_ts FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_tool_usage u ON u.session_id = s.id WHERE u.cost IS NOT NULL GROUP BY 1"
)
_OVERVIEW_TOOLS = (
    "SELECT u.name, sum(u.calls), sum(u.timed_calls), total(u.total_seconds), max(u.max_seconds)"
    f" FROM (SELECT id FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_tool_usage u ON u.session_id = s.id GROUP BY u.name"
)
# The sessions that cost most, priced with ?4 (JSON: [[model, prompt $/token, completion $/token]]).
_COSTLIEST = (
    "WITH p AS (SELECT json_extract(value, '$[0]') AS model, json_extract(value, '$[1]') AS pp,"
    " json_extract(value, '$[2]') AS cp FROM json_each(?4)),"
    f" s AS (SELECT id FROM {_OVERVIEW_SESSIONS}),"
    " c AS (SELECT s.id AS id, CASE WHEN u.has_cost THEN u.cost"
    " ELSE u.prompt_tokens * coalesce(p.pp, 0) + u.completion_tokens * coalesce(p.cp, 0) END"
    " AS cost FROM s JOIN session_llm_usage u ON u.session_id = s.id"
    " LEFT JOIN p ON p.model = u.model"
    " UNION ALL SELECT s.id, u.cost FROM s JOIN session_tool_usage u ON u.session_id = s.id"
    " WHERE u.cost IS NOT NULL)"
    " SELECT id FROM c GROUP BY id HAVING total(cost) > 0 ORDER BY total(cost) DESC, id LIMIT ?5"
)


def _usage_of(session_ids: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The usage rows of some sessions from the rollups, as :meth:`SqliteStorage.llm_usage`
    gives them from the events."""
    marks = _id_list(session_ids)
    sql = (
        "SELECT session_id, nullif(model, ''), prompt_tokens, completion_tokens, cost"
        f" FROM session_llm_usage WHERE session_id IN ({marks})"
        " UNION ALL SELECT session_id, NULL, 0, 0, sum(cost) FROM session_tool_usage"
        f" WHERE session_id IN ({marks}) AND cost IS NOT NULL GROUP BY session_id"
    )
    return sql, (*session_ids, *session_ids)


# A session's age: when it ended; if it never did, when it started (or was first stored).
_OLD_SESSIONS = (
    "SELECT id FROM sessions WHERE coalesce(end_ts, init_ts, created_at) < ? ORDER BY seq LIMIT ?"
)
# The tables with rows of a session, besides its events (deleted with it by a prune).
_SESSION_TABLES = (
    "session_tags",
    "agents",
    "developer_errors",
    "session_logs",
    "session_llm_usage",
    "session_tool_usage",
    "session_event_counts",
)
_AUTO_VACUUM_INCREMENTAL = 2
_VACUUM_PAGES_PER_STEP = 2048  # 32 MiB of 16 KiB pages per write transaction


def _id_list(session_ids: Sequence[str]) -> str:
    return ",".join("?" * len(session_ids))


def _delete_events(session_ids: Sequence[str], conn: sqlite3.Connection) -> int:
    """Delete at most EVENTS_PER_DELETE events of these sessions; how many were deleted."""
    with _transaction(conn):
        cur = conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events"
            f" WHERE session_id IN ({_id_list(session_ids)}) LIMIT ?)",
            (*session_ids, EVENTS_PER_DELETE),
        )
    return max(cur.rowcount, 0)


def _delete_sessions(session_ids: Sequence[str], cutoff: float, conn: sqlite3.Connection) -> int:
    """The sessions and what is left of their rows, in one transaction; events deleted."""
    marks = _id_list(session_ids)
    events = 0
    with _transaction(conn):
        if session_ids:
            # Events that arrived since their deletion started go too.
            events = conn.execute(
                f"DELETE FROM events WHERE session_id IN ({marks})", session_ids
            ).rowcount
            for table in _SESSION_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE session_id IN ({marks})", session_ids)
            conn.execute(f"DELETE FROM sessions WHERE id IN ({marks})", session_ids)
        conn.execute(
            "DELETE FROM developer_errors WHERE seq IN (SELECT seq FROM developer_errors"
            " WHERE session_id IS NULL AND created_at < ? LIMIT ?)",
            (cutoff, EVENTS_PER_DELETE),
        )
    return max(events, 0)


def _incremental_vacuum_step(conn: sqlite3.Connection) -> bool:
    """Free some pages back to the file system; True while free pages are left."""
    conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_PAGES_PER_STEP})").fetchall()
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0]) > 0


class _Job(NamedTuple):
    """Sessions to upsert and events to insert, and the future of their owners and new-event
    count (a ``create_events`` batch has no sessions)."""

    writes: Sequence[SessionWrite]
    rows: Sequence[EventRow]
    future: asyncio.Future[tuple[list[str], int]]


def _store_jobs(conn: sqlite3.Connection, jobs: Sequence[_Job]) -> list[tuple[list[str], int]]:
    """Each job's sessions and events, and the rollups, in one transaction; per job its
    sessions' owners and how many events were new.

    A job with a session of another project stores nothing (its savepoint is rolled back
    before its events) and does not fail the others. The rows this transaction stores are
    exactly those with a seq above the largest before it (a new rowid is the largest plus one,
    and this connection is the only writer), so the rollups are summed from that range by
    statements at the end (see :func:`_add_rollups`): an id stored before, or given twice, was
    not inserted and is not counted.
    """
    results: list[tuple[list[str], int]] = []
    stored: list[Sequence[EventRow]] = []
    with _transaction(conn):
        before = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        for job in jobs:
            owners: list[str] = []
            if job.writes:
                conn.execute("SAVEPOINT job")
                owners = _upsert_sessions(conn, job.writes)
                refused = any(o != w.project_id for o, w in zip(owners, job.writes, strict=True))
                if refused:
                    conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                if refused:
                    results.append((owners, 0))
                    continue
            results.append((owners, _insert_events(conn, job.rows)))
            stored.append(job.rows)
        inserted = sum(count for _, count in results)
        if inserted:
            _add_rollups(conn, before, stored, inserted)
    return results


def _add_rollups(
    conn: sqlite3.Connection, before: int, batches: list[Sequence[EventRow]], inserted: int
) -> None:
    """Add this transaction's new events (seq above ``before``) to the rollups.

    The counts by type are summed from the rows given when all of them were inserted (the usual
    case), else read back from the new rows; the LLM and tool usage are read back only when
    some row given is of that type (no other row can change them).
    """
    types: collections.Counter[tuple[str, str]] = collections.Counter()
    for rows in batches:
        types.update((row[0], row[2]) for row in rows)
    if inserted == types.total():
        conn.executemany(_ADD_EVENT_COUNTS, [(*key, n) for key, n in types.items()])
    else:
        conn.execute(_COUNTS_OF_NEW_EVENTS, (before,))
    kinds = {event_type for _, event_type in types}
    if "llms" in kinds:
        conn.execute(_LLM_USAGE_OF_NEW_EVENTS, (before,))
    if "tools" in kinds:
        conn.execute(_TOOL_USAGE_OF_NEW_EVENTS, (before,))


def _insert_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> int:
    """Insert rows in order (runs of one width, so arrival order, seq, holds); how many were
    new."""
    inserted = 0
    for width, run in itertools.groupby(rows, len):
        values: Iterable[object] = itertools.chain.from_iterable(run)
        flat = list(values) if width == 4 else ["" if v is None else v for v in values]
        inserted += _insert_run(conn, width, flat)
    return inserted


def _insert_run(conn: sqlite3.Connection, width: int, values: list[object]) -> int:
    """Insert rows of ``width`` values each, given flat, with as few statements as fit; how many
    were new (each statement's own count: ``total_changes`` would count the rollups' too)."""
    start, left, inserted = 0, len(values) // width, 0
    while left:
        count = min(1 << (left.bit_length() - 1), _MAX_ROWS_PER_INSERT)
        end = start + count * width
        inserted += conn.execute(_INSERT_EVENTS[width, count], values[start:end]).rowcount
        start, left = end, left - count
    return inserted


def _settle(
    future: asyncio.Future[tuple[list[str], int]],
    result: tuple[list[str], int] | None,
    exc: BaseException | None,
) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)


def _checkpoint_passive(conn: sqlite3.Connection) -> int:
    """Checkpoint what no reader needs; returns the number of frames in the WAL."""
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[1])


def _checkpoint_truncate(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _upsert_session(conn: sqlite3.Connection, write: SessionWrite) -> str:
    """Insert the session, or update it when it exists in the same project; its owner."""
    row = conn.execute(
        "SELECT project_id FROM sessions WHERE id = ?", (write.session_id,)
    ).fetchone()
    if row is not None:
        if row[0] == write.project_id:
            _update_session(conn, write)
        return str(row[0])
    now = time.time()
    conn.execute(_INSERT_SESSION, (*write.insert_values(), now, now))
    _replace_tags(conn, write.session_id, write.tags or [])
    return write.project_id


_INSERT_SESSION = (
    "INSERT INTO sessions (id, project_id, trace_id, init_timestamp, init_ts,"
    " end_timestamp, end_ts, state, end_state, end_state_reason, tags, video,"
    " host_env, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_TAG = "INSERT INTO session_tags (session_id, tag) VALUES (?, ?) ON CONFLICT DO NOTHING"
_MAX_IDS_PER_SELECT = 500  # bound variables of one statement (SQLite allows 32766)


def _upsert_sessions(conn: sqlite3.Connection, writes: Sequence[SessionWrite]) -> list[str]:
    """:func:`_upsert_session` for many sessions, in the caller's transaction; their owners.

    The usual batch is all new sessions: one SELECT finds which exist, one executemany inserts
    the others and one their tags (a new session has none to delete). Sessions that exist are
    updated one by one (same project only), as are later writes of an id the batch repeats.
    """
    ids = [write.session_id for write in writes]
    owners: dict[str, str] = {}
    for start in range(0, len(ids), _MAX_IDS_PER_SELECT):
        chunk = ids[start : start + _MAX_IDS_PER_SELECT]
        owners.update(
            conn.execute(
                f"SELECT id, project_id FROM sessions WHERE id IN ({_id_list(chunk)})", chunk
            ).fetchall()
        )
    new: dict[str, SessionWrite] = {}
    later: list[SessionWrite] = []
    for write in writes:
        if write.session_id in owners or write.session_id in new:
            later.append(write)
        else:
            new[write.session_id] = write
    if new:
        now = time.time()
        conn.executemany(_INSERT_SESSION, [(*w.insert_values(), now, now) for w in new.values()])
        conn.executemany(
            _INSERT_TAG, [(sid, tag) for sid, w in new.items() for tag in w.tags or ()]
        )
        owners.update((sid, w.project_id) for sid, w in new.items())
    for write in later:
        if owners[write.session_id] == write.project_id:
            _update_session(conn, write)
    return [owners[session_id] for session_id in ids]


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:  # SQLite may have rolled back itself (disk full, I/O)
            self._conn.execute("ROLLBACK")


def _replace_tags(conn: sqlite3.Connection, session_id: str, tags: list[str]) -> None:
    conn.execute("DELETE FROM session_tags WHERE session_id = ?", (session_id,))
    conn.executemany(_INSERT_TAG, [(session_id, tag) for tag in tags])


_UPDATABLE = (*UPDATABLE_SESSION_FIELDS, "host_env")


def _update_session(conn: sqlite3.Connection, write: SessionWrite) -> bool:
    sets = ["updated_at = ?"]
    args: list[object] = [time.time()]
    for name in _UPDATABLE:
        value = getattr(write, name)
        if value is not None:
            sets.append(f"{name} = ?")
            args.append(value)
    if write.tags is not None:
        sets.append("tags = ?")
        args.append(json.dumps(write.tags))
    args += [write.session_id, write.project_id]
    cur = conn.execute(
        f"UPDATE sessions SET {', '.join(sets)} WHERE id = ? AND project_id = ?", args
    )
    if cur.rowcount == 0:
        return False
    if write.tags is not None:
        _replace_tags(conn, write.session_id, write.tags)
    return True
