"""Take a collector database back to an older schema version, to test the migrations forward.

One list of what each version added (newest first), so a new migration is one more entry here,
not an edit of every migration test."""

from __future__ import annotations

import re
import sqlite3

from agentops_async.collector._postgres import _MIGRATIONS as _PG_MIGRATIONS


def _pg_created(version: int, *names: str) -> list[str]:
    """The ``CREATE FUNCTION`` / ``CREATE TRIGGER`` statements of ``names`` as PostgreSQL
    migration ``version`` wrote them (to put back what a later version replaced)."""
    script = _PG_MIGRATIONS[version - 1]
    statements = []
    for name in names:
        found = re.search(
            rf"CREATE FUNCTION {name}\(.*?END \$\$;|CREATE TRIGGER {name} .*?;", script, re.S
        )
        assert found is not None, f"{name} is not created by migration {version}"
        statements.append(found.group(0))
    return statements


# version -> (statements on PostgreSQL only, run first; statements on both backends)
_UNDO: dict[int, tuple[list[str], list[str]]] = {
    9: (  # PostgreSQL: events.session_id as a uuid, events_by_session without event_type,
        # seq drawn in blocks
        [
            "DROP TRIGGER events_fresh_seq ON events",
            "DROP FUNCTION agentops_fresh_seq()",
            "ALTER SEQUENCE events_seq_seq CACHE 1",
            "DROP INDEX events_by_session",
            'ALTER TABLE events ALTER COLUMN session_id TYPE text COLLATE "C"',
            "CREATE INDEX events_by_session ON events(session_id, seq) INCLUDE (event_type)",
        ],
        [],
    ),
    8: (  # PostgreSQL: events.data as text, one statement trigger for the three rollups, no
        # partial indexes of LLM and tool events
        [
            "DROP TRIGGER events_rollups ON events",
            "DROP FUNCTION agentops_events_rollups()",
            "DROP FUNCTION agentops_tool_name(text)",
            "ALTER TABLE events ALTER COLUMN data TYPE json USING data::json,"
            ' ALTER COLUMN session_id TYPE text COLLATE "default",'
            ' ALTER COLUMN id TYPE text COLLATE "default"',
            "CREATE INDEX events_llm_by_session ON events(session_id)"
            " INCLUDE (model, prompt_tokens, completion_tokens, cost) WHERE event_type = 'llms'",
            "CREATE INDEX events_tool_cost_by_session ON events(session_id, cost)"
            " WHERE event_type = 'tools' AND cost IS NOT NULL",
            *_pg_created(6, "agentops_tool_name", "agentops_events_usage", "events_usage"),
            *_pg_created(7, "agentops_events_counts", "events_counts"),
        ],
        [],
    ),
    7: (  # per-session event counts by type
        ["DROP TRIGGER events_counts ON events", "DROP FUNCTION agentops_events_counts()"],
        ["DROP TABLE session_event_counts"],
    ),
    6: (  # the overview's rollups
        [
            "DROP TRIGGER events_usage ON events",
            "DROP FUNCTION agentops_events_usage()",
            "DROP FUNCTION agentops_span_seconds(text, text)",
            "DROP FUNCTION agentops_tool_name(json)",
        ],
        [
            "DROP TABLE session_llm_usage",
            "DROP TABLE session_tool_usage",
            "DROP INDEX sessions_by_project_start",
        ],
    ),
    5: (  # PostgreSQL's events keyed by (session_id, id); SQLite's covering indexes stay
        [
            "ALTER TABLE events DROP CONSTRAINT events_pkey",
            "CREATE UNIQUE INDEX events_by_session_id ON events(session_id, id)",
            "ALTER TABLE events ADD PRIMARY KEY (seq)",
        ],
        [],
    ),
    4: ([], ["DROP INDEX events_tool_cost_by_session"]),
    3: ([], ["DROP TABLE session_logs", "DROP TABLE objects"]),
}


def downgrade_statements(postgres: bool, to_version: int) -> list[str]:
    """The statements that undo every version above ``to_version``, newest first."""
    statements: list[str] = []
    for version in sorted(_UNDO, reverse=True):
        if version <= to_version:
            break
        postgres_only, both = _UNDO[version]
        statements += [*postgres_only, *both] if postgres else both
    return [*statements, f"DELETE FROM schema_version WHERE version > {to_version}"]


async def downgrade(database: str, to_version: int) -> None:
    """Run :func:`downgrade_statements` on ``database`` (a PostgreSQL DSN or a SQLite path)."""
    postgres = database.startswith(("postgresql://", "postgres://"))
    statements = downgrade_statements(postgres, to_version)
    if postgres:
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
    else:
        with sqlite3.connect(database) as conn:
            for statement in statements:
                conn.execute(statement)


async def query(database: str, sql: str) -> list[tuple[object, ...]]:
    """The rows of ``sql`` on ``database`` (a PostgreSQL DSN or a SQLite path), as tuples."""
    if database.startswith(("postgresql://", "postgres://")):
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    with sqlite3.connect(database) as conn:
        return list(conn.execute(sql).fetchall())
