"""PostgreSQL storage through an asyncpg pool.

JSON is stored as the client sent it (number formatting, key order, ``\u0000`` escapes, which
jsonb rejects): an event's in a ``text`` column (schema 8: the collector has parsed it already, so
the database does not parse it again), the rest in ``json`` columns, not ``jsonb``. PostgreSQL
``text`` cannot hold NUL characters, so in the indexed text columns (types, models, tags, names,
filters...) a NUL is stored as U+FFFD; the JSON keeps the original. Ids are keys, where that
replacement would make two ids one: the API refuses NUL in them on both backends.

Transient failures (the server restarting or unreachable, a full disk...) are classified in one
place, :func:`unavailable`, and raised as ``StorageUnavailable`` by every public method.

Several stateless collectors may share one database: migrations take an advisory lock, the JWT
secret is inserted once and read back, and every write is a single statement or transaction.

A batch of events is copied (binary ``COPY``) straight into the events table: the database's
fastest way in. When the unique key (session, event id) refuses it (a retried batch, an id twice
in one batch, concurrent batches sharing ids), nothing of it stays and it takes the second path:
copied into a temporary staging table of the connection, then moved with one ``INSERT ... SELECT
... ON CONFLICT DO NOTHING``, so each id is stored once. The text the client sent is what is
stored, byte for byte, on either path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import msgspec

from ._prices import Usage, usage_row
from ._storage import (
    CANONICAL_UUID,
    DATA_INDEX,
    DEFAULT_PG_POOL_SIZE,
    EVENTS_PER_DELETE,
    ROW_COLUMNS,
    UPDATABLE_SESSION_FIELDS,
    EventBatch,
    EventRow,
    OverviewData,
    ProjectKeys,
    PruneResult,
    SessionFilter,
    SessionRow,
    SessionWrite,
    StorageUnavailable,
    newer_schema,
    pool_size_setting,
    session_page_sql,
    widened,
)

__all__ = ["PostgresStorage"]

log = logging.getLogger("agentops_async")

P = ParamSpec("P")
T = TypeVar("T")

# SQLSTATE classes of failures that pass: connection exceptions (08), insufficient resources such
# as a full disk or too many connections (53), operator intervention: shutting down, starting up,
# admin shutdown (57), system and I/O errors (58), serialization failures and deadlocks (40).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_CONNECT_TIMEOUT = 5.0


def unavailable(exc: BaseException) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` that ``exc`` means, or None if it is not transient.

    The one place where PostgreSQL and asyncpg errors are classified; every public method of
    :class:`PostgresStorage` raises what this returns (see :func:`_translated`).
    """
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate == "55P03":  # 55P03: lock timeout
            return StorageUnavailable(f"postgres: {type(exc).__name__} ({sqlstate})")
        return None
    if (
        isinstance(exc, asyncpg.InterfaceError)
        and "connection" in str(exc)
        and "closed" in str(exc)
    ):
        return StorageUnavailable("postgres: the connection was closed")
    if isinstance(exc, (OSError, asyncio.TimeoutError)):  # refused, reset, unreachable, timeout
        return StorageUnavailable(f"postgres: cannot connect ({type(exc).__name__})")
    return None


def _translated(
    method: Callable[Concatenate[PostgresStorage, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[PostgresStorage, P], Coroutine[Any, Any, T]]:
    """``method`` raising :class:`StorageUnavailable` for the transient failures."""

    @functools.wraps(method)
    async def call(self: PostgresStorage, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            translated = unavailable(exc)
            if translated is None:
                raise
            raise translated from exc

    return call


_MIGRATION_LOCK = 0x4147454E544F5053  # "AGENTOPS": serialises migrations of concurrent collectors

_MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE projects (
        id text PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE api_keys (
        key_hash text PRIMARY KEY,
        project_id text NOT NULL REFERENCES projects(id),
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE sessions (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        project_id text NOT NULL REFERENCES projects(id),
        trace_id text,
        init_timestamp text,
        init_ts double precision,
        end_timestamp text,
        end_ts double precision,
        state text NOT NULL,
        end_state text,
        end_state_reason text,
        tags json NOT NULL DEFAULT '[]',
        video text,
        host_env json,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sessions_by_project ON sessions(project_id, seq);
    CREATE INDEX sessions_by_trace ON sessions(trace_id) WHERE trace_id IS NOT NULL;
    CREATE TABLE session_tags (
        session_id text NOT NULL, tag text NOT NULL, PRIMARY KEY (session_id, tag)
    );
    CREATE INDEX session_tags_by_tag ON session_tags(tag, session_id);
    CREATE TABLE events (
        seq bigserial PRIMARY KEY,
        session_id text NOT NULL,
        id text NOT NULL,
        event_type text NOT NULL,
        init_timestamp text,
        end_timestamp text,
        model text,
        prompt_tokens bigint,
        completion_tokens bigint,
        cost double precision,
        data json NOT NULL
    );
    CREATE UNIQUE INDEX events_by_session_id ON events(session_id, id);
    CREATE INDEX events_by_session ON events(session_id, seq);
    CREATE INDEX events_llm_by_session ON events(session_id) WHERE event_type = 'llms';
    CREATE TABLE agents (
        session_id text NOT NULL,
        id text NOT NULL,
        name text,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session_id, id)
    );
    CREATE TABLE developer_errors (
        seq bigserial PRIMARY KEY,
        project_id text NOT NULL,
        session_id text,
        data json NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: API keys can be revoked
    """
    ALTER TABLE api_keys ADD COLUMN revoked_at timestamptz
    """,
    # 3: log uploads of a session and uploaded objects (agentops 0.4's /v4 uploads)
    """
    CREATE TABLE session_logs (
        seq bigserial PRIMARY KEY,
        session_id text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX session_logs_by_session ON session_logs(session_id, seq);
    CREATE TABLE objects (
        id text PRIMARY KEY,
        project_id text NOT NULL,
        content_type text NOT NULL,
        data bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 4: the costs of a session's tools events (agentops 0.4's @tool(cost=...)), summed into its
    # cost through this partial index (only those rows are read, not the whole session)
    """
    CREATE INDEX events_tool_cost_by_session ON events(session_id, cost)
        WHERE event_type = 'tools' AND cost IS NOT NULL
    """,
    # 5: events keyed by (session, event id), the unique index that idempotent ingest needs
    # anyway; the index on seq alone goes (no read used it, and each index costs every insert).
    # seq stays unique, from its sequence, and orders a session's events (events_by_session).
    # A session's counts by type and its LLM usage are read from the indexes alone (index-only
    # scans): events_by_session carries event_type, events_llm_by_session the usage columns.
    # Autovacuum marks new pages all-visible after 1% more rows (not 20%), so that index-only
    # scans of recent sessions do not visit the table.
    """
    ALTER TABLE events DROP CONSTRAINT events_pkey;
    ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY USING INDEX events_by_session_id;
    DROP INDEX events_by_session;
    CREATE INDEX events_by_session ON events(session_id, seq) INCLUDE (event_type);
    DROP INDEX events_llm_by_session;
    CREATE INDEX events_llm_by_session ON events(session_id)
        INCLUDE (model, prompt_tokens, completion_tokens, cost) WHERE event_type = 'llms';
    ALTER TABLE events SET (autovacuum_vacuum_insert_scale_factor = 0.01);
    """,
    # 6: the overview's rollups. Per session, the LLM usage by model and the tools by name, kept
    # by a statement trigger from the rows each INSERT or COPY actually stored (its transition
    # table: a duplicate id skipped by ON CONFLICT is not in it, so a retried batch counts once),
    # and filled from the events stored before. Rows are upserted in key order, so two batches
    # of one session on two collectors wait for each other instead of deadlocking. The overview
    # reads these and the sessions (by project and start), never the events.
    """
    CREATE TABLE session_llm_usage (
        session_id text NOT NULL,
        model text NOT NULL,
        has_cost boolean NOT NULL,
        calls bigint NOT NULL,
        prompt_tokens numeric NOT NULL,
        completion_tokens numeric NOT NULL,
        cost double precision,
        PRIMARY KEY (session_id, model, has_cost)
    );
    CREATE TABLE session_tool_usage (
        session_id text NOT NULL,
        name text NOT NULL,
        calls bigint NOT NULL,
        timed_calls bigint NOT NULL,
        total_seconds double precision NOT NULL,
        max_seconds double precision,
        cost double precision,
        PRIMARY KEY (session_id, name)
    );
    CREATE INDEX sessions_by_project_start ON sessions(project_id, init_ts);

    -- The seconds between two timestamps as the client sent them; NULL unless both read as
    -- times and the end is not before the start (a rollup must never fail an ingest).
    CREATE FUNCTION agentops_span_seconds(start_text text, end_text text)
    RETURNS double precision LANGUAGE plpgsql STABLE AS $$
    DECLARE seconds double precision;
    BEGIN
        IF start_text IS NULL OR end_text IS NULL THEN
            RETURN NULL;
        END IF;
        seconds := extract(epoch FROM end_text::timestamptz - start_text::timestamptz);
        IF seconds >= 0 AND seconds < 'Infinity'::double precision THEN
            RETURN seconds;
        END IF;
        RETURN NULL;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END $$;

    -- A tool event's name (its JSON's "name"); a \\u0000 escape, which text cannot hold, as U+FFFD.
    CREATE FUNCTION agentops_tool_name(data json) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN coalesce(data->>'name', '');
    EXCEPTION WHEN others THEN
        BEGIN
            RETURN coalesce(replace(data::text, '\\u0000', '\\ufffd')::json->>'name', '');
        EXCEPTION WHEN others THEN
            RETURN '';
        END;
    END $$;

    CREATE FUNCTION agentops_events_usage() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO session_llm_usage AS u
        SELECT session_id, coalesce(model, ''), cost IS NOT NULL, count(*),
               coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), sum(cost)
        FROM inserted WHERE event_type = 'llms' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (session_id, model, has_cost) DO UPDATE SET
            calls = u.calls + excluded.calls,
            prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = u.completion_tokens + excluded.completion_tokens,
            cost = u.cost + excluded.cost;
        INSERT INTO session_tool_usage AS u
        SELECT session_id, name, count(*), count(seconds), coalesce(sum(seconds), 0),
               max(seconds), sum(cost)
        FROM (SELECT session_id, agentops_tool_name(data) AS name, cost,
                     agentops_span_seconds(init_timestamp, end_timestamp) AS seconds
              FROM inserted WHERE event_type = 'tools') t
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (session_id, name) DO UPDATE SET
            calls = u.calls + excluded.calls,
            timed_calls = u.timed_calls + excluded.timed_calls,
            total_seconds = u.total_seconds + excluded.total_seconds,
            max_seconds = greatest(u.max_seconds, excluded.max_seconds),
            cost = coalesce(u.cost + excluded.cost, u.cost, excluded.cost);
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_usage AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION agentops_events_usage();

    INSERT INTO session_llm_usage
    SELECT session_id, coalesce(model, ''), cost IS NOT NULL, count(*),
           coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), sum(cost)
    FROM events WHERE event_type = 'llms' GROUP BY 1, 2, 3;
    INSERT INTO session_tool_usage
    SELECT session_id, name, count(*), count(seconds), coalesce(sum(seconds), 0), max(seconds),
           sum(cost)
    FROM (SELECT session_id, agentops_tool_name(data) AS name, cost,
                 agentops_span_seconds(init_timestamp, end_timestamp) AS seconds
          FROM events WHERE event_type = 'tools') t
    GROUP BY 1, 2;
    """,
    # 7: the events of each session by type, kept like the usage rollups by a statement trigger
    # from the rows each INSERT or COPY stored (upserted in key order); the sessions list and the
    # session page read these, never the events.
    """
    CREATE TABLE session_event_counts (
        session_id text NOT NULL,
        event_type text NOT NULL,
        events bigint NOT NULL,
        PRIMARY KEY (session_id, event_type)
    );
    CREATE FUNCTION agentops_events_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO session_event_counts AS c
        SELECT session_id, event_type, count(*) FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (session_id, event_type) DO UPDATE SET events = c.events + excluded.events;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_counts AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION agentops_events_counts();
    INSERT INTO session_event_counts
    SELECT session_id, event_type, count(*) FROM events GROUP BY 1, 2;
    """,
    # 8: cheaper ingest. The JSON is stored as text: the collector validated it already, and the
    # json type only parsed it again on every insert (a read that needs a field casts it); the
    # text is the same, byte for byte. The ids of the key are compared byte by byte (collation
    # "C"): the two indexes of events compare them on every insert, and no read orders events
    # by them (equality is the same in any deterministic collation). This rewrites the events
    # table once (docs/deploy.md).
    # The two statement triggers become one that reads the rows a statement stored once for the
    # counts by type and again only for the LLM or tool usage a batch holds (most hold neither);
    # the rollups are upserted in the same order as before (counts, LLM usage, tools, each in
    # key order), so concurrent batches wait for each other instead of deadlocking. The partial
    # indexes of LLM and tool events go: every read of usage and costs reads the rollups now.
    """
    DROP TRIGGER events_usage ON events;
    DROP TRIGGER events_counts ON events;
    DROP FUNCTION agentops_events_usage();
    DROP FUNCTION agentops_events_counts();
    DROP FUNCTION agentops_tool_name(json);
    DROP INDEX events_llm_by_session;
    DROP INDEX events_tool_cost_by_session;
    ALTER TABLE events ALTER COLUMN data TYPE text,
        ALTER COLUMN session_id TYPE text COLLATE "C", ALTER COLUMN id TYPE text COLLATE "C";

    -- A tool event's name (its JSON's "name"); a \\u0000 escape, which text cannot hold, as U+FFFD.
    -- Without any \\u escape the name cannot fail to decode: no exception block is entered
    -- (each costs a subtransaction).
    CREATE FUNCTION agentops_tool_name(data text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        IF strpos(data, '\\u') = 0 THEN
            RETURN coalesce(data::json->>'name', '');
        END IF;
        BEGIN
            RETURN coalesce(data::json->>'name', '');
        EXCEPTION WHEN others THEN
            BEGIN
                RETURN coalesce(replace(data, '\\u0000', '\\ufffd')::json->>'name', '');
            EXCEPTION WHEN others THEN
                RETURN '';
            END;
        END;
    END $$;

    CREATE FUNCTION agentops_events_rollups() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        types text[];
    BEGIN
        WITH counted AS (
            INSERT INTO session_event_counts AS c
            SELECT session_id, event_type, count(*) FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (session_id, event_type) DO UPDATE SET events = c.events + excluded.events
            RETURNING c.event_type
        )
        SELECT array_agg(DISTINCT event_type) INTO types FROM counted;
        IF 'llms' = ANY(types) THEN
            INSERT INTO session_llm_usage AS u
            SELECT session_id, coalesce(model, ''), cost IS NOT NULL, count(*),
                   coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), sum(cost)
            FROM inserted WHERE event_type = 'llms' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (session_id, model, has_cost) DO UPDATE SET
                calls = u.calls + excluded.calls,
                prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
                completion_tokens = u.completion_tokens + excluded.completion_tokens,
                cost = u.cost + excluded.cost;
        END IF;
        IF 'tools' = ANY(types) THEN
            INSERT INTO session_tool_usage AS u
            SELECT session_id, name, count(*), count(seconds), coalesce(sum(seconds), 0),
                   max(seconds), sum(cost)
            FROM (SELECT session_id, agentops_tool_name(data) AS name, cost,
                         agentops_span_seconds(init_timestamp, end_timestamp) AS seconds
                  FROM inserted WHERE event_type = 'tools') t
            GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (session_id, name) DO UPDATE SET
                calls = u.calls + excluded.calls,
                timed_calls = u.timed_calls + excluded.timed_calls,
                total_seconds = u.total_seconds + excluded.total_seconds,
                max_seconds = greatest(u.max_seconds, excluded.max_seconds),
                cost = coalesce(u.cost + excluded.cost, u.cost, excluded.cost);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_rollups AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION agentops_events_rollups();
    """,
    # 9: events name their session by a uuid: 16 bytes compared as such, where the text of the
    # id took 37 and was compared as a string, in the heap and at the head of both indexes
    # (whose second column is then found at a fixed offset). The collector stores only
    # canonical session ids (lowercase, hyphenated), which is how uuid prints one: every read
    # and the other tables (text) see the same ids. A database holding another form fails this
    # migration with one of them named, rather than changing it. events_by_session loses its
    # event_type: no read scans it for that since the counts by type have their rollup
    # (version 7). This rewrites the events table once, like version 8 (docs/deploy.md).
    # And seq is drawn in blocks: a backend takes 1,000 numbers from the sequence at once
    # (CACHE) instead of locking and updating it for every row. A block must not outlive its
    # statement, or a batch stored after another (through another connection) could get
    # smaller numbers than it from a block drawn earlier, and a session's events would read
    # out of order: each INSERT or COPY first discards the backend's blocks (a statement
    # trigger: every collector version gets it), so a statement's numbers come from the
    # sequence as it stands when it starts, after every batch that committed before.
    # Together 12-17% less CPU per stored event for PostgreSQL (benchmarks/README.md).
    """
    DO $$
    DECLARE
        odd text;
    BEGIN
        SELECT session_id INTO odd FROM events
        WHERE session_id !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'events.session_id % is not a canonical UUID (lowercase, hyphenated),'
                ' which schema version 9 keeps as a uuid: give that session its canonical id in'
                ' every table, or delete its events, and start the collector again',
                quote_literal(odd);
        END IF;
    END $$;
    DROP INDEX events_by_session;
    ALTER TABLE events ALTER COLUMN session_id TYPE uuid USING session_id::uuid;
    CREATE INDEX events_by_session ON events(session_id, seq);

    ALTER SEQUENCE events_seq_seq CACHE 1000;
    CREATE FUNCTION agentops_fresh_seq() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DISCARD SEQUENCES;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_fresh_seq BEFORE INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION agentops_fresh_seq();
    """,
]

# The staging table of a connection: made when the pool opens the connection, emptied when each
# transaction commits (or rolls back). ``ord`` keeps the batch's arrival order into ``seq``.
_STAGING = "agentops_events_staging"
_STAGING_COLUMNS = (*ROW_COLUMNS[10], "ord")  # a ten-column record, and its place in the batch
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (
    session_id uuid NOT NULL, id text NOT NULL, event_type text NOT NULL,
    init_timestamp text, end_timestamp text, data text NOT NULL, model text,
    prompt_tokens bigint, completion_tokens bigint, cost double precision, ord integer NOT NULL
) ON COMMIT DELETE ROWS
"""
_INSERT_STAGED = f"""
INSERT INTO events (session_id, id, event_type, init_timestamp, end_timestamp, data,
                    model, prompt_tokens, completion_tokens, cost)
SELECT session_id, id, event_type, init_timestamp, end_timestamp, data,
       model, prompt_tokens, completion_tokens, cost
FROM {_STAGING} ORDER BY ord
ON CONFLICT (session_id, id) DO NOTHING
"""


_SESSION_COLUMNS = (
    "seq, id, project_id, trace_id, init_timestamp, init_ts, end_timestamp, end_ts, state,"
    " end_state, end_state_reason, tags::text, video, host_env::text"
)

_UPDATABLE = UPDATABLE_SESSION_FIELDS  # host_env is set apart: it needs a ::json cast


def _session_row(row: Any) -> SessionRow:
    return SessionRow(
        seq=row[0],
        id=row[1],
        project_id=row[2],
        trace_id=row[3],
        init_timestamp=row[4],
        init_ts=row[5],
        end_timestamp=row[6],
        end_ts=row[7],
        state=row[8],
        end_state=row[9],
        end_state_reason=row[10],
        tags=json.loads(row[11]),
        video=row[12],
        host_env=row[13],
    )


class PostgresStorage:
    """Storage in a PostgreSQL database.

    Args:
        dsn: A ``postgresql://user@host:port/db`` connection string.
        pool_size: Connections open at most (made on demand, none while idle).
        synchronous_commit: False sets PostgreSQL's ``synchronous_commit`` to ``off`` on this
            storage's connections: a write is acknowledged before its WAL reaches the disk,
            and a crash of the database server or of the machine can lose the writes of the
            last ~0.6 s (three ``wal_writer_delay``), never corrupt the database. True (the
            default) leaves the server's setting (PostgreSQL's default: on, a write is
            acknowledged once its WAL is on disk).
    """

    def __init__(
        self, dsn: str, pool_size: int = DEFAULT_PG_POOL_SIZE, *, synchronous_commit: bool = True
    ) -> None:
        self._dsn = dsn
        self._max = pool_size_setting(pool_size, "pool_size")
        self._synchronous_commit = synchronous_commit
        self._pool: Any = None

    def __repr__(self) -> str:
        return "PostgresStorage(<dsn>)"  # the DSN may hold a password

    @property
    def pool(self) -> Any:
        """The asyncpg pool (raises if not open)."""
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    async def open(self) -> None:
        """Create the pool and migrate the schema under an advisory lock."""
        import asyncpg

        # The pool replaces a connection the server closed (a restart) when it is next acquired.
        # min_size=0: with a floor, asyncpg reconnects in the background during an outage and
        # logs a traceback every second; without one, a request that needs a connection makes it
        # (and is answered 503 while the server is away).
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max,
            timeout=_CONNECT_TIMEOUT,
            init=_init_connection,
            reset=_keep_session,
            # A connection setting, not a SET (releases send no RESET ALL: see _keep_session). Only
            # when off, so that a pooler that refuses unknown startup parameters (PgBouncer)
            # works with the default; there ALTER ROLE ... SET synchronous_commit does it.
            server_settings=None if self._synchronous_commit else {"synchronous_commit": "off"},
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > len(_MIGRATIONS):
                raise newer_schema(current, len(_MIGRATIONS))
            for version, script in enumerate(_MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(script)
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
                    log.info("postgres schema migrated to version %d", version)

    async def close(self) -> None:
        """Close the pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @_translated
    async def get_secret(self, candidate: bytes) -> bytes:
        """The stored JWT secret, storing ``candidate`` first if there is none."""
        await self.pool.execute(
            "INSERT INTO settings VALUES ('jwt_secret', $1) ON CONFLICT DO NOTHING",
            candidate.hex(),
        )
        value = await self.pool.fetchval("SELECT value FROM settings WHERE key = 'jwt_secret'")
        return bytes.fromhex(value)

    @_translated
    async def create_project(self, project_id: str, name: str, key_hash: str) -> None:
        """Store a project and its key."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO projects (id, name) VALUES ($1, $2)", project_id, _no_nul(name)
            )
            await conn.execute(
                "INSERT INTO api_keys (key_hash, project_id) VALUES ($1, $2)", key_hash, project_id
            )

    @_translated
    async def project_for_key(self, key_hash: str) -> str | None:
        """The project of a key hash."""
        value: str | None = await self.pool.fetchval(
            "SELECT project_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
        )
        return value

    @_translated
    async def add_key(self, project_id: str, key_hash: str) -> bool:
        """Give an existing project one more API key; False when there is no such project."""
        added: str | None = await self.pool.fetchval(
            "INSERT INTO api_keys (key_hash, project_id)"
            " SELECT $1, id FROM projects WHERE id = $2 RETURNING project_id",
            key_hash,
            project_id,
        )
        return added is not None

    @_translated
    async def revoke_key(self, key_hash: str) -> str | None:
        """Revoke an API key: its project id, or None when no live key has this hash."""
        value: str | None = await self.pool.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL"
            " RETURNING project_id",
            key_hash,
        )
        return value

    @_translated
    async def list_projects(self) -> list[ProjectKeys]:
        """Every project with its live and revoked key counts, oldest first."""
        rows = await self.pool.fetch(
            "SELECT p.id, p.name, count(k.key_hash) FILTER (WHERE k.revoked_at IS NULL) AS live,"
            " count(k.key_hash) FILTER (WHERE k.revoked_at IS NOT NULL) AS revoked"
            " FROM projects p LEFT JOIN api_keys k ON k.project_id = p.id"
            " GROUP BY p.id ORDER BY p.created_at, p.id"
        )
        return [ProjectKeys(r["id"], r["name"], r["live"], r["revoked"]) for r in rows]

    @_translated
    async def upsert_session(self, write: SessionWrite) -> str:
        """Insert or update (same project only); returns the owning project."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await _upsert_session(conn, _clean_write(write))

    @_translated
    async def upsert_sessions(
        self, writes: Sequence[SessionWrite], rows: Sequence[EventRow] = ()
    ) -> tuple[list[str], int]:
        """Upsert many sessions and store events, in one transaction (nothing when a session
        is another project's); the owning projects in order, and how many events were new.

        Four round trips: ``BEGIN``, one statement for every session row and tag
        (:data:`_UPSERT_SESSIONS`), the events' ``COPY``, ``COMMIT``. A batch holding an event
        id stored already (a re-sent request) aborts that first transaction; it is done again
        with the events going through the staging table, which skips the stored ids.
        """
        async with self.pool.acquire() as conn:
            if not writes:  # events of existing sessions only: one COPY, no transaction around
                return [], await self._insert_on(conn, rows)
            cleaned = [_clean_write(w) for w in writes]
            try:
                return await self._store_sessions(conn, cleaned, rows, stage=False)
            except _Restage:
                # The staging table may be what was missing (a pooler handed us another server
                # session): make it (if needed) outside the transaction, then do it all again.
                await conn.execute(_CREATE_STAGING)
                return await self._store_sessions(conn, cleaned, rows, stage=True)

    async def _store_sessions(
        self, conn: Any, writes: list[SessionWrite], rows: Sequence[EventRow], *, stage: bool
    ) -> tuple[list[str], int]:
        """One attempt of :meth:`upsert_sessions`, in a transaction of its own."""
        try:
            async with conn.transaction():
                owners = await _upsert_sessions(conn, writes)
                if any(o != w.project_id for o, w in zip(owners, writes, strict=True)):
                    raise _Refused(owners)
                return owners, await self._insert_on(conn, rows, stage=stage)
        except _Refused as refused:
            return refused.owners, 0

    async def _insert_on(self, conn: Any, rows: Sequence[EventRow], *, stage: bool = False) -> int:
        """:meth:`insert_events` on ``conn``; inside the caller's transaction if it has one.

        In a transaction, a COPY that meets a stored id raises :class:`_Restage` (the
        transaction is aborted: the caller rolls it back and does its work again with
        ``stage=True``, which goes through the staging table at once). No savepoint: it would
        cost two round trips on every request for the rare re-sent one.
        """
        if not rows:
            return 0
        import asyncpg

        records: Sequence[tuple[object, ...]]
        if isinstance(rows, EventBatch):
            # The decoder built the rows as COPY records already and knows the batch as a whole:
            # nothing here looks at each row again.
            width, records, nul = rows.width, rows, rows.nul
        else:
            # Rows of one width, JSON as text (the usual batch), are copied as they came.
            width, records, nul = len(rows[0]), rows, True
            data = DATA_INDEX[width]
            if not all(len(row) == width and type(row[data]) is str for row in rows):
                width, records = 10, [_record(row) for row in rows]
        data = DATA_INDEX[width]
        if nul and any("\\u0000" in cast(str, r[data]) for r in records):  # a NUL in a string
            records = [_record_no_nul(record, data) for record in records]
        in_transaction = conn.is_in_transaction()
        if not stage:
            try:
                # Alone, one statement in its own transaction: all of the batch or nothing.
                await conn.copy_records_to_table(
                    "events", records=records, columns=ROW_COLUMNS[width]
                )
                return len(records)
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError) as exc:
                # An id is stored already or twice in the batch (or a concurrent batch with the
                # same ids deadlocked with this one): nothing of the COPY stayed.
                if in_transaction:
                    raise _Restage from exc
        staged = [(*widened(cast(EventRow, record), 10), n) for n, record in enumerate(records)]
        try:
            status = await _stage_and_insert(conn, staged)
        except asyncpg.UndefinedTableError as exc:
            # The staging table is gone (a pooler such as PgBouncer handed us another server
            # session, or DISCARD TEMP ran): make it again and retry, once. The error aborted
            # a caller's transaction: the caller makes it and starts again (upsert_sessions).
            if in_transaction:
                raise _Restage from exc
            await conn.execute(_CREATE_STAGING)
            status = await _stage_and_insert(conn, staged)
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <n>"

    @_translated
    async def update_session(self, write: SessionWrite) -> bool:
        """Update a session of the same project."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await _update_session(conn, _clean_write(write))

    @_translated
    async def session_project(self, session_id: str) -> str | None:
        """The owner of a session."""
        value: str | None = await self.pool.fetchval(
            "SELECT project_id FROM sessions WHERE id = $1", session_id
        )
        return value

    @_translated
    async def sessions_for_traces(
        self, project_id: str, trace_ids: Sequence[str]
    ) -> dict[str, str]:
        """Map trace ids to session ids within a project."""
        if not trace_ids:
            return {}
        rows = await self.pool.fetch(
            "SELECT trace_id, id FROM sessions WHERE trace_id = ANY($1::text[])"
            " AND project_id = $2",
            list(trace_ids),
            project_id,
        )
        return {r[0]: r[1] for r in rows}

    @_translated
    async def insert_events(self, rows: Sequence[EventRow]) -> int:
        """COPY the batch into events; if an id is already stored, through the staging table."""
        if not rows:
            return 0
        async with self.pool.acquire() as conn:
            return await self._insert_on(conn, rows)

    @_translated
    async def create_agent(self, session_id: str, agent_id: str, name: str | None) -> None:
        """Store an agent (ignored if known)."""
        await self.pool.execute(
            "INSERT INTO agents (session_id, id, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            session_id,
            agent_id,  # never holds NUL: the API refuses such ids (a replaced one could collide)
            _no_nul(name),
        )

    @_translated
    async def add_developer_error(self, project_id: str, session_id: str | None, data: str) -> None:
        """Store an SDK error report."""
        await self.pool.execute(
            "INSERT INTO developer_errors (project_id, session_id, data) VALUES ($1, $2, $3::json)",
            project_id,
            session_id,
            data,
        )

    @_translated
    async def add_session_log(self, session_id: str, body: str) -> None:
        """Store a log upload of a session (NUL, which text cannot hold, replaced)."""
        await self.pool.execute(
            "INSERT INTO session_logs (session_id, body) VALUES ($1, $2)",
            session_id,
            body.replace("\x00", "\ufffd"),
        )

    @_translated
    async def session_logs(self, session_id: str) -> list[tuple[str, float]]:
        """``(body, created_at)`` of a session's log uploads, oldest first."""
        rows = await self.pool.fetch(
            "SELECT body, extract(epoch FROM created_at)::float8 FROM session_logs"
            " WHERE session_id = $1 ORDER BY seq",
            session_id,
        )
        return [(str(r[0]), float(r[1])) for r in rows]

    @_translated
    async def project_name(self, project_id: str) -> str | None:
        """The name of a project, or None."""
        name: str | None = await self.pool.fetchval(
            "SELECT name FROM projects WHERE id = $1", project_id
        )
        return name

    @_translated
    async def session_agents(self, session_id: str) -> list[tuple[str, str | None]]:
        """``(agent id, name)`` of a session's agents, in id order."""
        rows = await self.pool.fetch(
            "SELECT id, name FROM agents WHERE session_id = $1 ORDER BY id", session_id
        )
        return [(str(r[0]), None if r[1] is None else str(r[1])) for r in rows]

    @_translated
    async def put_object(
        self, object_id: str, project_id: str, content_type: str, data: bytes
    ) -> None:
        """Store an uploaded object."""
        await self.pool.execute(
            "INSERT INTO objects (id, project_id, content_type, data) VALUES ($1, $2, $3, $4)",
            object_id,
            project_id,
            _no_nul(content_type),
            data,
        )

    @_translated
    async def get_object(self, object_id: str) -> tuple[str, bytes] | None:
        """``(content_type, data)`` of an uploaded object, or None."""
        row = await self.pool.fetchrow(
            "SELECT content_type, data FROM objects WHERE id = $1", object_id
        )
        return None if row is None else (str(row[0]), bytes(row[1]))

    @_translated
    async def session_of_trace(self, trace_id: str) -> str | None:
        """The session that names a trace id (the first stored), or None."""
        value: str | None = await self.pool.fetchval(
            "SELECT id FROM sessions WHERE trace_id = $1 ORDER BY seq LIMIT 1", trace_id
        )
        return value

    @_translated
    async def list_sessions(self, flt: SessionFilter) -> list[SessionRow]:
        """A page of sessions, newest first."""
        # Tags are stored with NUL replaced; a filter on a tag with NUL matches them.
        flt = dataclasses.replace(flt, tag=_no_nul(flt.tag))
        sql, args = session_page_sql(flt, _SESSION_COLUMNS, lambda n: f"${n}")
        return [_session_row(r) for r in await self.pool.fetch(sql, *args)]

    @_translated
    async def get_session(self, session_id: str) -> SessionRow | None:
        """One session."""
        row = await self.pool.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id
        )
        return None if row is None else _session_row(row)

    @_translated
    async def get_sessions(self, session_ids: Sequence[str]) -> list[SessionRow]:
        """Some sessions, in one query (see :class:`Storage`)."""
        if not session_ids:
            return []
        rows = await self.pool.fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = ANY($1::text[])",
            list(session_ids),
        )
        return [_session_row(r) for r in rows]

    @_translated
    async def event_counts(self, session_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Counts by type per session."""
        if not session_ids:
            return {}
        counts: dict[str, dict[str, int]] = {}
        for sid, event_type, n in await self.pool.fetch(
            "SELECT session_id, event_type, events FROM session_event_counts"
            " WHERE session_id = ANY($1::text[])",
            list(session_ids),
        ):
            counts.setdefault(sid, {})[event_type] = n
        return counts

    @_translated
    async def llm_usage(self, session_ids: Sequence[str]) -> list[Usage]:
        """Token sums per session and model, and the tools' costs per session."""
        if not session_ids:
            return []
        # From the rollups, never the events (a 100,000-event session is a few rows).
        rows = await self.pool.fetch(_USAGE_OF, list(session_ids))
        return [usage_row(*row) for row in rows]

    @_translated
    async def list_events(
        self, session_id: str, after_id: str | None, limit: int, event_type: str | None
    ) -> list[tuple[str, str]]:
        """A page of a session's events in arrival order."""
        if CANONICAL_UUID.fullmatch(session_id) is None:
            return []  # no session of the collector's has such an id (events key it as a uuid)
        sql = "SELECT id, data::text FROM events WHERE session_id = $1"
        args: list[object] = [session_id]
        if after_id is not None:
            args.append(after_id)
            position = f"(SELECT seq FROM events WHERE session_id = $1 AND id = ${len(args)})"
            sql += f" AND seq > {position}"
        if event_type is not None:
            args.append(_no_nul(event_type))
            sql += f" AND event_type = ${len(args)}"
        args.append(limit)
        sql += f" ORDER BY seq LIMIT ${len(args)}"
        rows = await self.pool.fetch(sql, *args)
        return [(r[0], r[1]) for r in rows]

    @_translated
    async def overview(self, project_id: str, since: float, until: float) -> OverviewData:
        """The aggregates of the sessions that started in ``[since, until)``, from one snapshot
        (a repeatable-read transaction)."""
        args = (project_id, since, until)
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            states = await conn.fetch(_OVERVIEW_STATES, *args)
            llm = await conn.fetch(_OVERVIEW_LLM, *args)
            tool_costs = await conn.fetch(_OVERVIEW_TOOL_COSTS, *args)
            tools = await conn.fetch(_OVERVIEW_TOOLS, *args)
        return OverviewData(
            states=[(int(r[0]), r[1], int(r[2])) for r in states],
            llm_usage=[
                (int(r[0]), r[1], r[2], int(r[3]), _int(r[4]), _int(r[5]), r[6]) for r in llm
            ],
            tool_costs=[(int(r[0]), float(r[1])) for r in tool_costs],
            tools=[(r[0], int(r[1]), int(r[2]), float(r[3]), r[4]) for r in tools],
        )

    @_translated
    async def costliest_sessions(
        self,
        project_id: str,
        since: float,
        until: float,
        model_prices: Sequence[tuple[str, float, float]],
        limit: int,
    ) -> list[Usage]:
        """The usage rows of the sessions of the range that cost most (see :class:`Storage`)."""
        models = [_no_nul(model) for model, _, _ in model_prices]
        prompt = [price for _, price, _ in model_prices]
        completion = [price for _, _, price in model_prices]
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(
                _COSTLIEST, project_id, since, until, models, prompt, completion, limit
            )
            if not rows:
                return []
            usage = await conn.fetch(_USAGE_OF, [r[0] for r in rows])
        return [usage_row(*r) for r in usage]

    @_translated
    async def prune_sessions(self, cutoff: float, limit: int) -> PruneResult:
        """Delete up to ``limit`` old sessions with their rows (see :class:`Storage`)."""
        session_ids: list[str] = [r[0] for r in await self.pool.fetch(_OLD_SESSIONS, cutoff, limit)]
        # Only a canonical id can have events (they key their session as a uuid).
        with_events = [sid for sid in session_ids if CANONICAL_UUID.fullmatch(sid)]
        events = 0
        if with_events:
            # Events first, one bounded statement (its own transaction) at a time.
            while deleted := _count(await self.pool.execute(_DELETE_EVENTS, with_events)):
                events += deleted
        async with self.pool.acquire() as conn, conn.transaction():
            if session_ids:
                # Events that arrived since their deletion started go too.
                events += _count(
                    await conn.execute(
                        "DELETE FROM events WHERE session_id = ANY($1::uuid[])", with_events
                    )
                )
                for table in _SESSION_TABLES:
                    await conn.execute(
                        f"DELETE FROM {table} WHERE session_id = ANY($1::text[])", session_ids
                    )
                await conn.execute("DELETE FROM sessions WHERE id = ANY($1::text[])", session_ids)
            await conn.execute(_DELETE_LOOSE_ERRORS, cutoff, EVENTS_PER_DELETE)
        return PruneResult(len(session_ids), events)

    async def reclaim_space(self) -> None:
        """Nothing to do: autovacuum makes the deleted rows' space reusable for new ones (the
        files keep their size; see docs/collector.md for shrinking them)."""


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

# The overview's queries: the sessions of a project that started in a range, through
# sessions_by_project_start, and their rows in the usage tables, through those tables' keys.
_OVERVIEW_SESSIONS = "sessions WHERE project_id = $1 AND init_ts >= $2 AND init_ts < $3"
_DAY = "floor(init_ts / 86400)::bigint"
_OVERVIEW_STATES = f"SELECT {_DAY} AS day, state, count(*) FROM {_OVERVIEW_SESSIONS} GROUP BY 1, 2"
# Text keys are grouped and ordered COLLATE "C" (byte order): a sort of some 20,000 rows by a
# language-aware collation took most of the query's time.
_OVERVIEW_LLM = (
    f'SELECT {_DAY} AS day, u.model COLLATE "C", u.has_cost, sum(u.calls), sum(u.prompt_tokens),'
    " sum(u.completion_tokens), sum(u.cost)"
    f" FROM (SELECT id, init_ts FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_llm_usage u ON u.session_id = s.id GROUP BY 1, 2, 3"
)
_OVERVIEW_TOOL_COSTS = (
    f"SELECT {_DAY} AS day, sum(u.cost) FROM (SELECT id, init_ts FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_tool_usage u ON u.session_id = s.id WHERE u.cost IS NOT NULL GROUP BY 1"
)
_OVERVIEW_TOOLS = (
    'SELECT u.name COLLATE "C", sum(u.calls), sum(u.timed_calls), sum(u.total_seconds),'
    f" max(u.max_seconds) FROM (SELECT id FROM {_OVERVIEW_SESSIONS}) s"
    " JOIN session_tool_usage u ON u.session_id = s.id GROUP BY 1"
)
# The sessions that cost most, priced with $4..$6 (models, prompt and completion $ per token).
_COSTLIEST = (
    "WITH p AS (SELECT * FROM unnest($4::text[], $5::float8[], $6::float8[]) AS p(model, pp, cp)),"
    f" s AS (SELECT id FROM {_OVERVIEW_SESSIONS}),"
    " c AS (SELECT s.id AS id, CASE WHEN u.has_cost THEN u.cost"
    " ELSE u.prompt_tokens::float8 * coalesce(p.pp, 0)"
    " + u.completion_tokens::float8 * coalesce(p.cp, 0) END AS cost"
    " FROM s JOIN session_llm_usage u ON u.session_id = s.id LEFT JOIN p ON p.model = u.model"
    " UNION ALL SELECT s.id, u.cost FROM s JOIN session_tool_usage u ON u.session_id = s.id"
    " WHERE u.cost IS NOT NULL)"
    ' SELECT id COLLATE "C" FROM c GROUP BY 1 HAVING sum(cost) > 0 ORDER BY sum(cost) DESC, 1'
    " LIMIT $7"
)
# The usage rows of some sessions from the rollups, as llm_usage gives them from the events.
_USAGE_OF = (
    "SELECT session_id, nullif(model, ''), prompt_tokens, completion_tokens, cost"
    " FROM session_llm_usage WHERE session_id = ANY($1::text[])"
    " UNION ALL SELECT session_id, NULL, 0, 0, sum(cost) FROM session_tool_usage"
    " WHERE session_id = ANY($1::text[]) AND cost IS NOT NULL GROUP BY session_id"
)

# A session's age: when it ended; if it never did, when it started (or was first stored).
_OLD_SESSIONS = (
    "SELECT id FROM sessions"
    " WHERE coalesce(end_ts, init_ts, extract(epoch FROM created_at)::float8) < $1"
    " ORDER BY seq LIMIT $2"
)
# By row address (a TID scan): events has no index on seq alone.
_DELETE_EVENTS = (
    "DELETE FROM events WHERE ctid = ANY(ARRAY(SELECT ctid FROM events"
    f" WHERE session_id = ANY($1::uuid[]) LIMIT {EVENTS_PER_DELETE}))"
)
_DELETE_LOOSE_ERRORS = (
    "DELETE FROM developer_errors WHERE seq IN (SELECT seq FROM developer_errors"
    " WHERE session_id IS NULL AND created_at < to_timestamp($1) LIMIT $2)"
)


def _int(value: Any) -> int:
    """A token sum (``numeric``: it cannot overflow in the database) as an int."""
    return int(value)


def _count(status: str) -> int:
    """The row count of a command status (``"DELETE 12"``)."""
    return int(status.rsplit(" ", 1)[-1])


async def _stage_and_insert(conn: Any, records: list[tuple[object, ...]]) -> str:
    """COPY into the staging table and move the new rows into events, in one transaction."""
    async with conn.transaction():
        await conn.copy_records_to_table(_STAGING, records=records, columns=_STAGING_COLUMNS)
        status: str = await conn.execute(_INSERT_STAGED)
    return status


async def _init_connection(conn: Any) -> None:
    """A new pool connection: its event staging table (temporary: private to the connection)."""
    await conn.execute(_CREATE_STAGING)


async def _keep_session(conn: Any) -> None:
    """What a connection's release to the pool sends the server: nothing.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release: a round trip and four statements for the server per request (a
    ``create_events`` request is otherwise one ``COPY``). None of it has anything to undo here:
    the storage takes advisory locks per transaction only (``pg_advisory_xact_lock``), declares
    no cursors, never listens and never ``SET``s a session setting (use ``SET LOCAL`` in a
    transaction). An open transaction is still rolled back by the pool before this runs.
    """


def _record(row: EventRow) -> tuple[object, ...]:
    """An :data:`EventRow` as a COPY record of all ten columns (``ROW_COLUMNS[10]``), the
    JSON as text."""
    wide: tuple[object, ...] = widened(row, 10)
    data = wide[5]
    if isinstance(data, str):
        return wide
    return (*wide[:5], bytes(cast(msgspec.Raw, data)).decode(), *wide[6:])


def _record_no_nul(record: tuple[object, ...], data: int) -> tuple[object, ...]:
    """A COPY record with NUL replaced in its text columns but the JSON (index ``data``), which
    keeps the original."""
    return tuple(value if i == data else _no_nul(value) for i, value in enumerate(record))


def _no_nul(value: Any) -> Any:
    """``value`` with NUL characters replaced (PostgreSQL text cannot hold them)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _clean_write(write: SessionWrite) -> SessionWrite:
    changes = {
        name: _no_nul(getattr(write, name))
        for name in ("init_timestamp", "end_timestamp", "end_state", "end_state_reason", "video")
    }
    return dataclasses.replace(write, **changes)


async def _replace_tags(conn: Any, session_id: str, tags: list[str]) -> None:
    await conn.execute("DELETE FROM session_tags WHERE session_id = $1", session_id)
    if tags:
        await conn.execute(
            "INSERT INTO session_tags (session_id, tag) SELECT $1, unnest($2::text[])"
            " ON CONFLICT DO NOTHING",
            session_id,
            [_no_nul(tag) for tag in tags],
        )


class _Refused(Exception):
    """Rolls back a batch of sessions that holds another project's session."""

    def __init__(self, owners: list[str]) -> None:
        super().__init__("a session of another project")
        self.owners = owners


class _Restage(Exception):
    """Rolls back a batch of sessions whose events' COPY met a stored id (a re-sent request):
    it is done again, the events through the staging table."""


# Every session of a create_sessions request in one statement (one round trip): new rows are
# inserted with seqs in the request's order, rows of the same project updated with the fields
# the write carries, and the tags of both replaced. The inserted rows are not visible to the
# UPDATE (one snapshot), so each row is either inserted or updated, never both. The answer is
# each session's owner, in order: the caller's project when inserted or updated, another's when
# the session is another project's, NULL when a concurrent request inserted it after this
# statement's snapshot (the caller handles those one at a time).
# Rows are inserted, updated and tagged in key order: an insert waits for a concurrent transaction
# that inserted the same key, an update for one that holds the row, so two requests writing the
# same sessions in different orders would each wait for the other (a deadlock: one answered 503
# after deadlock_timeout); in one order the second waits for the first, then goes on. The new
# rows' seqs are drawn in the request's order first.
_UPSERT_SESSIONS = """
WITH v AS (
    SELECT *, nextval('sessions_seq_seq') AS new_seq FROM unnest(
            $1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[],
            $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[])
        WITH ORDINALITY AS v(id, project_id, trace_id, init_timestamp, init_ts, end_timestamp,
                             end_ts, state, end_state, end_state_reason, tags, video, host_env,
                             ord)
),
ins AS (
    INSERT INTO sessions (seq, id, project_id, trace_id, init_timestamp, init_ts, end_timestamp,
                          end_ts, state, end_state, end_state_reason, tags, video, host_env)
    SELECT new_seq, id, project_id, trace_id, init_timestamp, init_ts, end_timestamp, end_ts,
           coalesce(state, 'RUNNING'), end_state, end_state_reason, coalesce(tags, '[]')::json,
           video, host_env::json
    FROM v ORDER BY id COLLATE "C"
    ON CONFLICT (id) DO NOTHING
    RETURNING id
),
upd AS (
    UPDATE sessions s SET
        updated_at = now(),
        init_timestamp = coalesce(v.init_timestamp, s.init_timestamp),
        init_ts = coalesce(v.init_ts, s.init_ts),
        end_timestamp = coalesce(v.end_timestamp, s.end_timestamp),
        end_ts = coalesce(v.end_ts, s.end_ts),
        state = coalesce(v.state, s.state),
        end_state = coalesce(v.end_state, s.end_state),
        end_state_reason = coalesce(v.end_state_reason, s.end_state_reason),
        video = coalesce(v.video, s.video),
        trace_id = coalesce(v.trace_id, s.trace_id),
        host_env = coalesce(v.host_env::json, s.host_env),
        tags = coalesce(v.tags::json, s.tags)
    FROM (SELECT * FROM v ORDER BY id COLLATE "C") v
    WHERE s.id = v.id AND s.project_id = v.project_id
    RETURNING s.id, v.tags IS NOT NULL AS retag
),
tag_rows AS (
    SELECT * FROM unnest($14::text[], $15::text[]) AS t(session_id, tag)
),
retagged AS (
    SELECT id FROM ins UNION ALL SELECT id FROM upd WHERE retag
),
dropped AS (
    DELETE FROM session_tags t
    WHERE t.session_id IN (SELECT id FROM upd WHERE retag)
      AND NOT EXISTS (SELECT 1 FROM tag_rows r WHERE r.session_id = t.session_id
                                                 AND r.tag = t.tag)
),
added AS (
    INSERT INTO session_tags (session_id, tag)
    SELECT session_id, tag FROM tag_rows WHERE session_id IN (SELECT id FROM retagged)
    ORDER BY session_id COLLATE "C", tag COLLATE "C"
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN ins.id IS NOT NULL OR upd.id IS NOT NULL THEN v.project_id
            ELSE s.project_id END
FROM v LEFT JOIN ins ON ins.id = v.id LEFT JOIN upd ON upd.id = v.id
       LEFT JOIN sessions s ON s.id = v.id
ORDER BY v.ord
"""


async def _upsert_sessions(conn: Any, writes: list[SessionWrite]) -> list[str]:
    """:func:`_upsert_session` for each write, in order; their owners.

    One statement for the batch (a create_sessions request names each session once); a session
    written twice starts another statement, which sees the first write.
    """
    owners: list[str] = []
    run: list[SessionWrite] = []
    ids: set[str] = set()
    for write in writes:
        if write.session_id in ids:
            owners += await _upsert_distinct(conn, run)
            run, ids = [], set()
        run.append(write)
        ids.add(write.session_id)
    return owners + await _upsert_distinct(conn, run)


async def _upsert_distinct(conn: Any, writes: list[SessionWrite]) -> list[str]:
    """Sessions with distinct ids, in one statement (:data:`_UPSERT_SESSIONS`); their owners."""
    columns: list[list[object]] = [[] for _ in range(13)]
    tag_sessions: list[str] = []
    tags: list[str] = []
    for write in writes:
        values = (
            write.session_id,
            write.project_id,
            write.trace_id,
            write.init_timestamp,
            write.init_ts,
            write.end_timestamp,
            write.end_ts,
            write.state,
            write.end_state,
            write.end_state_reason,
            None if write.tags is None else json.dumps(write.tags),
            write.video,
            write.host_env,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        for tag in write.tags or ():
            tag_sessions.append(write.session_id)
            tags.append(_no_nul(tag))
    owners: list[str | None] = [
        row[0] for row in await conn.fetch(_UPSERT_SESSIONS, *columns, tag_sessions, tags)
    ]
    # A session a concurrent request inserted after this statement's snapshot: one at a time,
    # as create_session does (its insert waits for that request and sees the row), in key order
    # like the statement's own writes (two requests doing this in other orders would deadlock).
    late = sorted((w.session_id, i) for i, w in enumerate(writes) if owners[i] is None)
    for _, index in late:
        owners[index] = await _upsert_session(conn, writes[index])
    return cast(list[str], owners)


async def _upsert_session(conn: Any, write: SessionWrite) -> str:
    """Insert the session, or update it when it exists in the same project; its owner."""
    inserted = await conn.fetchval(
        "INSERT INTO sessions (id, project_id, trace_id, init_timestamp, init_ts,"
        " end_timestamp, end_ts, state, end_state, end_state_reason, tags, video,"
        " host_env) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11::json,$12,$13::json)"
        " ON CONFLICT (id) DO NOTHING RETURNING project_id",
        *write.insert_values(),
    )
    if inserted is not None:
        await _replace_tags(conn, write.session_id, write.tags or [])
        return write.project_id
    owner: str = await conn.fetchval(
        "SELECT project_id FROM sessions WHERE id = $1", write.session_id
    )
    if owner == write.project_id:
        await _update_session(conn, write)
    return owner


async def _update_session(conn: Any, write: SessionWrite) -> bool:
    sets = ["updated_at = now()"]
    args: list[object] = []
    for name in _UPDATABLE:
        value = getattr(write, name)
        if value is not None:
            args.append(value)
            sets.append(f"{name} = ${len(args)}")
    if write.host_env is not None:
        args.append(write.host_env)
        sets.append(f"host_env = ${len(args)}::json")
    if write.tags is not None:
        args.append(json.dumps(write.tags))
        sets.append(f"tags = ${len(args)}::json")
    args += [write.session_id, write.project_id]
    status: str = await conn.execute(
        f"UPDATE sessions SET {', '.join(sets)} WHERE id = ${len(args) - 1}"
        f" AND project_id = ${len(args)}",
        *args,
    )
    if status.endswith(" 0"):
        return False
    if write.tags is not None:
        await _replace_tags(conn, write.session_id, write.tags)
    return True
