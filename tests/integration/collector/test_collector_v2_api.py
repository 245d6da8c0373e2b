"""The AgentOps v2 API of the collector, over loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _servers import CollectorHandle

pytestmark = pytest.mark.asyncio


def _events(session_id: str | None = None, n: int = 3) -> list[dict[str, Any]]:
    base: list[dict[str, Any]] = [
        {
            "id": str(uuid.uuid4()),
            "event_type": "llms",
            "init_timestamp": "2026-01-01T00:00:00+00:00",
            "end_timestamp": "2026-01-01T00:00:01+00:00",
            "model": "gpt-4o-mini",
            "prompt": "What is 2+2?",
            "completion": "4",
            "prompt_tokens": 1000,
            "completion_tokens": 500,
        },
        {
            "id": str(uuid.uuid4()),
            "event_type": "tools",
            "name": "search",
            "params": {"q": "x"},
            "returns": {"hits": 3},
        },
        {
            "id": str(uuid.uuid4()),
            "event_type": "actions",
            "action_type": "plan",
            "params": {"steps": [1, 2]},
        },
        {"id": str(uuid.uuid4()), "event_type": "errors", "error_type": "ValueError"},
    ]
    events = (base * (n // len(base) + 1))[:n]
    events = [dict(e, id=str(uuid.uuid4())) for e in events]
    if session_id:
        for e in events:
            e["session_id"] = session_id
    return events


async def test_round_trip_stores_session_events_and_cost(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session(
        tags=["planner", "v2"], host_env={"OS": {"OS": "Linux"}}, trace_id="ab" * 16
    )
    sent = _events(session_id, 4)
    answer = await collector.v2_post("create_events", {"events": sent}, jwt=jwt)
    assert answer.status == 200, answer.body
    assert answer.body["stored"] == 4
    end = {
        "session_id": session_id,
        "end_timestamp": "2099-01-01T00:00:00Z",
        "end_state": "Fail",
        "end_state_reason": "tool broke",
        "tags": ["planner", "v2", "late"],
        "video": "http://example.invalid/v.mp4",
    }
    answer = await collector.v2_post("update_session", {"session": end}, jwt=jwt)
    assert answer.status == 200, answer.body
    assert answer.body["token_cost"] == "0.00045"  # 1000 * 0.15/1M + 500 * 0.60/1M

    stored = await collector.get_session(session_id)
    assert stored is not None
    assert stored["state"] == "FAILED"
    assert stored["end_state"] == "Fail"
    assert stored["end_state_reason"] == "tool broke"
    assert stored["tags"] == ["planner", "v2", "late"]
    assert stored["video"] == "http://example.invalid/v.mp4"
    assert stored["trace_id"] == "ab" * 16
    assert stored["host_env"] == {"OS": {"OS": "Linux"}}
    assert stored["event_counts"] == {"actions": 1, "errors": 1, "llms": 1, "tools": 1}
    assert stored["token_cost"] == "0.00045"
    assert stored["duration_s"] > 0
    events = await collector.get_events(session_id)
    assert events == sent  # the full JSON as sent, in arrival order


async def test_running_session_is_listed_as_running(collector: CollectorHandle) -> None:
    session_id, _ = await collector.v2_create_session(end_state="Indeterminate")
    stored = await collector.get_session(session_id)
    assert stored is not None
    assert stored["state"] == "RUNNING"
    assert stored["duration_s"] is None


async def test_same_batch_twice_is_stored_once(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    batch = {"events": _events(None, 50)}
    first = await collector.v2_post("create_events", batch, jwt=jwt)
    second = await collector.v2_post("create_events", batch, jwt=jwt)
    assert (first.body["stored"], second.body["stored"]) == (50, 0)
    assert [e["id"] for e in await collector.get_events(session_id)] == [
        e["id"] for e in batch["events"]
    ]


async def test_duplicate_ids_inside_one_batch_are_stored_once(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    event = _events(None, 1)[0]
    answer = await collector.v2_post("create_events", {"events": [event, event]}, jwt=jwt)
    assert answer.body["stored"] == 1
    assert len(await collector.get_events(session_id)) == 1


async def test_create_session_retry_is_idempotent(collector: CollectorHandle) -> None:
    session_id, _ = await collector.v2_create_session(tags=["a"])
    again, jwt = await collector.v2_create_session(session_id, tags=["a", "b"])
    assert again == session_id
    assert (await collector.get_session(session_id) or {})["tags"] == ["a", "b"]
    assert len(await collector.list_sessions()) == 1
    assert (await collector.v2_post("create_events", {"events": []}, jwt=jwt)).status == 200


async def test_projects_cannot_see_or_touch_each_other(collector: CollectorHandle) -> None:
    session_a, jwt_a = await collector.v2_create_session(tags=["a"])
    await collector.v2_post("create_events", {"events": _events(session_a, 2)}, jwt=jwt_a)
    key_b = collector.new_api_key("project-b")
    session_b, jwt_b = await collector.v2_create_session(api_key=key_b)

    # Read API: 404, as if A's session did not exist.
    assert await collector.get_session(session_a, api_key=key_b) is None
    events = await collector.request(
        "GET", f"/api/sessions/{session_a}/events", headers={"X-Agentops-Api-Key": key_b}
    )
    assert events.status == 404
    assert [s["id"] for s in await collector.list_sessions(api_key=key_b)] == [session_b]

    # Writes: B's token and key cannot reach A's session.
    answer = await collector.v2_post("create_events", {"events": _events(session_a, 1)}, jwt=jwt_b)
    assert answer.status == 403
    answer = await collector.v2_post("reauthorize_jwt", {"session_id": session_a}, api_key=key_b)
    assert answer.status == 403
    answer = await collector.v2_post(
        "create_session",
        {"session": {"session_id": session_a, "tags": ["hijack"]}},
        api_key=key_b,
    )
    assert answer.status == 403
    answer = await collector.v2_post(
        "update_session", {"session": {"session_id": session_a, "tags": ["x"]}}, jwt=jwt_b
    )
    assert answer.status == 403

    stored = await collector.get_session(session_a)
    assert stored is not None
    assert stored["tags"] == ["a"]
    assert stored["events_total"] == 2


async def test_events_may_name_another_session_of_the_same_project(
    collector: CollectorHandle,
) -> None:
    first, jwt = await collector.v2_create_session()
    second, _ = await collector.v2_create_session()
    answer = await collector.v2_post("create_events", {"events": _events(second, 2)}, jwt=jwt)
    assert answer.status == 200
    assert len(await collector.get_events(second)) == 2
    assert await collector.get_events(first) == []
    unknown = _events(str(uuid.uuid4()), 1)
    assert (await collector.v2_post("create_events", {"events": unknown}, jwt=jwt)).status == 404


async def test_expired_token_gets_401_and_reauthorization_works(
    collector_factory: Any, collector_backend: str
) -> None:
    handle: CollectorHandle = collector_factory(collector_backend, jwt_expiry=0.5)
    session_id, jwt = await handle.v2_create_session()
    batch = {"events": _events(None, 1)}
    assert (await handle.v2_post("create_events", batch, jwt=jwt)).status == 200

    deadline = time.monotonic() + 10
    while True:  # poll until the token has expired
        answer = await handle.v2_post("create_events", {"events": []}, jwt=jwt)
        if answer.status != 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert answer.status == 401
    assert answer.body == {"message": "Expired Token"}

    answer = await handle.v2_post(
        "reauthorize_jwt", {"session_id": session_id}, api_key=handle.api_key
    )
    assert answer.status == 200
    fresh = answer.body["jwt"]
    second = {"events": _events(None, 2)}
    assert (await handle.v2_post("create_events", second, jwt=fresh)).status == 200
    assert len(await handle.get_events(session_id)) == 3


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        ("create_events", b"{not json", "events"),
        ("create_events", {"events": [{"event_type": "llms"}]}, "id"),
        (
            "create_events",
            {"events": [{"id": "x", "event_type": "llms", "prompt_tokens": "lots"}]},
            "prompt_tokens",
        ),
        ("create_events", {"events": "nope"}, "events"),
        (
            "create_events",
            b'{"events": [{"id": "x", "event_type": "a", "n": "\xff"}]}',
            "events[0]",
        ),
        ("update_session", {"session": {"tags": "not-a-list"}}, "tags"),
        ("update_session", {"session": {"end_timestamp": "yesterday"}}, "end_timestamp"),
        ("create_agent", {"name": "no id"}, "id"),
    ],
)
async def test_malformed_bodies_get_400_naming_the_field(
    collector: CollectorHandle, call: str, body: Any, field: str
) -> None:
    _, jwt = await collector.v2_create_session()
    answer = await collector.v2_post(call, body, jwt=jwt)
    assert answer.status == 400
    assert field in answer.body["message"]


async def test_create_session_without_a_valid_id_gets_400(collector: CollectorHandle) -> None:
    for session in ({"tags": []}, {"session_id": "../../etc/passwd"}, {"session_id": 7}):
        answer = await collector.v2_post(
            "create_session", {"session": session}, api_key=collector.api_key
        )
        assert answer.status == 400
        assert "session_id" in answer.body["message"]


async def test_bad_credentials_get_401(collector: CollectorHandle) -> None:
    body = {"session": {"session_id": str(uuid.uuid4())}}
    for key in (None, "", str(uuid.uuid4()), "garbage"):
        answer = await collector.v2_post("create_session", body, api_key=key)
        assert answer.status == 401, key
    for jwt in (None, "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.AAAA"):
        answer = await collector.v2_post("create_events", {"events": []}, jwt=jwt)
        assert answer.status == 401, jwt
        assert answer.body["message"] in (
            "Invalid Token",
            "missing session token (Authorization: Bearer <jwt>)",
        )


async def test_oversize_body_gets_413(collector_factory: Any) -> None:
    handle: CollectorHandle = collector_factory("sqlite", max_body_size=10_000)
    _, jwt = await handle.v2_create_session()
    big = {"events": [{"id": "x", "event_type": "llms", "prompt": "y" * 20_000}]}
    answer = await handle.v2_post("create_events", big, jwt=jwt)
    assert answer.status == 413
    assert "too large" in answer.body["message"]
    small = {"events": _events(None, 2)}
    assert (await handle.v2_post("create_events", small, jwt=jwt)).status == 200


async def test_price_table_can_be_overridden(collector_factory: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"prompt": 2, "completion": 4}}))
    handle: CollectorHandle = collector_factory("sqlite", prices=prices)
    session_id, jwt = await handle.v2_create_session()
    events = [
        {"id": "1", "event_type": "llms", "model": "my-model-v2", "prompt_tokens": 1_000_000,
         "completion_tokens": 500_000},
        {"id": "2", "event_type": "llms", "model": "gpt-4o", "prompt_tokens": 1000,
         "completion_tokens": 100},
        {"id": "3", "event_type": "llms", "model": "unknown-model", "prompt_tokens": 10**6},
        {"id": "4", "event_type": "llms", "model": "gpt-4", "cost": 0.25, "prompt_tokens": 10**6},
    ]  # fmt: skip
    await handle.v2_post("create_events", {"events": events}, jwt=jwt)
    answer = await handle.v2_post("update_session", {"session": {"end_state": "Success"}}, jwt=jwt)
    # 2 + 2 (my-model prefix) + 0.0025 + 0.001 (gpt-4o) + 0 (unknown) + 0.25 (explicit cost)
    assert answer.body["token_cost"] == "4.2535"
    stored = await handle.get_session(session_id)
    assert stored is not None
    assert stored["state"] == "SUCCEEDED"


async def test_create_agent_and_developer_errors_are_accepted(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    answer = await collector.v2_post(
        "create_agent", {"id": str(uuid.uuid4()), "name": "a"}, jwt=jwt
    )
    assert answer.status == 200
    report = {"type": "ValueError", "message": "boom", "session_id": session_id, "host_env": {}}
    answer = await collector.v2_post("developer_errors", report, api_key=collector.api_key)
    assert answer.status == 200
    assert (await collector.v2_post("developer_errors", report)).status == 401


def _session_body(session_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "init_timestamp": "2026-01-01T00:00:00+00:00",
        "tags": [],
        **fields,
    }


async def test_create_session_answer_names_the_sessions_batch_path(
    collector: CollectorHandle,
) -> None:
    answer = await collector.v2_post(
        "create_session", {"session": _session_body(str(uuid.uuid4()))}, api_key=collector.api_key
    )
    assert answer.status == 200, answer.body
    assert answer.body["sessions_batch_path"] == "/v2/create_sessions"


async def test_create_sessions_stores_many_sessions_and_their_events_in_one_request(
    collector: CollectorHandle,
) -> None:
    existing, _ = await collector.v2_create_session(tags=["running"])
    ended, running = str(uuid.uuid4()), str(uuid.uuid4())
    ended_events, running_events, more = _events(ended, 3), _events(None, 2), _events(existing, 2)
    body = {
        "sessions": [
            {
                "session": _session_body(
                    ended,
                    tags=["a", "b"],
                    end_state="Success",
                    end_timestamp="2026-01-01T00:00:02+00:00",
                ),
                "events": ended_events,
            },
            {"session": _session_body(running), "events": running_events},
            {"session_id": existing, "events": more},  # only events of an existing session
        ]
    }
    answer = await collector.v2_post("create_sessions", body, api_key=collector.api_key)
    assert answer.status == 200, answer.body
    assert (answer.body["received"], answer.body["stored"]) == (7, 7)
    costs = {s["session_id"]: s["token_cost"] for s in answer.body["sessions"]}
    assert costs == {ended: "0.00045", running: "0.00045", existing: "0.00045"}

    stored = await collector.get_session(ended)
    assert stored is not None
    assert (stored["end_state"], stored["tags"]) == ("Success", ["a", "b"])
    stored = await collector.get_session(running)
    assert stored is not None and stored["state"] == "RUNNING"
    for session_id, sent in ((ended, ended_events), (running, running_events), (existing, more)):
        events = await collector.get_events(session_id)
        assert [e["id"] for e in events] == [e["id"] for e in sent]
    again = await collector.v2_post("create_sessions", body, api_key=collector.api_key)
    assert (again.status, again.body["stored"]) == (200, 0)  # idempotent


async def test_create_sessions_with_only_existing_sessions_stores_each_event_once(
    collector: CollectorHandle,
) -> None:
    # No session to write: on PostgreSQL the events are one COPY with no transaction around it.
    first, _ = await collector.v2_create_session()
    second, _ = await collector.v2_create_session()
    sent = {first: _events(first, 3), second: _events(None, 2)}
    body = {"sessions": [{"session_id": sid, "events": events} for sid, events in sent.items()]}
    answer = await collector.v2_post("create_sessions", body, api_key=collector.api_key)
    assert (answer.status, answer.body["received"], answer.body["stored"]) == (200, 5, 5)
    again = await collector.v2_post("create_sessions", body, api_key=collector.api_key)
    assert (again.status, again.body["received"], again.body["stored"]) == (200, 5, 0)
    more = _events(first, 1)
    mixed = {"sessions": [{"session_id": first, "events": [*sent[first], *more]}]}
    answer = await collector.v2_post("create_sessions", mixed, api_key=collector.api_key)
    assert (answer.status, answer.body["stored"]) == (200, 1)  # only the new id
    for sid, events in sent.items():
        expected = events + more if sid == first else events
        assert [e["id"] for e in await collector.get_events(sid)] == [e["id"] for e in expected]


async def test_create_sessions_refuses_what_the_standard_calls_refuse(
    collector: CollectorHandle,
) -> None:
    theirs, _ = await collector.v2_create_session(api_key=collector.new_api_key("other"))
    cases = [
        ({"session": _session_body(theirs)}, 403, f"session {theirs} belongs to another project"),
        ({"session_id": theirs, "events": _events(None, 1)}, 403, "belongs to another project"),
        ({"session_id": str(uuid.uuid4()), "events": []}, 404, "not found"),
        ({"session": {"tags": []}}, 400, "sessions[1].session.session_id: missing"),
        ({"events": []}, 400, "sessions[1]: give a session object"),
    ]
    for entry, status, message in cases:
        mine_id = str(uuid.uuid4())
        mine = {"session": _session_body(mine_id), "events": _events(None, 1)}
        answer = await collector.v2_post(
            "create_sessions", {"sessions": [mine, entry]}, api_key=collector.api_key
        )
        assert answer.status == status, (entry, answer.body)
        assert message in answer.body["message"], answer.body
        assert await collector.get_session(mine_id) is None  # all or nothing
    no_key = await collector.v2_post("create_sessions", {"sessions": []})
    assert no_key.status == 401
