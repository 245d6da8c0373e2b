"""agentops 0.4's uploads and links: /v4/logs/upload/, /v4/objects/upload/, GET /sessions?trace_id=
and the schema version 3 that stores them (both storage backends)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest
from _schema import downgrade
from _servers import CollectorHandle

from agentops_async.collector import open_storage
from agentops_async.collector._otlp import ns_to_iso
from agentops_async.collector._storage import SessionWrite

pytestmark = pytest.mark.asyncio


async def _token(collector: CollectorHandle) -> str:
    answer = await collector.request(
        "POST", "/v3/auth/token", json_body={"api_key": collector.api_key}
    )
    assert answer.status == 200
    return str(answer.body["token"])


def _root(trace_id: str, start: int) -> dict[str, Any]:
    span = {
        "traceId": trace_id, "spanId": "00000000000000e1", "name": "s.session",
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 10**9),
        "status": {"code": 1},
    }  # fmt: skip
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


async def test_a_log_upload_before_the_spans_is_stored_with_the_traces_session(
    collector: CollectorHandle,
) -> None:
    token = await _token(collector)
    trace_id = os.urandom(16).hex()
    session_id = str(uuid.UUID(hex=trace_id))
    headers = {"Authorization": f"Bearer {token}", "Trace-Id": str(int(trace_id, 16))}
    answer = await collector.request(
        "POST", "/v4/logs/upload/", json_body={"body": "hello\nworld"}, headers=headers
    )
    assert answer.status == 200, answer.body
    assert answer.body["size"] == len("hello\nworld")
    assert answer.body["url"].endswith(f"/api/sessions/{session_id}/logs")
    # the spans come later: same session, started at the span's start, completed by the root
    start = time.time_ns() - 60 * 10**9
    traces = await collector.request(
        "POST", "/v1/traces", json_body=_root(trace_id, start),
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert traces.status == 200 and traces.body == {}
    session = await collector.get_session(session_id)
    assert session is not None
    assert session["state"] == "SUCCEEDED"
    assert session["init_timestamp"] == ns_to_iso(start)  # not the upload's "now"
    logs = await collector.request(
        "GET", f"/api/sessions/{session_id}/logs",
        headers={"X-Agentops-Api-Key": collector.api_key},
    )  # fmt: skip
    assert logs.status == 200
    assert [entry["body"] for entry in logs.body["logs"]] == ["hello\nworld"]
    other = await collector.request(
        "GET", f"/api/sessions/{session_id}/logs",
        headers={"X-Agentops-Api-Key": collector.new_api_key()},
    )  # fmt: skip
    assert other.status == 404


async def test_log_upload_refuses_a_bad_trace_id_and_a_missing_credential(
    collector: CollectorHandle,
) -> None:
    token = await _token(collector)
    for bad in ("", "0af7651916cd43dd8448eb211c80319c", "-5", str(2**128)):
        answer = await collector.request(
            "POST", "/v4/logs/upload/", json_body={"body": "x"},
            headers={"Authorization": f"Bearer {token}", "Trace-Id": bad},
        )  # fmt: skip
        assert answer.status == 400
        assert answer.body["message"].startswith("Trace-Id: expected the trace id as a decimal")
    unauthenticated = await collector.request(
        "POST", "/v4/logs/upload/", json_body={"body": "x"}, headers={"Trace-Id": "12"}
    )
    assert unauthenticated.status == 401


async def test_an_uploaded_object_is_served_back(collector: CollectorHandle) -> None:
    token = await _token(collector)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    answer = await collector.request(
        "POST", "/v4/objects/upload/", data=png,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
    )  # fmt: skip
    assert answer.status == 200
    assert answer.body["size"] == len(png)
    path = answer.body["url"].removeprefix(collector.url)
    served = await collector.request("GET", path)
    assert served.status == 200
    assert served.raw == png
    html = await collector.request(
        "POST", "/v4/objects/upload/", data=b"<script>x</script>",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/html"},
    )  # fmt: skip
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.get(html.body["url"]) as response,
    ):
        assert response.content_type == "application/octet-stream"  # never rendered here
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # agentops 0.4 sends an object as JSON {"body": "<text>"}: the text is the object
    wrapped = await collector.request(
        "POST", "/v4/objects/upload/", json_body={"body": '{"input": "hi"}'},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert wrapped.body["size"] == len('{"input": "hi"}')
    text = await collector.request("GET", wrapped.body["url"].removeprefix(collector.url))
    assert text.raw == b'{"input": "hi"}'
    missing = await collector.request("GET", f"/v4/objects/{uuid.uuid4()}")
    assert missing.status == 404


async def test_the_dashboard_link_redirects_to_the_session_of_the_trace(
    collector: CollectorHandle,
) -> None:
    import aiohttp

    trace_id = os.urandom(16).hex()
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{collector.url}/sessions?trace_id={trace_id}", allow_redirects=False) as r,
    ):
        assert r.status == 302
        assert r.headers["Location"] == f"/sessions/{session_id}"
    unknown = await collector.request("GET", f"/sessions?trace_id={os.urandom(16).hex()}")
    assert unknown.status == 404
    bad = await collector.request("GET", "/sessions?trace_id=nope")
    assert bad.status == 400


async def test_a_version_2_database_is_migrated_to_version_3(database: str) -> None:
    storage = open_storage(database)
    await storage.open()
    await storage.create_project("p", "p", "hash")
    await storage.upsert_session(SessionWrite(session_id="s1", project_id="p"))
    await storage.close()
    await downgrade(database, 2)
    storage = open_storage(database)
    await storage.open()
    try:
        await storage.add_session_log("s1", "after the migration")
        assert [body for body, _ in await storage.session_logs("s1")] == ["after the migration"]
        assert (await storage.get_session("s1")) is not None  # the old data is still there
    finally:
        await storage.close()
