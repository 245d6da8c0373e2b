"""Read-API cursors are opaque and per project; no call accepts another project's session
(issue 10, item 16)."""

from __future__ import annotations

import uuid

import pytest
from _servers import CollectorHandle

pytestmark = pytest.mark.asyncio


def _key(api_key: str) -> dict[str, str]:
    return {"X-Agentops-Api-Key": api_key}


def _tampered(cursor: str) -> str:
    return cursor[:-1] + ("A" if cursor[-1] != "A" else "B")


async def test_session_cursors_page_correctly_and_only_in_their_project(
    collector: CollectorHandle,
) -> None:
    other_key = collector.new_api_key()
    mine = []
    for _ in range(3):
        mine.append((await collector.v2_create_session())[0])
        for _ in range(2):  # another project's traffic in between
            await collector.v2_create_session(api_key=other_key)
    seen, cursors, cursor = [], [], None
    while True:
        path = "/api/sessions?limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = await collector.request("GET", path, headers=_key(collector.api_key))
        assert page.status == 200, page.body
        seen += [s["id"] for s in page.body["sessions"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert seen == mine[::-1]
    assert len(cursors) == 2
    for cursor in cursors:
        assert not cursor.isdigit()  # no global sequence number to read other projects' volume
        for key, value in ((other_key, cursor), (collector.api_key, _tampered(cursor))):
            answer = await collector.request(
                "GET", f"/api/sessions?limit=1&cursor={value}", headers=_key(key)
            )
            assert answer.status == 400, answer.body
            assert answer.body["message"].startswith("cursor: not a cursor of this listing")
    old_style = await collector.request(
        "GET", "/api/sessions?cursor=12", headers=_key(collector.api_key)
    )
    assert old_style.status == 400


async def test_event_cursors_page_correctly_and_only_in_their_session(
    collector: CollectorHandle,
) -> None:
    first, jwt = await collector.v2_create_session()
    second, jwt2 = await collector.v2_create_session()
    events = [{"id": f"e{i}", "event_type": "actions"} for i in range(5)]
    for token in (jwt, jwt2):
        answer = await collector.v2_post("create_events", {"events": events}, jwt=token)
        assert answer.status == 200
    page = await collector.request(
        "GET", f"/api/sessions/{first}/events?limit=2", headers=_key(collector.api_key)
    )
    cursor = page.body["next_cursor"]
    assert [e["id"] for e in page.body["events"]] == ["e0", "e1"] and not cursor.isdigit()
    page = await collector.request(
        "GET",
        f"/api/sessions/{first}/events?limit=2&cursor={cursor}",
        headers=_key(collector.api_key),
    )
    assert [e["id"] for e in page.body["events"]] == ["e2", "e3"]
    for session_id, value in ((second, cursor), (first, _tampered(cursor))):
        answer = await collector.request(
            "GET",
            f"/api/sessions/{session_id}/events?cursor={value}",
            headers=_key(collector.api_key),
        )
        assert answer.status == 400, answer.body
    assert [e["id"] for e in await collector.get_events(second)] == [e["id"] for e in events]


async def test_developer_errors_refuse_another_projects_session(
    collector: CollectorHandle,
) -> None:
    session_id, _ = await collector.v2_create_session()
    other_key = collector.new_api_key()
    report = {"type": "ValueError", "message": "boom", "session_id": session_id}
    answer = await collector.v2_post("developer_errors", report, api_key=other_key)
    assert answer.status == 404
    assert answer.body == {"message": "session_id: session not found"}
    unknown = dict(report, session_id=str(uuid.uuid4()))
    answer = await collector.v2_post("developer_errors", unknown, api_key=collector.api_key)
    assert answer.status == 404
    answer = await collector.v2_post("developer_errors", report, api_key=collector.api_key)
    assert answer.status == 200
    no_session = {"type": "ValueError", "message": "boom"}
    answer = await collector.v2_post("developer_errors", no_session, api_key=other_key)
    assert answer.status == 200
