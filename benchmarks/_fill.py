"""A fast filler for read benchmarks: sessions and events written straight into a database.

Not through HTTP: rows are generated here and written with ``COPY`` (PostgreSQL) or
``executemany`` in large transactions (SQLite), after the collector's own ``open()`` made the
schema, so the database is exactly what a collector would have stored (ids, JSON, usage columns,
tags in both places). 10M events take a few minutes per backend.

The mix is meant to look like a team's database after a few months:

- ``sessions`` sessions started over ``days`` days (stored in start order, as they arrive), ended
  succeeded 70%, failed 15%, indeterminate 5%, still running 10%; 0-3 tags each from 40
  (``team-0`` ... ``team-9``, ``env-prod``..., ``agent-0``...); a few host environments.
- ``big`` sessions of ``big_events`` events each (the long-running agents), the rest of the
  ``events`` spread unevenly over the other sessions (exponential sizes, mean events/sessions).
- Events: LLM calls 35% (six models, tokens, a cost on a third of them), actions 25%, tools 25%
  (a cost on a tenth), API calls 10%, errors 5%; a few hundred bytes of JSON each, as our SDK
  sends them. Sixteen sessions at a time take turns in runs of 50 events, so a session's events
  are spread over the table as they are when agents run side by side.

    fill = await fill_database(database, sessions=10_000, events=1_000_000)
    fill.api_key, fill.big_session_ids, fill.session_ids
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentops_async.collector import open_storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._sqlite import _COUNTS_FROM_EVENTS, _USAGE_FROM_EVENTS
from agentops_async.collector._storage import ROW_COLUMNS, is_postgres_dsn
from agentops_async.events import EventType

_EVENT_COLUMNS = ROW_COLUMNS[10]  # the columns of a row _events makes

__all__ = ["Fill", "fill_database"]

_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-haiku", "llama-3-70b", "o1"]
_TAGS = (
    [f"team-{i}" for i in range(10)]
    + ["env-prod", "env-staging", "env-dev", "nightly", "eval", "canary"]
    + [f"agent-{i}" for i in range(24)]
)
_STATES = [("SUCCEEDED", "Success", 70), ("FAILED", "Fail", 15)]
_STATES += [("INDETERMINATE", "Indeterminate", 5), ("RUNNING", None, 10)]
_TYPES = [("llms", 35), ("actions", 25), ("tools", 25), ("apis", 10), ("errors", 5)]
_CHUNK = 50_000  # rows per COPY / transaction
_TURN = 50  # events a session writes before the next of the running sessions
_RUNNING_TOGETHER = 16


@dataclass
class Fill:
    """What was written: the project's key and ids to query."""

    api_key: str
    project_id: str
    session_ids: list[str] = field(default_factory=list)  # in start order
    big_session_ids: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    first_ts: float = 0.0
    last_ts: float = 0.0


_SECONDS: dict[int, str] = {}


def _iso(ts: float) -> str:
    second = int(ts)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        prefix = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{int((ts - second) * 1e6):06d}Z"


def _plan(rng: random.Random, sessions: int, events: int, big: int, big_events: int) -> list[int]:
    """Events per session (the ``big`` ones spread evenly over the start order)."""
    small = max(0, events - big * big_events)
    weights = [rng.expovariate(1.0) for _ in range(sessions - big)]
    total = sum(weights) or 1.0
    counts = [int(small * w / total) for w in weights]
    for i in range(small - sum(counts)):
        counts[i % len(counts)] += 1
    step = max(1, sessions // max(1, big))
    for n in range(big):
        counts.insert(min(len(counts), n * step + step // 2), big_events)
    return counts


_BODIES = 4096  # distinct event bodies; each event takes one at random, with its own head


def _body(rng: random.Random) -> tuple[object, ...]:
    """An event's type, its JSON after the head, and its usage columns."""
    kind = rng.choices(_TYPE_NAMES, _TYPE_WEIGHTS)[0]
    model = prompt = completion = cost = None
    n = rng.randrange(1_000_000)
    if kind == "llms":
        model = rng.choice(_MODELS)
        prompt, completion = rng.randrange(50, 4000), rng.randrange(10, 1500)
        cost = round(rng.random() / 50, 6) if rng.random() < 0.33 else None
        text = (
            f',"model":"{model}","prompt_tokens":{prompt},"completion_tokens":{completion},'
            f'"prompt":[{{"role":"user","content":"step {n} of the plan"}}],'
            f'"completion":{{"role":"assistant","content":"done with the step"}},'
            f'"cost":{json.dumps(cost)},"params":{{"temperature":0.2}},"returns":null}}'
        )
    elif kind == "tools":
        cost = round(rng.random() / 100, 6) if rng.random() < 0.1 else None
        text = (
            f',"name":"tool_{rng.randrange(12)}","params":{{"query":"what to look up",'
            f'"k":{rng.randrange(1, 9)}}},"returns":{{"hits":{rng.randrange(20)}}},'
            f'"logs":null,"cost":{json.dumps(cost)}}}'
        )
    elif kind == "actions":
        text = (
            f',"action_type":"step_{rng.randrange(20)}","params":{{"query":"benchmark",'
            f'"k":3}},"returns":{n},"logs":null,"screenshot":null}}'
        )
    elif kind == "apis":
        text = ',"url":"https://api.example.com/v1/items","method":"GET","status":200}'
    else:
        text = (
            f',"error_type":"ValueError","code":"E{rng.randrange(100)}",'
            f'"details":"something went wrong in step {n}","logs":null}}'
        )
    return (kind, text, model, prompt, completion, cost)


_TYPE_NAMES = [name for name, _ in _TYPES]
_TYPE_WEIGHTS = [weight for _, weight in _TYPES]


def _sessions(
    rng: random.Random, project_id: str, counts: list[int], first_ts: float, last_ts: float
) -> list[tuple[object, ...]]:
    """Session rows in start order: id, start, end, state, end_state, tags."""
    rows = []
    span = (last_ts - first_ts) / max(1, len(counts))
    for n, count in enumerate(counts):
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        start = first_ts + n * span + rng.random() * span
        state, end_state, _ = rng.choices(_STATES, [w for *_, w in _STATES])[0]
        end = start + 1 + count * 0.05 if end_state else None
        tags = sorted(set(rng.sample(_TAGS, rng.randrange(4))))
        rows.append((session_id, project_id, start, end, state, end_state, tags, count))
    return rows


def _events(rng: random.Random, sessions: list[tuple[object, ...]]) -> Iterator[tuple[object, ...]]:
    """Every event, sessions running side by side in groups, in the order they are stored.

    Rows: session_id, id, event_type, init/end timestamps (a tool call's), JSON, model, tokens,
    cost.
    """
    bodies = [_body(rng) for _ in range(_BODIES)]
    waiting = list(reversed(sessions))
    running: list[list[Any]] = []  # [session_id, next ts, left, id prefix, counter]
    while waiting or running:
        while waiting and len(running) < _RUNNING_TOGETHER:
            session_id, _, start, _, _, _, _, count = waiting.pop()
            if count:
                running.append([session_id, start, count, uuid.uuid4().hex[:20], 0])
        for slot in list(running):
            session_id, ts, left, prefix, counter = slot
            turn = min(_TURN, left)
            picks = rng.choices(bodies, k=turn)
            for i, (kind, text, model, prompt, completion, cost) in enumerate(picks):
                event_id = f"{prefix}{counter + i:012x}"
                start, end = _iso(ts + i * 0.05), _iso(ts + i * 0.05 + 0.04)
                data = (
                    f'{{"id":"{event_id}","event_type":"{kind}","init_timestamp":"{start}",'
                    f'"end_timestamp":"{end}","session_id":"{session_id}"{text}'
                )
                tool = kind == EventType.TOOL  # only a tool call's row keeps them (EventRow)
                yield (
                    session_id,
                    event_id,
                    kind,
                    start if tool else None,
                    end if tool else None,
                    data,
                    model,
                    prompt,
                    completion,
                    cost,
                )
            slot[1], slot[2], slot[4] = ts + turn * 0.05, left - turn, counter + turn
            if slot[2] == 0:
                running.remove(slot)


def _chunks(rows: Iterator[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    """``rows`` in lists of ``_CHUNK``, each made in a thread while the caller writes the last
    (the database works while Python generates: sqlite3 and the socket release the GIL)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="fill")

    def take() -> list[tuple[object, ...]]:
        return list(itertools.islice(rows, _CHUNK))

    try:
        future = pool.submit(take)
        while chunk := future.result():
            future = pool.submit(take)
            yield chunk
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _session_record(row: tuple[object, ...]) -> tuple[object, ...]:
    session_id, project_id, start, end, state, end_state, tags, _ = row
    return (
        session_id,
        project_id,
        _iso(start),  # type: ignore[arg-type]
        start,
        None if end is None else _iso(end),  # type: ignore[arg-type]
        end,
        state,
        end_state,
        json.dumps(tags),
        json.dumps({"host": {"hostname": "worker-1", "os": "Linux"}}),
    )


_SESSION_COLUMNS = (
    "id",
    "project_id",
    "init_timestamp",
    "init_ts",
    "end_timestamp",
    "end_ts",
    "state",
    "end_state",
    "tags",
    "host_env",
)


async def _write_postgres(dsn: str, sessions: list[tuple[object, ...]], rng: random.Random) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        records = [_session_record(row) for row in sessions]
        await conn.copy_records_to_table("sessions", records=records, columns=_SESSION_COLUMNS)
        tags = [(row[0], tag) for row in sessions for tag in row[6]]  # type: ignore[attr-defined]
        await conn.copy_records_to_table(
            "session_tags", records=tags, columns=("session_id", "tag")
        )
        written = 0
        for chunk in _chunks(_events(rng, sessions)):
            await conn.copy_records_to_table("events", records=chunk, columns=_EVENT_COLUMNS)
            written += len(chunk)
        await conn.execute("VACUUM (ANALYZE) events")  # what autovacuum does after a while
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return written


def _write_sqlite(path: str, sessions: list[tuple[object, ...]], rng: random.Random) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO sessions ({', '.join(_SESSION_COLUMNS)}, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(*_session_record(row), now, now) for row in sessions],
        )
        conn.executemany(
            "INSERT INTO session_tags (session_id, tag) VALUES (?, ?)",
            [(row[0], tag) for row in sessions for tag in row[6]],  # type: ignore[attr-defined]
        )
        conn.execute("COMMIT")
        written = 0
        insert = f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?,?)"
        for chunk in _chunks(_events(rng, sessions)):
            conn.execute("BEGIN")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
            written += len(chunk)
        # The usage and counts rollups, which the collector's writer keeps as it stores events
        # (this filler goes around it; PostgreSQL's triggers fill them during the COPY).
        conn.execute("BEGIN")
        for statement in (*_USAGE_FROM_EVENTS, _COUNTS_FROM_EVENTS):
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return written


async def fill_database(
    database: str,
    *,
    sessions: int = 10_000,
    events: int = 1_000_000,
    big: int = 3,
    big_events: int = 100_000,
    days: float = 90.0,
    seed: int = 15,
) -> Fill:
    """Make the schema (the collector's own migrations), a project, and fill it.

    Args:
        database: An empty SQLite path or PostgreSQL DSN.
        sessions: Sessions in all (``big`` of them long).
        events: Events in all.
        big: Sessions of ``big_events`` events each.
        big_events: Events of each big session.
        days: The sessions' start times span this many days, ending now.
        seed: Same seed, same rows (ids included).
    """
    started = time.perf_counter()
    storage = open_storage(database)
    await storage.open()
    try:
        project_id, api_key = await new_project(storage, "reads benchmark")
    finally:
        await storage.close()
    rng = random.Random(seed)
    last_ts = time.time()
    first_ts = last_ts - days * 86400
    counts = _plan(rng, sessions, events, big, big_events)
    rows = _sessions(rng, project_id, counts, first_ts, last_ts)
    if is_postgres_dsn(database):
        written = await _write_postgres(database, rows, rng)
    else:
        written = await asyncio.to_thread(_write_sqlite, database, rows, rng)
    return Fill(
        api_key=api_key,
        project_id=project_id,
        session_ids=[str(row[0]) for row in rows],
        big_session_ids=[str(row[0]) for row in rows if row[7] == big_events],
        events=written,
        seconds=time.perf_counter() - started,
        first_ts=first_ts,
        last_ts=last_ts,
    )
