"""Whatever a client sends, the collector answers 2xx/4xx with JSON, never 500 (hypothesis)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentops_async.collector import Collector

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_event = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=40), "event_type": st.sampled_from(["llms", "tools", "x"])},
    optional={
        "model": st.none() | st.text(max_size=12),
        "prompt_tokens": _json,
        "completion_tokens": st.none() | st.integers(-5, 10**6),
        "cost": _json,
        "params": _json,
        "session_id": st.none() | st.text(max_size=40),
        "init_timestamp": _json,
    },
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.lists(_event, max_size=6).map(lambda events: json.dumps({"events": events}).encode()),
)


async def _post_all(bodies: list[bytes]) -> list[tuple[int, Any]]:
    answers = []
    async with Collector(database=":memory:", port=0) as collector:
        api_key = await collector.create_project("fuzz")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{collector.url}/v2/create_session",
                json={"session": {"session_id": str(uuid.uuid4())}},
                headers={"X-Agentops-Api-Key": api_key},
            ) as response:
                jwt = (await response.json())["jwt"]
            for body in bodies:
                for call in ("create_events", "update_session", "create_agent"):
                    async with http.post(
                        f"{collector.url}/v2/{call}",
                        data=body,
                        headers={"Authorization": f"Bearer {jwt}"},
                    ) as response:
                        answers.append((response.status, await response.json(content_type=None)))
    return answers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_bodies, min_size=1, max_size=5))
def test_random_bodies_never_cause_a_server_error(bodies: list[bytes]) -> None:
    for status, answer in asyncio.run(_post_all(bodies)):
        assert status in (200, 400, 403, 404), answer
        assert isinstance(answer, dict)
        if status != 200:
            assert isinstance(answer["message"], str)
