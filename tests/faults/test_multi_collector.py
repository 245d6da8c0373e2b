"""Stateless collectors, proven: several collector processes on one PostgreSQL database.

Three collectors behind a round-robin balancer with no stickiness (tests/faults/balancer.py:
each request goes to the next collector, never to the one that served the same session's
previous request). What must hold:

- a session whose create, events, re-authorisation (tokens expire after one second) and end hit
  different collectors loses and duplicates nothing, and a token issued by one collector is
  accepted by the others: they share the JWT secret through the database;
- read cursors made by one collector page on another;
- a key revoked with ``keys revoke`` against the database is refused by every collector within
  ``KEY_CACHE_SECONDS``, even by those that had just accepted it;
- several collectors starting at once on an empty database migrate it once, without errors.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _servers import (
    REPO_ROOT,
    CollectorHandle,
    CollectorProcess,
    PostgresServer,
    http_request,
    start_collectors,
)

import agentops_async as ao
from agentops_async.collector._context import KEY_CACHE_SECONDS
from agentops_async.collector._postgres import _MIGRATIONS

from .balancer import Hop, RoundRobinBalancer
from .ledger import Ledger

pytestmark = [pytest.mark.postgres]

COLLECTORS = 3
JWT_EXPIRY = 1.0  # seconds: every session meets an expired token and re-authorises
SESSIONS = 3
EVENTS_PER_ROUND = 50
MIN_EVENTS = 300


@dataclass
class Cluster:
    """Collectors started together on one PostgreSQL database."""

    dsn: str
    processes: list[CollectorProcess]

    def handle(self, name: str, index: int = 0) -> CollectorHandle:
        """A new project (made through collector ``index``) and a handle on that collector."""
        project_id, api_key = self.processes[index].create_project(name)
        return CollectorHandle(self.processes[index], project_id, api_key)

    def logs(self) -> list[str]:
        return [p.log_path.read_text(errors="replace") for p in self.processes]


def start_cluster(server: PostgresServer, tmp: Path, jwt_expiry: float | None = None) -> Cluster:
    """``COLLECTORS`` collectors launched at once on a new, empty database."""
    dsn = server.create_database()
    admin_token = uuid.uuid4().hex  # one admin token: any collector can make projects
    processes = [
        CollectorProcess(
            database=dsn,
            backend="postgres",
            log_path=tmp / f"collector-{index}-{uuid.uuid4().hex[:6]}.log",
            jwt_expiry=jwt_expiry,
            admin_token=admin_token,
            extra_args=["--log-level", "INFO"],  # the migration's INFO lines are counted
        )
        for index in range(COLLECTORS)
    ]
    return Cluster(dsn, start_collectors(processes))


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    started = start_cluster(postgres_server, tmp_path_factory.mktemp("multi"), JWT_EXPIRY)
    try:
        yield started
    finally:
        for process in started.processes:
            process.stop()


@pytest_asyncio.fixture
async def balancer(cluster: Cluster) -> AsyncIterator[RoundRobinBalancer]:
    balancer = await RoundRobinBalancer([p.url for p in cluster.processes]).start()
    yield balancer
    await balancer.stop()


async def fetch(dsn: str, query: str) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def wait_for(predicate: Any, what: str, timeout: float) -> float:
    """Poll ``predicate`` (a coroutine function) until true; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        assert loop.time() - start < timeout, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)
    return loop.time() - start


def hopped(upstreams: Iterable[int]) -> bool:
    """True when no two consecutive requests were served by the same collector."""
    return all(a != b for a, b in itertools.pairwise(upstreams))


def v2_hops(balancer: RoundRobinBalancer, session_id: str) -> list[Hop]:
    return [hop for hop in balancer.hops_of(session_id) if hop.call.startswith("/v2/")]


# --- (a) a session hopping between collectors ---------------------------------------------------


@pytest.mark.asyncio
async def test_sessions_hopping_between_collectors_lose_and_duplicate_nothing(
    cluster: Cluster, balancer: RoundRobinBalancer
) -> None:
    reader = cluster.handle("hops", index=1)
    reader.url = balancer.url  # reads go round-robin too: read-your-writes across collectors
    client = ao.AsyncClient(
        api_key=reader.api_key,
        endpoint=balancer.url,
        request_timeout=10.0,
        flush_interval=0.02,
        max_batch_size=EVENTS_PER_ROUND,
        log_session_stats=False,
        shutdown_timeout=60,
        session_batches=False,  # the standard calls: a JWT per session, renewed across collectors
    )
    ledger = Ledger()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60

    def reauthorised(session_id: str) -> bool:
        """This session renewed its token, and every collector has renewed one by now."""
        renewals = [hop for hop in balancer.hops if hop.call == "/v2/reauthorize_jwt"]
        return {hop.upstream for hop in renewals} == set(range(COLLECTORS)) and any(
            hop.session_id == session_id and hop.status == 200 for hop in renewals
        )

    async def agent(index: int) -> ao.AsyncSession:
        async with client.session(tags=[f"agent-{index}"]) as session:
            recorded = 0
            # Events until this session's token expired and was renewed (tokens live 1 s), and
            # until each collector has renewed a token.
            while recorded < MIN_EVENTS or not reauthorised(session.session_id):
                assert loop.time() < deadline, "no re-authorisation within 60 s"
                for _ in range(EVENTS_PER_ROUND):
                    event = ao.ToolEvent(name="t", params={"agent": index, "i": recorded})
                    await ledger.record(session, event)
                    recorded += 1
                assert await session.flush(30)
        return session

    sessions = await asyncio.gather(*(agent(i) for i in range(SESSIONS)))
    assert await client.close()

    foreign_tokens = sum(
        1 for hop in balancer.hops if hop.issuer >= 0 and hop.issuer != hop.upstream
    )
    reauths = sum(1 for hop in balancer.hops if hop.call == "/v2/reauthorize_jwt")
    result = await ledger.check(
        reader,
        client,
        f"{COLLECTORS} collectors, round-robin (PostgreSQL)",
        {"re-authorisations": reauths, "tokens used on another collector": foreign_tokens},
    )
    assert result.recorded >= SESSIONS * MIN_EVENTS
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert result.stored == result.recorded

    for session in sessions:
        hops = v2_hops(balancer, session.session_id)
        calls = [hop.call for hop in hops]
        assert calls[0] == "/v2/create_session" and calls[-1] == "/v2/update_session"
        # No stickiness: every call of the session went to another collector than the one before.
        assert hopped(hop.upstream for hop in hops)
        # The only refusals are expired tokens, each followed by a re-authorisation that worked
        # on another collector than the one that refused.
        for i, hop in enumerate(hops):
            if hop.status != 200:
                assert (hop.status, hop.message) == (401, "Expired Token"), hop
                assert hops[i + 1].call == "/v2/reauthorize_jwt" and hops[i + 1].status == 200
        # Tokens issued by one collector were accepted by the others (a shared secret).
        assert any(
            hop.status == 200 and hop.issuer >= 0 and hop.issuer != hop.upstream for hop in hops
        ), hops
        stored = await reader.get_session(session.session_id)
        assert stored is not None and stored["end_state"] == "Success"
        assert stored["events_total"] == len(ledger.recorded[session.session_id])
    # Each collector took events and renewed tokens.
    for call in ("create_events", "reauthorize_jwt"):
        served = {hop.upstream for hop in balancer.hops if hop.call == f"/v2/{call}"}
        assert served == set(range(COLLECTORS)), (call, served)
    # One secret in the database, made by whichever collector started first.
    rows = await fetch(cluster.dsn, "SELECT count(*) FROM settings WHERE key = 'jwt_secret'")
    assert rows[0][0] == 1


@pytest.mark.asyncio
async def test_read_cursors_of_one_collector_page_on_another(
    cluster: Cluster, balancer: RoundRobinBalancer
) -> None:
    handle = cluster.handle("cursors")
    handle.url = balancer.url
    headers = {"X-Agentops-Api-Key": handle.api_key}
    session_ids = []
    for index in range(3):
        session_id, jwt = await handle.v2_create_session(tags=[f"s{index}"])
        events = [
            {
                "id": str(uuid.uuid4()),
                "event_type": "actions",
                "init_timestamp": "2026-01-01T00:00:00Z",
                "end_timestamp": "2026-01-01T00:00:00Z",
                "params": {"i": i},
            }
            for i in range(25)
        ]
        answer = await handle.v2_post("create_events", {"events": events}, jwt=jwt)
        assert answer.status == 200 and answer.body["stored"] == 25
        session_ids.append((session_id, [e["id"] for e in events]))

    # A session's events, 7 a page: each page is asked of another collector than the last.
    session_id, ids = session_ids[0]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "7", **({"cursor": cursor} if cursor else {})}
        path = f"/api/sessions/{session_id}/events?" + urllib.parse.urlencode(params)
        answer = await handle.request("GET", path, headers=headers)
        assert answer.status == 200, answer.body
        seen += [event["id"] for event in answer.body["events"]]
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # arrival order, nothing skipped or repeated
    pages = [hop for hop in balancer.hops_of(session_id) if hop.call.endswith("/events")]
    assert len(pages) == 4 and hopped(hop.upstream for hop in pages)

    # The project's sessions, one a page: the global rotation moves each page to the next one.
    listed: list[str] = []
    params = {"limit": "1"}
    upstreams = []
    while True:
        answer = await handle.request(
            "GET", "/api/sessions?" + urllib.parse.urlencode(params), headers=headers
        )
        assert answer.status == 200, answer.body
        upstreams.append(balancer.hops[-1].upstream)
        listed += [session["id"] for session in answer.body["sessions"]]
        if answer.body["next_cursor"] is None:
            break
        params["cursor"] = answer.body["next_cursor"]
    assert listed == [sid for sid, _ in reversed(session_ids)]  # newest first
    assert hopped(upstreams)


# --- (b) a revoked key, refused everywhere ---------------------------------------------------


@pytest.mark.asyncio
async def test_key_revoked_against_the_database_is_refused_by_every_collector_in_time(
    cluster: Cluster,
) -> None:
    handle = cluster.handle("revoked")
    collectors = [CollectorHandle(p, handle.project_id, handle.api_key) for p in cluster.processes]

    async def create_session_status(collector: CollectorHandle) -> tuple[int, Any]:
        body = {"session": {"session_id": str(uuid.uuid4()), "tags": []}}
        answer = await collector.v2_post("create_session", body, api_key=handle.api_key)
        return answer.status, answer.body

    # Every collector accepts the key, so every one has it in its cache now.
    for collector in collectors:
        assert (await create_session_status(collector))[0] == 200

    started = time.monotonic()  # the revocation commits after this moment
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentops_async",
        "keys",
        "revoke",
        handle.api_key,
        "--database",
        cluster.dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    assert err.decode().startswith(f"revoked (project {handle.project_id})"), (out, err)

    refused_after: list[float] = []
    for collector in collectors:

        async def refused(collector: CollectorHandle = collector) -> bool:
            status, body = await create_session_status(collector)
            if status == 401:
                assert body == {"message": "invalid or revoked API key"}
                return True
            assert status == 200, (status, body)  # still trusted from the cache: allowed
            return False

        await wait_for(refused, "the revoked key to be refused", KEY_CACHE_SECONDS + 10)
        refused_after.append(time.monotonic() - started)
    # Within the documented time (plus what one poll and one request take on a busy machine).
    assert max(refused_after) <= KEY_CACHE_SECONDS + 1.5, refused_after
    # And for everything that takes the key: re-authorisation and the read API too.
    for collector in collectors:
        answer = await collector.v2_post(
            "reauthorize_jwt", {"session_id": str(uuid.uuid4())}, api_key=handle.api_key
        )
        assert answer.status == 401
        answer = await collector.request(
            "GET", "/api/sessions", headers={"X-Agentops-Api-Key": handle.api_key}
        )
        assert answer.status == 401


# --- (c) several collectors migrating an empty database at once ------------------------------


@pytest.mark.parametrize("attempt", range(2))
def test_collectors_starting_at_once_migrate_an_empty_database_once(
    attempt: int, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    cluster = start_cluster(postgres_server, tmp_path)
    try:
        for process in cluster.processes:  # all came up and serve
            assert http_request("GET", f"{process.url}/health").status == 200
        versions = asyncio.run(fetch(cluster.dsn, "SELECT version FROM schema_version"))
        assert sorted(row[0] for row in versions) == list(range(1, len(_MIGRATIONS) + 1))
        logs = cluster.logs()
        migrated = sum(log.count("postgres schema migrated to version 1\n") for log in logs)
        assert migrated == 1, logs
        for log in logs:
            assert "ERROR" not in log and "Traceback" not in log, log
        secrets = asyncio.run(fetch(cluster.dsn, "SELECT value FROM settings"))
        assert len(secrets) == 1
        # A project made through one collector works on the others (same schema, same secret).
        handle = cluster.handle("migrated", index=2)
        for process in cluster.processes:
            answer = http_request(
                "POST",
                f"{process.url}/v2/create_session",
                json_body={"session": {"session_id": str(uuid.uuid4())}},
                headers={"X-Agentops-Api-Key": handle.api_key},
            )
            assert answer.status == 200, answer.body
    finally:
        for process in cluster.processes:
            process.stop()
