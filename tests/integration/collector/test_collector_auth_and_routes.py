"""The split collector end to end: the project-token seam on a real collector, and the read
routes served over nothing but the read side of the storage (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentops_async.collector import Collector, CollectorSettings, Storage
from agentops_async.collector._auth import new_project, new_secret
from agentops_async.collector._context import Context
from agentops_async.collector._jwt import JwtSigner
from agentops_async.collector._storage import SessionWrite
from agentops_async.collector.routes import _reads as read_routes

pytestmark = pytest.mark.asyncio


async def _post(
    http: aiohttp.ClientSession, url: str, body: Any, **headers: str
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def test_project_token_is_refused_on_session_calls_naming_the_token_kind(
    database: str,
) -> None:
    async with Collector(database=database, port=0) as collector, aiohttp.ClientSession() as http:
        api_key = await collector.create_project("seam")
        session_id = str(uuid.uuid4())
        status, created = await _post(
            http,
            f"{collector.url}/v2/create_session",
            {"session": {"session_id": session_id}},
            **{"X-Agentops-Api-Key": api_key},
        )
        assert status == 200
        signer = JwtSigner(await collector.storage.get_secret(new_secret()), 3600.0)
        project_id = signer.verify(created["jwt"]).project_id
        event = {"id": str(uuid.uuid4()), "event_type": "actions", "init_timestamp": None}

        project = signer.issue(None, project_id)
        status, answer = await _post(
            http,
            f"{collector.url}/v2/create_events",
            {"events": [event]},
            Authorization=f"Bearer {project}",
        )
        assert status == 401
        assert "project token" in answer["message"]
        assert "create_session" in answer["message"]

        status, answer = await _post(
            http,
            f"{collector.url}/v2/create_events",
            {"events": [event]},
            Authorization=f"Bearer {created['jwt']}",
        )
        assert (status, answer["stored"]) == (200, 1)
        stored = await collector.storage.event_counts([session_id])
        assert stored == {session_id: {"actions": 1}}


class _ReadSide:
    """A storage that has only the read side (and the two lookups of auth and ownership)."""

    _ALLOWED = frozenset(
        {
            "list_sessions",
            "get_session",
            "event_counts",
            "llm_usage",
            "list_events",
            "project_for_key",
            "session_project",
        }
    )

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        if name not in self._ALLOWED:
            raise AttributeError(f"the read side has no {name}")
        return getattr(self._storage, name)


@pytest_asyncio.fixture
async def read_only_api(storage: Storage) -> AsyncIterator[tuple[TestClient, str, str]]:
    project_id, api_key = await new_project(storage, "reader")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(
        SessionWrite(
            session_id=session_id,
            project_id=project_id,
            init_timestamp="2026-01-01T00:00:00+00:00",
            init_ts=1767225600.0,
            tags=["read-side"],
        )
    )
    await storage.insert_events(
        [(session_id, f"e{i}", "tools", None, None, f'{{"id":"e{i}"}}') for i in range(3)]
    )
    ctx = Context(_ReadSide(storage), JwtSigner(b"r" * 32, 60.0), CollectorSettings())  # type: ignore[arg-type]
    app = web.Application()
    app.on_cleanup.append(ctx.close)
    read_routes.add_routes(app, ctx)
    async with TestClient(TestServer(app)) as client:
        yield client, api_key, session_id


async def test_read_routes_are_served_by_the_read_side_of_storage_alone(
    read_only_api: tuple[TestClient, str, str],
) -> None:
    client, api_key, session_id = read_only_api
    headers = {"X-Agentops-Api-Key": api_key}
    listing = await (await client.get("/api/sessions", headers=headers)).json()
    assert [(s["id"], s["tags"], s["events_total"]) for s in listing["sessions"]] == [
        (session_id, ["read-side"], 3)
    ]
    one = await (await client.get(f"/api/sessions/{session_id}", headers=headers)).json()
    assert one["event_counts"] == {"tools": 3}
    response = await client.get(f"/api/sessions/{session_id}/events?limit=2", headers=headers)
    page = await response.json()
    assert [e["id"] for e in page["events"]] == ["e0", "e1"]
    response = await client.get(
        f"/api/sessions/{session_id}/events",
        params={"cursor": page["next_cursor"]},
        headers=headers,
    )
    assert [e["id"] for e in (await response.json())["events"]] == ["e2"]
