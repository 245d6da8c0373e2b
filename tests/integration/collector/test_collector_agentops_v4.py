"""The collector as a backend of the agentops SDK 0.4 wire protocol: the project token, OTLP
traces that become sessions, and spans that become typed events (on both storage backends)."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from typing import Any

import pytest
from _schema import downgrade
from _servers import CollectorHandle

from agentops_async._spans import span_event_id
from agentops_async.collector import _auth
from agentops_async.collector._storage import SessionWrite, open_storage

pytestmark = pytest.mark.asyncio


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        values = [{"stringValue": v} for v in value]
        return {"key": key, "value": {"arrayValue": {"values": values}}}
    return {"key": key, "value": {"stringValue": value}}


def _span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    start: int,
    end: int,
    attributes: dict[str, Any],
    status: int = 0,
    message: str = "",
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent or "",
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": [_attr(k, v) for k, v in attributes.items()],
        "status": {"code": status, "message": message},
    }


def _export(*spans: dict[str, Any]) -> dict[str, Any]:
    resource = [_attr("service.name", "agent"), _attr("host.name", "box"), _attr("cpu.count", 8)]
    return {
        "resourceSpans": [
            {"resource": {"attributes": resource}, "scopeSpans": [{"spans": list(spans)}]}
        ]
    }


async def _token(collector: CollectorHandle, api_key: str | None = None) -> str:
    answer = await collector.request(
        "POST", "/v3/auth/token", json_body={"api_key": api_key or collector.api_key}
    )
    assert answer.status == 200, answer.body
    assert answer.body["project_id"] == collector.project_id
    assert answer.body["project_prem_status"] == "free"
    return str(answer.body["token"])


async def _send(collector: CollectorHandle, token: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await collector.request(
        "POST", "/v1/traces", json_body=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 200, answer.body
    return dict(answer.body)


async def test_v3_auth_token_answers_a_project_token_that_v1_traces_accepts(
    collector: CollectorHandle,
) -> None:
    token = await _token(collector)
    assert token.count(".") == 2
    trace_id = os.urandom(16).hex()
    now = time.time_ns()
    root = _span(trace_id, "00000000000000a1", None, "s.session", now, now + 1000, {})
    assert await _send(collector, token, _export(root)) == {}
    session = await collector.get_session(str(uuid.UUID(hex=trace_id)))
    assert session is not None and session["trace_id"] == trace_id


async def test_v3_auth_token_refuses_unknown_and_revoked_keys(collector: CollectorHandle) -> None:
    unknown = await collector.request(
        "POST", "/v3/auth/token", json_body={"api_key": str(uuid.uuid4())}
    )
    assert unknown.status == 401
    assert unknown.body == {"message": "invalid or revoked API key"}
    revoked_key = collector.new_api_key("revoked")
    storage = open_storage(collector.database)
    await storage.open()
    try:
        assert await storage.revoke_key(_auth.hash_key(revoked_key)) is not None
    finally:
        await storage.close()
    revoked = await collector.request("POST", "/v3/auth/token", json_body={"api_key": revoked_key})
    assert revoked.status == 401
    assert revoked.body == {"message": "invalid or revoked API key"}
    assert revoked_key not in revoked.raw.decode()


async def test_a_trace_becomes_a_session_with_typed_events_children_first(
    collector: CollectorHandle,
) -> None:
    token = await _token(collector)
    trace_id = os.urandom(16).hex()
    session_id = str(uuid.UUID(hex=trace_id))
    t0 = time.time_ns() - 10_000_000_000
    sec = 1_000_000_000
    llm = _span(trace_id, "00000000000000b2", "00000000000000b1", "openai.chat", t0 + sec,
                t0 + 2 * sec, {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                               "gen_ai.usage.prompt_tokens": 1000,
                               "gen_ai.usage.completion_tokens": 500})  # fmt: skip
    tool = _span(trace_id, "00000000000000b3", "00000000000000b1", "search.tool", t0 + 2 * sec,
                 t0 + 3 * sec, {"agentops.span.kind": "tool", "agentops.entity.name": "search",
                                "agentops.tool.input": '{"q": "x"}',
                                "gen_ai.usage.total_cost": 0.5})  # fmt: skip
    agent = _span(trace_id, "00000000000000b4", "00000000000000b1", "planner.agent", t0 + sec,
                  t0 + 4 * sec, {"agentops.span.kind": "agent",
                                 "agentops.entity.name": "planner"})  # fmt: skip
    failing = _span(trace_id, "00000000000000b5", "00000000000000b4", "step.task", t0 + 3 * sec,
                    t0 + 4 * sec, {"agentops.span.kind": "task"}, status=2,
                    message="boom")  # fmt: skip
    # the children arrive first: the session exists, RUNNING from the earliest of them
    assert await _send(collector, token, _export(llm, tool, agent, failing)) == {}
    running = await collector.get_session(session_id)
    assert running is not None
    assert running["state"] == "RUNNING"
    assert running["trace_id"] == trace_id
    assert running["end_timestamp"] is None

    root = _span(trace_id, "00000000000000b1", None, "my.session", t0, t0 + 5 * sec,
                 {"agentops.span.kind": "session", "agentops.tags": ["alpha", "beta"],
                  "agentops.session.end_state": "Fail"})  # fmt: skip
    assert await _send(collector, token, _export(root)) == {}
    assert await _send(collector, token, _export(root, llm)) == {}  # a retry: stored once

    session = await collector.get_session(session_id)
    assert session is not None
    assert session["state"] == "FAILED"
    assert session["end_state"] == "Fail"
    assert session["tags"] == ["alpha", "beta"]
    assert session["init_timestamp"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(t0 / 1e9)))
    assert session["event_counts"] == {"llms": 1, "tools": 1, "actions": 3, "errors": 1}
    assert float(session["token_cost"]) > 0

    events = {e["id"]: e for e in await collector.get_events(session_id)}
    llm_event = events[span_event_id(trace_id, "00000000000000b2")]
    assert llm_event["event_type"] == "llms"
    assert (llm_event["model"], llm_event["prompt_tokens"], llm_event["completion_tokens"]) == (
        "gpt-4o-mini", 1000, 500,
    )  # fmt: skip
    assert llm_event["params"]["parent_span_id"] == "00000000000000b1"
    tool_event = events[span_event_id(trace_id, "00000000000000b3")]
    assert tool_event["event_type"] == "tools"
    assert tool_event["name"] == "search"
    assert tool_event["params"]["arguments"] == {"q": "x"}
    assert tool_event["params"]["attributes"]["gen_ai.usage.total_cost"] == 0.5
    assert events[span_event_id(trace_id, "00000000000000b4")]["action_type"] == "agent"
    error = events[span_event_id(trace_id, "00000000000000b5", "error")]
    assert error["event_type"] == "errors"
    assert error["details"] == "boom"
    assert error["trigger_event_id"] == span_event_id(trace_id, "00000000000000b5")


async def test_root_status_decides_the_end_state_without_an_end_state_attribute(
    collector: CollectorHandle,
) -> None:
    now = time.time_ns()
    states = {}
    for status in (0, 1, 2):
        trace_id = os.urandom(16).hex()
        root = _span(trace_id, "00000000000000c1", None, "s", now, now + 10, {}, status=status)
        headers = {"X-Agentops-Api-Key": collector.api_key}
        answer = await collector.request(
            "POST", "/v1/traces", json_body=_export(root), headers=headers
        )
        assert answer.status == 200
        session = await collector.get_session(str(uuid.UUID(hex=trace_id)))
        assert session is not None
        states[status] = (session["state"], session["end_state"])
    assert states == {
        0: ("INDETERMINATE", "Indeterminate"),
        1: ("SUCCEEDED", "Success"),
        2: ("FAILED", "Fail"),
    }


async def test_a_trace_of_another_projects_session_is_refused_in_partial_success(
    collector: CollectorHandle,
) -> None:
    trace_id = os.urandom(16).hex()
    now = time.time_ns()
    body = _export(_span(trace_id, "00000000000000d1", None, "s", now, now + 10, {}))
    assert await _send(collector, await _token(collector), body) == {}
    other = collector.new_api_key()
    answer = await collector.request(
        "POST", "/v1/traces", json_body=body, headers={"Authorization": f"Bearer {other}"}
    )
    assert answer.status == 200
    assert answer.body["partialSuccess"]["rejectedSpans"] == 1
    assert "another project" in answer.body["partialSuccess"]["errorMessage"]


async def test_project_tokens_live_project_token_expiry_not_jwt_expiry() -> None:
    import base64
    import json

    import aiohttp

    from agentops_async.collector import Collector

    async with (
        Collector(database=":memory:", port=0, jwt_expiry=60, project_token_expiry=86400) as server,
        aiohttp.ClientSession() as http,
    ):
        key = await server.create_project("tokens")
        async with http.post(f"{server.url}/v3/auth/token", json={"api_key": key}) as answer:
            token = (await answer.json())["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["session_id"] is None
    assert claims["exp"] - claims["iat"] == pytest.approx(86400, abs=0.01)


async def _cli_sessions_json(collector: CollectorHandle) -> list[dict[str, Any]]:
    """``agentops-async sessions list --json`` against the collector (the CLI's read path)."""
    import asyncio
    import json
    import sys

    from _servers import REPO_ROOT

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentops_async", "sessions", "list", "--json",
        "--endpoint", collector.url, "--api-key", collector.api_key,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return list(json.loads(out))


async def test_tool_span_costs_count_in_the_session_cost(collector: CollectorHandle) -> None:
    token = await _token(collector)
    trace_id = os.urandom(16).hex()
    session_id = str(uuid.UUID(hex=trace_id))
    t0 = time.time_ns() - 10_000_000_000
    sec = 1_000_000_000
    root_id = "00000000000000c1"

    def tool(span_id: str, cost: Any) -> dict[str, Any]:
        return _span(trace_id, span_id, root_id, "search.tool", t0 + sec, t0 + 2 * sec,
                     {"agentops.span.kind": "tool", "gen_ai.usage.total_cost": cost})  # fmt: skip

    # gpt-4o-mini, 1000 prompt + 500 completion tokens: 0.00015 + 0.0003 = 0.00045 dollars
    llm = _span(trace_id, "00000000000000c2", root_id, "openai.chat", t0 + sec, t0 + 2 * sec,
                {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                 "gen_ai.usage.prompt_tokens": 1000,
                 "gen_ai.usage.completion_tokens": 500})  # fmt: skip
    priced = tool("00000000000000c3", 0.25)
    # not usable as costs (not a number, negative, above the collector's limit): kept, not counted
    ignored = [tool("00000000000000c4", "0.5"), tool("00000000000000c5", -1.0),
               tool("00000000000000c6", 1e13), tool("00000000000000c7", True)]  # fmt: skip
    # a cost on a span that is not a tool call is not a tool cost
    agent = _span(trace_id, "00000000000000c8", root_id, "planner.agent", t0 + sec, t0 + 2 * sec,
                  {"agentops.span.kind": "agent", "gen_ai.usage.total_cost": 9.0})  # fmt: skip
    root = _span(trace_id, root_id, None, "s.session", t0, t0 + 3 * sec,
                 {"agentops.span.kind": "session"}, status=1)  # fmt: skip
    assert await _send(collector, token, _export(llm, priced, *ignored, agent, root)) == {}
    assert await _send(collector, token, _export(priced)) == {}  # a retry: counted once

    session = await collector.get_session(session_id)
    assert session is not None
    assert session["event_counts"] == {"llms": 1, "tools": 5, "actions": 2}
    assert session["token_cost"] == "0.25045"
    listed = {s["id"]: s for s in await collector.list_sessions()}
    assert listed[session_id]["token_cost"] == "0.25045"
    cli = {s["id"]: s for s in await _cli_sessions_json(collector)}
    assert cli[session_id]["token_cost"] == "0.25045"
    events = {e["id"]: e for e in await collector.get_events(session_id, event_type="tools")}
    unusable = events[span_event_id(trace_id, "00000000000000c4")]
    assert unusable["params"]["attributes"]["gen_ai.usage.total_cost"] == "0.5"


async def test_update_session_token_cost_counts_tool_spans_of_its_trace(
    collector: CollectorHandle,
) -> None:
    trace_id = os.urandom(16).hex()
    session_id, jwt = await collector.v2_create_session(trace_id=trace_id)
    now = time.time_ns()
    tool = _span(trace_id, "00000000000000d2", "00000000000000d1", "lookup.tool", now, now + 1000,
                 {"agentops.span.kind": "tool", "gen_ai.usage.total_cost": 0.125})  # fmt: skip
    assert await _send(collector, await _token(collector), _export(tool)) == {}
    assert (await collector.get_events(session_id))[0]["event_type"] == "tools"
    answer = await collector.v2_post(
        "update_session", {"session": {"session_id": session_id, "end_state": "Success"}}, jwt=jwt
    )
    assert answer.status == 200, answer.body
    assert answer.body["token_cost"] == "0.125"


async def test_a_version_3_database_is_migrated_to_version_4(database: str) -> None:
    """Version 4 adds the index the tools' cost sum read (PostgreSQL's version 8 drops it: the
    rollups have the costs); older data keeps being summed."""
    sid = str(uuid.uuid4())
    storage = open_storage(database)
    await storage.open()
    await storage.create_project("p", "p", "hash")
    await storage.upsert_session(SessionWrite(session_id=sid, project_id="p"))
    await storage.insert_events(
        [(sid, "t1", "tools", None, None, '{"id": "t1"}', None, None, None, 0.5)]
    )
    await storage.close()
    await downgrade(database, 3)
    index_sql = "SELECT count(*) FROM {} WHERE indexname = 'events_tool_cost_by_session'"
    if database.startswith("postgresql://"):
        import asyncpg

        conn = await asyncpg.connect(database)
        assert await conn.fetchval(index_sql.format("pg_indexes")) == 0
        await conn.close()
    storage = open_storage(database)
    await storage.open()
    try:
        assert [(u.session_id, u.explicit_cost) for u in await storage.llm_usage([sid])] == [
            (sid, 0.5)
        ]
    finally:
        await storage.close()
    if database.startswith("postgresql://"):
        conn = await asyncpg.connect(database)
        # version 8 dropped it again: the costs are read from the rollups (version 6)
        assert await conn.fetchval(index_sql.format("pg_indexes")) == 0
        assert await conn.fetchval("SELECT count(*) FROM schema_version WHERE version = 4") == 1
        await conn.close()
    else:
        with sqlite3.connect(database) as sconn:
            version_4 = "SELECT count(*) FROM schema_version WHERE version = 4"
            assert sconn.execute(version_4).fetchone() == (1,)
            # the sum searches the partial index: only the session's costed tools rows are read
            plan = sconn.execute(
                "EXPLAIN QUERY PLAN SELECT session_id, sum(cost) FROM events"
                " WHERE session_id IN (?) AND event_type = 'tools' AND cost IS NOT NULL"
                " GROUP BY session_id",
                (sid,),
            ).fetchall()
            assert "USING INDEX events_tool_cost_by_session (session_id=?" in str(plan), plan
