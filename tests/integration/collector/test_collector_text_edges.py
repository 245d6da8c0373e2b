"""Text edge cases answered alike on SQLite and PostgreSQL (issue 10, item 13): long tags, NUL."""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

import pytest
from _servers import CollectorHandle

from agentops_async._limits import MAX_TAG_LENGTH

pytestmark = pytest.mark.asyncio


def _key(collector: CollectorHandle) -> dict[str, str]:
    return {"X-Agentops-Api-Key": collector.api_key}


async def test_a_tag_longer_than_the_limit_is_refused_with_a_400_naming_it(
    collector: CollectorHandle,
) -> None:
    session_id = str(uuid.uuid4())
    body = {"session": {"session_id": session_id, "tags": ["ok", "x" * 3000]}}
    answer = await collector.v2_post("create_session", body, api_key=collector.api_key)
    assert answer.status == 400, answer.body
    assert answer.body["message"] == (
        f"session.tags[1]: 3000 characters, more than the limit of {MAX_TAG_LENGTH}"
        " (MAX_TAG_LENGTH); shorten the tag"
    )
    assert await collector.get_session(session_id) is None

    # At the limit, in 4-byte characters (1 KB of UTF-8), it is stored on both backends.
    longest = "\U0001f600" * MAX_TAG_LENGTH
    session_id, jwt = await collector.v2_create_session(tags=[longest])
    stored = await collector.get_session(session_id)
    assert stored is not None and stored["tags"] == [longest]
    update = {"session": {"session_id": session_id, "tags": [longest, "y" * (MAX_TAG_LENGTH + 1)]}}
    answer = await collector.v2_post("update_session", update, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"].startswith("session.tags[1]: 257 characters")


async def test_nul_in_an_agent_id_is_refused_and_in_its_name_is_accepted(
    collector: CollectorHandle,
) -> None:
    _, jwt = await collector.v2_create_session()
    answer = await collector.v2_post("create_agent", {"id": "a\u0000b", "name": "n"}, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"] == "id: expected 1..200 characters, without NUL (U+0000)"
    answer = await collector.v2_post("create_agent", {"id": "a", "name": "x\u0000y"}, jwt=jwt)
    assert answer.status == 200, answer.body


async def test_event_ids_that_differ_stay_different(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    replacement = {"id": "a\ufffdb", "event_type": "actions", "params": {"p": "x\u0000y"}}
    answer = await collector.v2_post("create_events", {"events": [replacement]}, jwt=jwt)
    assert answer.status == 200, answer.body
    nul = {"id": "a\u0000b", "event_type": "actions"}
    answer = await collector.v2_post("create_events", {"events": [replacement, nul]}, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"] == (
        "events[1].id: expected 1..200 characters, without NUL (U+0000)"
    )
    events = await collector.get_events(session_id)
    assert [(e["id"], e["params"]) for e in events] == [("a\ufffdb", {"p": "x\u0000y"})]


@pytest.mark.parametrize("name", ["tag", "event_type"])
async def test_nul_in_a_query_parameter_is_answered_not_500(
    collector: CollectorHandle, name: str
) -> None:
    session_id, jwt = await collector.v2_create_session(tags=["t\u0000x"])
    events = [{"id": "e1", "event_type": "actions"}, {"id": "e2", "event_type": "k\u0000"}]
    answer = await collector.v2_post("create_events", {"events": events}, jwt=jwt)
    assert answer.status == 200, answer.body
    query: dict[str, Any]
    if name == "tag":
        path = "/api/sessions?" + urllib.parse.urlencode({"tag": "t\u0000x"})
        answer = await collector.request("GET", path, headers=_key(collector))
        assert answer.status == 200, answer.body
        assert [s["id"] for s in answer.body["sessions"]] == [session_id]
    else:
        query = {"event_type": "k\u0000"}
        path = f"/api/sessions/{session_id}/events?" + urllib.parse.urlencode(query)
        answer = await collector.request("GET", path, headers=_key(collector))
        assert answer.status == 200, answer.body
        assert [e["id"] for e in answer.body["events"]] == ["e2"]
