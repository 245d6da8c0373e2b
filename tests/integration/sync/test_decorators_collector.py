"""@record_action / @record_tool on sync and async functions, read back from the collector."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import CollectorHandle

import agentops_async as ao

MakeClient = Callable[..., ao.Client]


@ao.record_action("search")
def search(query: str, limit: int = 3) -> list[str]:
    return [f"{query}-{i}" for i in range(limit)]


@ao.record_tool
def divide(a: float, b: float) -> float:
    return a / b


@ao.record_tool("fetch")
async def fetch(url: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"url": url, "status": 200}


@ao.record_action
async def explode(reason: str) -> None:
    await asyncio.sleep(0)
    raise RuntimeError(reason)


@ao.record_tool("complete")
def complete(prompt: str) -> Iterator[str]:
    yield from ("The", " answer", " is", " 42")


class Planner:
    @ao.record_action("plan")
    def plan(self, goal: str) -> str:
        return f"steps for {goal}"


def _by_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def test_sync_functions_record_params_returns_and_exceptions(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    with client.session() as session:
        assert search("cats") == ["cats-0", "cats-1", "cats-2"]
        assert divide(6, 3) == 2
        assert Planner().plan("tea") == "steps for tea"
        with pytest.raises(ZeroDivisionError):
            divide(1, 0)

    events = collector.get_events_sync(session.session_id)
    actions = {e["action_type"]: e for e in _by_type(events, "actions")}
    assert actions["search"]["params"] == {"query": "cats", "limit": 3}
    assert actions["search"]["returns"] == ["cats-0", "cats-1", "cats-2"]
    assert actions["plan"]["params"] == {"goal": "tea"}  # self is left out
    tools = _by_type(events, "tools")
    assert [t["name"] for t in tools] == ["divide", "divide"]
    ok, failed = sorted(tools, key=lambda t: t["returns"] is None)
    assert ok["params"] == {"a": 6, "b": 3}
    assert ok["returns"] == 2
    assert failed["returns"] is None
    (error,) = _by_type(events, "errors")
    assert error["error_type"] == "ZeroDivisionError"
    assert error["trigger_event_id"] == failed["id"]


@pytest.mark.asyncio
async def test_async_functions_record_into_the_current_async_session(
    collector: CollectorHandle,
) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    try:
        async with client.session() as session:
            assert await fetch("http://x") == {"url": "http://x", "status": 200}
            with pytest.raises(RuntimeError, match="nope"):
                await explode("nope")
    finally:
        await client.close()

    events = await collector.get_events(session.session_id)
    (tool,) = _by_type(events, "tools")
    assert tool["name"] == "fetch"
    assert tool["params"] == {"url": "http://x"}
    assert tool["returns"] == {"url": "http://x", "status": 200}
    (action,) = _by_type(events, "actions")
    assert action["action_type"].endswith("explode")
    assert action["params"] == {"reason": "nope"}
    (error,) = _by_type(events, "errors")
    assert error["error_type"] == "RuntimeError"
    assert error["trigger_event_id"] == action["id"]


def test_async_function_run_inside_a_sync_session_records_into_it(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    with client.session() as session:
        asyncio.run(fetch("http://inner"))
    (tool,) = collector.get_events_sync(session.session_id)
    assert tool["name"] == "fetch"
    assert tool["params"] == {"url": "http://inner"}


def test_decorated_function_without_a_session_just_runs() -> None:
    assert divide(8, 2) == 4
    assert asyncio.run(fetch("http://none"))["status"] == 200


def test_a_streaming_generator_in_a_sync_session_is_one_event_with_the_joined_text(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    with client.session() as session:
        assert "".join(complete("question")) == "The answer is 42"
    (tool,) = collector.get_events_sync(session.session_id)
    assert tool["name"] == "complete"
    assert tool["params"] == {"prompt": "question"}
    assert tool["returns"] == "The answer is 42"
