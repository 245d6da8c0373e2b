"""Property-based round trip: SDK -> wire -> collector -> read API gives back what was recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentops_async as ao

# JSON values as an agent would record them. Floats exclude NaN/inf (JSON has none; they are sent
# as null, tested elsewhere); integers stay within what JSON peers (and PostgreSQL jsonb) keep.
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
text = st.text(max_size=60)

event_strategy = st.one_of(
    st.builds(
        ao.ActionEvent,
        action_type=text,
        params=st.dictionaries(st.text(max_size=10), json_value, max_size=4),
        returns=json_value,
        logs=json_value,
    ),
    st.builds(
        ao.LLMEvent,
        model=text,
        prompt=json_value,
        completion=json_value,
        prompt_tokens=st.integers(min_value=0, max_value=10**7),
        completion_tokens=st.integers(min_value=0, max_value=10**7),
        thread_id=st.none() | text,
    ),
    st.builds(ao.ToolEvent, name=text, params=json_value, returns=json_value),
    st.builds(ao.ErrorEvent, error_type=text, code=st.none() | text, details=json_value),
)

FIELDS = {
    "actions": ("action_type", "params", "returns", "logs"),
    "llms": ("model", "prompt", "completion", "prompt_tokens", "completion_tokens", "thread_id"),
    "tools": ("name", "params", "returns"),
    "errors": ("error_type", "code", "details"),
}


async def _round_trip(
    collector: Any, events: list[ao.Event], tags: list[str], protocol: str = "agentops_v2"
) -> None:
    # Fidelity of the pipeline: the built-in redaction (an intended change) is off here.
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        redact_secrets=False,
        protocol=protocol,
    )
    async with client.session(tags=tags) as session:
        sent = []
        for event in events:
            sent.append(msgspec.json.decode(event.prepare(session.session_id, session.trace_id)))
            await session.record(event)
    assert await client.close()
    stored = {e["id"]: e for e in await collector.get_events(session.session_id)}
    assert len(stored) == len(events)
    for wire in sent:
        got = stored[wire["id"]]
        assert got["event_type"] == wire["event_type"]
        for field in FIELDS[wire["event_type"]]:
            assert got.get(field) == wire[field], field
    stored_session = await collector.get_session(session.session_id)
    assert stored_session is not None
    assert sorted(stored_session["tags"]) == sorted(set(tags))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=st.lists(event_strategy, min_size=1, max_size=8),
    tags=st.lists(st.text(min_size=1, max_size=20), max_size=3),
)
def test_what_is_recorded_is_what_the_read_api_returns(
    collector: Any, protocol: str, events: list[ao.Event], tags: list[str]
) -> None:
    asyncio.run(_round_trip(collector, events, tags, protocol))


SQLISH = "'; DROP TABLE events; -- \" OR 1=1 /* */ %s ? $1 \\x00\\ \u2028 ☃"


def test_sql_looking_strings_are_stored_verbatim(collector: Any, protocol: str) -> None:
    events: list[ao.Event] = [
        ao.ActionEvent(action_type=SQLISH, params={SQLISH: SQLISH}, logs=SQLISH),
        ao.LLMEvent(model=SQLISH, prompt=SQLISH, completion=[SQLISH], thread_id=SQLISH),
        ao.ToolEvent(name=SQLISH, returns={"r": SQLISH}),
        ao.ErrorEvent(error_type=SQLISH, details=SQLISH, code=SQLISH),
    ]
    asyncio.run(_round_trip(collector, events, [SQLISH, "plain"], protocol))
