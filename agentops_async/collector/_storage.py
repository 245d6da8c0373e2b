"""The storage interface of the collector and the records that cross it.

Two backends implement :class:`Storage`: SQLite (a file, the default) and PostgreSQL (asyncpg).
Everything above this seam (HTTP handlers, read API, CLI) is backend-agnostic.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from ._prices import Usage

__all__ = [
    "EventBatch",
    "EventRow",
    "OverviewData",
    "ProjectKeys",
    "PruneResult",
    "SessionFilter",
    "SessionRow",
    "SessionWrite",
    "Storage",
    "StorageUnavailable",
    "open_storage",
    "prune",
]

STATE_RUNNING = "RUNNING"
SQLITE_BUSY_TIMEOUT_ENV = "AGENTOPS_COLLECTOR_SQLITE_BUSY_TIMEOUT"
PG_POOL_SIZE_ENV = "AGENTOPS_COLLECTOR_PG_POOL_SIZE"
DEFAULT_PG_POOL_SIZE = 10
MAX_PG_POOL_SIZE = 1000


def pool_size_setting(value: object, source: str) -> int:
    """``value`` (an int, or its text from the command line or the environment) as a PostgreSQL
    pool size, or a ValueError naming ``source`` and what it accepts."""
    try:
        size = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PG_POOL_SIZE:
        raise ValueError(
            f"{source}: expected a number of connections from 1 to {MAX_PG_POOL_SIZE}, got "
            f"{value!r} (each collector opens up to this many; PostgreSQL's max_connections must "
            "cover all collectors)"
        )
    return size


class StorageUnavailable(Exception):
    """The database cannot serve requests for a while; the same request will succeed later.

    Each backend raises it, from its driver's error, for the failures that pass (the database
    restarting or unreachable, a lock held past the busy timeout, a full disk, an I/O error) and
    for nothing else; the HTTP layer answers it with 503 and ``Retry-After``, which clients retry.

    Attributes:
        reason: What happened, short and free of secrets (for the answer and the log).
        retry_after: Seconds after which a retry makes sense.
    """

    def __init__(self, reason: str, retry_after: int = 2) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


# A session id as the collector stores it: a UUID in the form canonical_uuid gives (lowercase,
# hyphenated), which is also how PostgreSQL's uuid type prints one.
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

EventRow = (
    tuple[
        str,  # session_id: a canonical UUID (CANONICAL_UUID)
        str,  # id
        str,  # event_type
        str | msgspec.Raw,  # data: the event's JSON as the client sent it
    ]
    | tuple[
        str,
        str,
        str,
        str | None,  # init_timestamp: a tool call's (EventType.TOOL)
        str | None,  # end_timestamp
        str | msgspec.Raw,  # data
    ]
    | tuple[
        str,
        str,
        str,
        str | None,
        str | None,
        str | msgspec.Raw,
        str | None,  # model
        int | None,  # prompt_tokens
        int | None,  # completion_tokens
        float | None,  # cost
    ]
)
"""One event as stored: the columns a query reads (its session's id in canonical form, which
PostgreSQL keeps as a ``uuid``; its id and type; a tool call's timestamps; LLM usage), and the
JSON, which holds everything as the client sent it. A plain tuple: building it is the only
per-event work of the ingest path, so it must be cheap, and it carries no column that is NULL
for the whole batch: most events have neither usage nor a tool's time, so their rows are
4-tuples (PostgreSQL's ``COPY`` sends four columns; SQLite binds four values, where binding a
None costs more than the rest of the row), a batch with some tool call has 6-tuples, one with
some usage 10-tuples (:data:`ROW_COLUMNS`, :data:`DATA_INDEX`).

Other events' timestamps are not columns (NULL): no read looks at them, and the two strings
were an eighth of a row's bytes, stored, logged and sent to PostgreSQL for nothing
(benchmarks/README.md, round 14)."""

_ALL_COLUMNS = (
    "session_id",
    "id",
    "event_type",
    "init_timestamp",
    "end_timestamp",
    "data",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)
ROW_COLUMNS: dict[int, tuple[str, ...]] = {
    4: (*_ALL_COLUMNS[:3], "data"),
    6: _ALL_COLUMNS[:6],
    10: _ALL_COLUMNS,
}
"""The ``events`` columns of an :data:`EventRow` of each width, in its order."""

DATA_INDEX = {width: columns.index("data") for width, columns in ROW_COLUMNS.items()}
"""Where an :data:`EventRow` of each width holds its JSON."""


def widened(row: EventRow, width: int) -> EventRow:
    """``row`` with the columns of ``width`` (NULL where it had none)."""
    if len(row) >= width:
        return row
    if len(row) == 4:
        row = (row[0], row[1], row[2], None, None, row[3])
    return row if width == 6 else (*row, None, None, None, None)


class EventBatch(list[EventRow]):
    """The rows of one request, as the collector's decoder made them, with what it learned about
    them as a whole, so that a backend need not look at each row again.

    Every row's JSON is ``str`` and every row has ``width`` columns (4, 6 or 10: the widest
    any event of the batch needs, see :data:`EventRow`); ``nul``: some string of the batch may
    hold NUL (U+0000), which PostgreSQL's ``text`` cannot (False only when the request body held
    no ``\\u0000`` escape, so that none of its strings can). A plain sequence of rows is looked
    at row by row.
    """

    __slots__ = ("nul", "width")

    def __init__(self, *, nul: bool = True) -> None:
        super().__init__()
        self.width = 4
        self.nul = nul


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """The fields of a create_session / update_session; None means "leave as it is"."""

    session_id: str
    project_id: str
    init_timestamp: str | None = None
    init_ts: float | None = None
    end_timestamp: str | None = None
    end_ts: float | None = None
    state: str | None = None
    end_state: str | None = None
    end_state_reason: str | None = None
    tags: list[str] | None = None
    video: str | None = None
    trace_id: str | None = None
    host_env: str | None = None

    def insert_values(self) -> tuple[object, ...]:
        """The values of a new sessions row, in the column order both backends insert:
        id, project_id, trace_id, init_timestamp, init_ts, end_timestamp, end_ts, state,
        end_state, end_state_reason, tags (JSON text), video, host_env."""
        return (
            self.session_id,
            self.project_id,
            self.trace_id,
            self.init_timestamp,
            self.init_ts,
            self.end_timestamp,
            self.end_ts,
            self.state or "RUNNING",
            self.end_state,
            self.end_state_reason,
            json.dumps(self.tags or []),
            self.video,
            self.host_env,
        )


def newer_schema(current: int, known: int) -> RuntimeError:
    """The error of a collector that finds its database migrated by a newer one: its statements
    may no longer fit the schema (a column of another type refuses its binary COPY), so it does
    not start."""
    return RuntimeError(
        f"the database's schema is version {current}, newer than this collector's ({known}):"
        " run the agentops-async version that migrated it, or a newer one"
    )


# Scalar columns of a session that an update overwrites when the write carries them (host_env and
# tags are handled by each backend: JSON and a side table).
UPDATABLE_SESSION_FIELDS = (
    "init_timestamp",
    "init_ts",
    "end_timestamp",
    "end_ts",
    "state",
    "end_state",
    "end_state_reason",
    "video",
    "trace_id",
)


@dataclass(frozen=True, slots=True)
class ProjectKeys:
    """A project and how many of its API keys are live and revoked."""

    id: str
    name: str
    live_keys: int
    revoked_keys: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A stored session."""

    seq: int
    id: str
    project_id: str
    trace_id: str | None
    init_timestamp: str | None
    init_ts: float | None
    end_timestamp: str | None
    end_ts: float | None
    state: str
    end_state: str | None
    end_state_reason: str | None
    tags: list[str]
    video: str | None
    host_env: str | None


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Filters of a session listing; ``before_id`` is where the page starts (newest first).

    ``before_id`` is the id of the last session of the previous page: the page lists the sessions
    stored before it. A position within the project's own data, so a cursor made from it says
    nothing about other projects.
    """

    project_id: str | None
    tag: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None
    before_id: str | None = None
    limit: int = 50


def session_page_sql(
    flt: SessionFilter, columns: str, placeholder: Callable[[int], str]
) -> tuple[str, list[object]]:
    """The query of a page of sessions (newest first) and its arguments, for one SQL dialect.

    ``placeholder(n)`` writes the n-th argument's marker (``?`` for SQLite, ``$n`` for asyncpg).
    """
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return placeholder(len(args))

    where: list[str] = []
    if flt.project_id is not None:
        where.append(f"project_id = {arg(flt.project_id)}")
    if flt.tag is not None:
        where.append(f"id IN (SELECT session_id FROM session_tags WHERE tag = {arg(flt.tag)})")
    if flt.state is not None:
        where.append(f"state = {arg(flt.state)}")
    if flt.since is not None:
        where.append(f"init_ts >= {arg(flt.since)}")
    if flt.until is not None:
        where.append(f"init_ts < {arg(flt.until)}")
    if flt.before_id is not None:
        where.append(f"seq < (SELECT seq FROM sessions WHERE id = {arg(flt.before_id)})")
    sql = f"SELECT {columns} FROM sessions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY seq DESC LIMIT {arg(flt.limit)}"
    return sql, args


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune deleted: whole sessions and, among their rows, how many events."""

    sessions: int = 0
    events: int = 0

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(self.sessions + other.sessions, self.events + other.events)


SECONDS_PER_DAY = 86_400


class OverviewData(msgspec.Struct, frozen=True, kw_only=True):
    """The aggregates of a project's sessions that started in a time range, unpriced.

    What :meth:`SessionReader.overview` answers; the read model prices it
    (:mod:`agentops_async.collector._overview`). A session belongs to the UTC day in which it
    started (its ``init_ts``); ``day`` is that day's number since 1970-01-01. Everything comes
    from the sessions table and the per-session usage tables that ingest keeps
    (``session_llm_usage`` and ``session_tool_usage``), never from a scan of the events.
    """

    states: list[tuple[int, str, int]]
    """``(day, state, sessions)``."""
    llm_usage: list[tuple[int, str, bool, int, int, int, float | None]]
    """Per day and model: ``(day, model ('' for none), has_cost, calls, prompt_tokens,
    completion_tokens, cost)``. ``has_cost`` rows sum the ``cost`` the events carried (their
    tokens are not priced again); the others have ``cost`` None."""
    tool_costs: list[tuple[int, float]]
    """``(day, cost)``: the summed ``cost`` of the day's tools events, where any."""
    tools: list[tuple[str, int, int, float, float | None]]
    """Per tool name (``''`` for none): ``(name, calls, timed_calls, total_seconds,
    max_seconds)``; ``timed_calls`` are the calls with both timestamps, ``end >= init``."""


def overview_day(ts: float) -> int:
    """The UTC day number (days since 1970-01-01) of a Unix time."""
    return int(ts // SECONDS_PER_DAY)


DEFAULT_PRUNE_CHUNK = 500
"""Sessions deleted per round of :func:`prune` (their last rows go in one transaction)."""

EVENTS_PER_DELETE = 5_000
"""Events deleted per transaction by a prune: short transactions, so ingest goes on between."""


class SessionReader(Protocol):
    """The read side of :class:`Storage`.

    What the read API, the CLI and the dashboard use: sessions of a project, their events,
    counts and LLM usage. Every :class:`Storage` is one.
    """

    async def list_sessions(self, flt: SessionFilter) -> list[SessionRow]:
        """Sessions matching ``flt``, newest first, at most ``flt.limit``."""

    async def get_session(self, session_id: str) -> SessionRow | None:
        """One session by id (callers check its project)."""

    async def get_sessions(self, session_ids: Sequence[str]) -> list[SessionRow]:
        """The sessions of these ids that exist, in one query, in no particular order
        (callers check their project)."""

    async def event_counts(self, session_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{session_id: {event_type: count}}``."""

    async def llm_usage(self, session_ids: Sequence[str]) -> list[Usage]:
        """LLM token usage per session and model, and the tools' costs (for the session's cost).

        The costs of a session's ``tools`` events (their ``cost`` column) come as one more row
        with no model, no tokens and ``explicit_cost`` = their sum.
        """

    async def list_events(
        self, session_id: str, after_id: str | None, limit: int, event_type: str | None
    ) -> list[tuple[str, str]]:
        """``(id, event JSON)`` of a session's events in arrival order.

        The page starts after the event ``after_id`` of the same session (the last one of the
        previous page), or at the first event when it is None.
        """

    async def session_logs(self, session_id: str) -> list[tuple[str, float]]:
        """``(body, created_at)`` of a session's log uploads (``/v4/logs/upload/``), oldest
        first."""

    async def get_object(self, object_id: str) -> tuple[str, bytes] | None:
        """``(content_type, data)`` of an uploaded object (``/v4/objects/upload/``), or None."""

    async def session_of_trace(self, trace_id: str) -> str | None:
        """The session that names ``trace_id`` (32 hex), in any project, or None."""

    async def overview(self, project_id: str, since: float, until: float) -> OverviewData:
        """The aggregates of ``project_id``'s sessions that started in ``[since, until)``
        (Unix seconds; see :class:`OverviewData`)."""

    async def costliest_sessions(
        self,
        project_id: str,
        since: float,
        until: float,
        model_prices: Sequence[tuple[str, float, float]],
        limit: int,
    ) -> list[Usage]:
        """The usage rows (as :meth:`llm_usage` gives them) of the ``limit`` sessions of the
        overview's range that cost most, ranked in the database by ``model_prices``
        (``(model, dollars per prompt token, per completion token)``, floats: the caller prices
        the rows exactly)."""

    async def project_name(self, project_id: str) -> str | None:
        """The name of a project, or None when there is no such project."""

    async def session_agents(self, session_id: str) -> list[tuple[str, str | None]]:
        """``(agent id, name)`` of a session's agents (``create_agent``), in id order."""


class Storage(SessionReader, Protocol):
    """What the collector needs from a database: the read side, and the writes. All methods are
    safe to call concurrently."""

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def get_secret(self, candidate: bytes) -> bytes:
        """The JWT secret: stored on first call (``candidate``), the stored one afterwards."""

    async def create_project(self, project_id: str, name: str, key_hash: str) -> None:
        """Store a new project with one API key (only its hash is stored)."""

    async def project_for_key(self, key_hash: str) -> str | None:
        """The project id of a live (not revoked) API key hash, or None."""

    async def add_key(self, project_id: str, key_hash: str) -> bool:
        """Give an existing project one more API key; False when there is no such project."""

    async def revoke_key(self, key_hash: str) -> str | None:
        """Revoke an API key: its project id, or None when no live key has this hash."""

    async def list_projects(self) -> list[ProjectKeys]:
        """Every project with its live and revoked key counts, oldest first."""

    async def upsert_session(self, write: SessionWrite) -> str:
        """Create the session, or update it if it exists in the same project.

        Returns:
            The id of the project that owns the session (another project's id means nothing was
            written).
        """

    async def upsert_sessions(
        self, writes: Sequence[SessionWrite], rows: Sequence[EventRow] = ()
    ) -> tuple[list[str], int]:
        """:meth:`upsert_session` for many sessions and :meth:`insert_events` for ``rows``, in
        one transaction; nothing is written when some session belongs to another project than
        its write's.

        Returns:
            The owning project of each session, in order, and how many events were new.
        """

    async def update_session(self, write: SessionWrite) -> bool:
        """Update an existing session of ``write.project_id``; False if there is none."""

    async def session_project(self, session_id: str) -> str | None:
        """The project that owns a session, or None."""

    async def sessions_for_traces(
        self, project_id: str, trace_ids: Sequence[str]
    ) -> dict[str, str]:
        """``{trace_id: session_id}`` for the given trace ids of a project's sessions."""

    async def insert_events(self, rows: Sequence[EventRow]) -> int:
        """Store events in one statement, skipping ids already stored; returns how many were new."""

    async def create_agent(self, session_id: str, agent_id: str, name: str | None) -> None:
        """Record an agent of a session (idempotent)."""

    async def add_developer_error(self, project_id: str, session_id: str | None, data: str) -> None:
        """Keep an SDK error report."""

    async def add_session_log(self, session_id: str, body: str) -> None:
        """Keep a log upload of a session (deleted with the session by a prune)."""

    async def put_object(
        self, object_id: str, project_id: str, content_type: str, data: bytes
    ) -> None:
        """Keep an uploaded object under a new, unguessable ``object_id``."""

    async def prune_sessions(self, cutoff: float, limit: int) -> PruneResult:
        """Delete at most ``limit`` sessions older than ``cutoff`` (Unix time) with all their rows.

        A session is older than the cutoff when it ended before it; one that never ended (still
        running, or its client went away) when it started before it (its ``init_timestamp``, or
        when the collector first stored it if the client sent none). Its events, tags, agents,
        log uploads and developer error reports go with it; so do developer error reports of no
        session stored before the cutoff. Events are deleted in transactions of at most
        :data:`EVENTS_PER_DELETE` rows, so ingest is never held up for long.
        """

    async def reclaim_space(self) -> None:
        """Let the database give back the space that deletions freed (after a prune)."""


async def prune(
    storage: Storage,
    older_than: float,
    *,
    chunk: int = DEFAULT_PRUNE_CHUNK,
    now: float | None = None,
) -> PruneResult:
    """Delete every session older than ``older_than`` seconds, ``chunk`` sessions at a time.

    Each round is a few short transactions (see :meth:`Storage.prune_sessions`); requests are
    served between them. When something was deleted, the storage reclaims the space.

    Args:
        storage: An open storage.
        older_than: Age in seconds (30 days: ``30 * 86400``).
        chunk: Sessions per round.
        now: The current Unix time (default: ``time.time()``).

    Returns:
        How many sessions and events were deleted.
    """
    if older_than < 0 or chunk < 1:
        raise ValueError("prune: older_than must be >= 0 seconds and chunk >= 1 session")
    cutoff = (time.time() if now is None else now) - older_than
    total = PruneResult()
    while True:
        deleted = await storage.prune_sessions(cutoff, chunk)
        total += deleted
        if deleted.sessions < chunk:
            break
    if total.sessions:
        await storage.reclaim_space()
    return total


def is_postgres_dsn(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL server rather than a SQLite file."""
    return database.startswith(("postgresql://", "postgres://"))


def checked_pool_size(database: str, pool_size: int | None) -> int | None:
    """``pool_size`` checked (see :func:`pool_size_setting`), for a PostgreSQL ``database``
    only: SQLite has no pool, and a size given for it is a ValueError."""
    if pool_size is None:
        return None
    if not is_postgres_dsn(database):
        raise ValueError(
            "pool_size: only a PostgreSQL database has a connection pool (SQLite uses one "
            "writer and one reader connection); leave it unset"
        )
    return pool_size_setting(pool_size, "pool_size")


def open_storage(
    database: str, *, pool_size: int | None = None, pg_synchronous_commit: bool = True
) -> Storage:
    """The backend for ``database``: a ``postgresql://`` DSN, else a SQLite path.

    ``sqlite:///path`` and plain paths are SQLite files; ``:memory:`` is a private in-memory
    database. The returned storage is not open yet: ``await storage.open()``.

    ``pool_size`` is how many connections a PostgreSQL storage opens at most (on demand); None
    takes ``AGENTOPS_COLLECTOR_PG_POOL_SIZE``, else 10. SQLite has no pool: a ``pool_size`` with
    a SQLite database is a ValueError (the environment variable is ignored there).
    ``pg_synchronous_commit=False`` makes a PostgreSQL storage's commits asynchronous (see
    :class:`~agentops_async.collector._postgres.PostgresStorage`); SQLite ignores it.

    ``AGENTOPS_COLLECTOR_SQLITE_BUSY_TIMEOUT`` (seconds, default 10) sets how long a SQLite write
    waits for a lock that another process holds before the request is answered 503.

    Raises:
        ValueError: ``pool_size`` or an environment variable is out of range.
    """
    pool_size = checked_pool_size(database, pool_size)
    if is_postgres_dsn(database):
        from ._postgres import PostgresStorage

        if pool_size is None and os.environ.get(PG_POOL_SIZE_ENV, "").strip():
            pool_size = pool_size_setting(os.environ[PG_POOL_SIZE_ENV].strip(), PG_POOL_SIZE_ENV)
        return PostgresStorage(
            database,
            pool_size=pool_size or DEFAULT_PG_POOL_SIZE,
            synchronous_commit=pg_synchronous_commit,
        )
    from ._sqlite import SqliteStorage

    path = database.removeprefix("sqlite:///") if database.startswith("sqlite:///") else database
    busy_timeout = os.environ.get(SQLITE_BUSY_TIMEOUT_ENV, "").strip()
    if busy_timeout:
        try:
            seconds = float(busy_timeout)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= 3600:
            raise ValueError(f"{SQLITE_BUSY_TIMEOUT_ENV}: expected seconds in [0, 3600]")
        return SqliteStorage(path, busy_timeout=seconds)
    return SqliteStorage(path)
