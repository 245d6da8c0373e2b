"""Numbers in events can never take the read API down (issue 10, items 11, 12 and 16)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from _servers import CollectorHandle

from agentops_async.collector import Storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._prices import PriceTable
from agentops_async.collector._reads import session_views
from agentops_async.collector._storage import EventRow, SessionFilter, SessionWrite

pytestmark = pytest.mark.asyncio

MAX_INT = 2**63 - 1


def _llm(**fields: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "event_type": "llms", "model": "gpt-4o-mini", **fields}


async def _reads_answer_200(collector: CollectorHandle, session_id: str, jwt: str) -> str:
    """update_session, GET the session and list sessions all answer 200; the token cost."""
    update = await collector.v2_post(
        "update_session", {"session": {"session_id": session_id}}, jwt=jwt
    )
    assert update.status == 200, update.body
    one = await collector.request(
        "GET", f"/api/sessions/{session_id}", headers={"X-Agentops-Api-Key": collector.api_key}
    )
    assert one.status == 200, one.body
    listed = await collector.list_sessions()
    assert session_id in [s["id"] for s in listed]
    assert one.body["token_cost"] == update.body["token_cost"]
    return str(update.body["token_cost"])


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("cost", 1e20, "must be a finite number in [0, 1e+12]"),
        ("cost", "Infinity", "must be a finite number in [0, 1e+12]"),
        ("cost", "NaN", "must be a finite number in [0, 1e+12]"),
        ("cost", -1, "must be a finite number in [0, 1e+12]"),
        ("prompt_tokens", 2**63, f"must be an integer in [0, {MAX_INT}]"),
        ("completion_tokens", -(2**63) - 1, f"must be an integer in [0, {MAX_INT}]"),
        ("prompt_tokens", -5, f"must be an integer in [0, {MAX_INT}]"),
    ],
)
async def test_an_out_of_range_number_is_refused_with_a_400_naming_the_field(
    collector: CollectorHandle, field: str, value: object, rule: str
) -> None:
    session_id, jwt = await collector.v2_create_session()
    events = [_llm(prompt_tokens=10), _llm(cost=0.5), _llm(**{field: value})]
    answer = await collector.v2_post("create_events", {"events": events}, jwt=jwt)
    assert answer.status == 400, answer.body
    assert f"events[2].{field}: {rule}" in answer.body["message"]
    assert await collector.get_events(session_id) == []
    assert await _reads_answer_200(collector, session_id, jwt) == "0"


async def test_token_sums_beyond_int64_do_not_break_reads(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    events = [_llm(prompt_tokens=5 * 10**18, completion_tokens=MAX_INT) for _ in range(2)]
    answer = await collector.v2_post("create_events", {"events": events}, jwt=jwt)
    assert answer.status == 200, answer.body
    cost = await _reads_answer_200(collector, session_id, jwt)
    # gpt-4o-mini: $0.15 and $0.60 per million prompt / completion tokens
    expected = (2 * 5e18 * 0.15 + 2 * MAX_INT * 0.60) / 1e6
    assert math.isclose(float(cost), expected, rel_tol=1e-9)


async def test_a_nan_cost_follows_one_rule_on_both_backends(collector: CollectorHandle) -> None:
    _, jwt = await collector.v2_create_session()
    answer = await collector.v2_post("create_events", {"events": [_llm(cost="NaN")]}, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"].endswith(
        "events[0].cost: must be a finite number in [0, 1e+12] (US dollars)"
    )


# --- what older collectors may have stored -----------------------------------------------------


def _usage_row(session_id: str, cost: float | None, tokens: int | None = None) -> EventRow:
    event_id = str(uuid.uuid4())
    data = f'{{"id": "{event_id}", "event_type": "llms"}}'
    return (session_id, event_id, "llms", None, None, data, "gpt-4o", tokens, tokens, cost)


@pytest.mark.parametrize(
    ("costs", "expected"),
    [
        ([math.inf], "0"),
        ([-math.inf, math.inf], "0"),
        ([1e20], "100000000000000000000"),
        ([1e300], "1" + "0" * 300),
    ],
)
async def test_a_stored_oddity_never_breaks_a_read(
    storage: Storage, costs: list[float], expected: str
) -> None:
    project_id, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    await storage.insert_events([_usage_row(session_id, cost) for cost in costs])
    await storage.insert_events([_usage_row(session_id, None, MAX_INT) for _ in range(3)])
    rows = await storage.list_sessions(SessionFilter(project_id=project_id))
    (view,) = await session_views(storage, PriceTable(), rows)
    priced = 3 * MAX_INT * (2.5 + 10.0) / 1e6  # gpt-4o, three events of MAX_INT tokens each way
    if expected == "0":
        assert math.isclose(float(view.token_cost), priced, rel_tol=1e-9)
    else:
        assert math.isclose(float(view.token_cost), float(expected) + priced, rel_tol=1e-9)
