"""The AgentOps 0.4 decorators in a sync script, read back from the collector: one session
opened by @session, the calls stored nested through their parent span ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _servers import CollectorHandle

import agentops_async as ao

MakeClient = Callable[..., ao.Client]


def test_sync_decorated_calls_are_stored_nested_in_the_session_they_opened(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    from agentops_async.decorators import agent, session, tool

    client = make_sync_client()
    opened: list[str] = []

    @tool(cost=0.5)
    def lookup(city: str) -> dict[str, Any]:
        if city == "Atlantis":
            raise LookupError("no such city")
        return {"city": city, "temp": 21}

    @agent(name="forecaster")
    def forecast(cities: list[str]) -> list[Any]:
        results: list[Any] = []
        for city in cities:
            try:
                results.append(lookup(city))
            except LookupError:
                results.append(None)
        return results

    @session(client=client, tags=["sync-decorators"])
    def main() -> list[Any]:
        current = ao.sync.get_current_session()
        assert current is not None
        opened.append(current.session_id)
        return forecast(["Paris", "Atlantis"])

    assert main() == [{"city": "Paris", "temp": 21}, None]
    assert client.flush(timeout=10)
    (session_id,) = opened
    stored = collector.get_session_sync(session_id)
    assert stored is not None and stored["end_state"] == "Success"
    events = collector.get_events_sync(session_id)
    agents = [e for e in events if e["event_type"] == "actions"]
    tools = [e for e in events if e["event_type"] == "tools"]
    errors = [e for e in events if e["event_type"] == "errors"]
    assert [a["params"]["name"] for a in agents] == ["forecaster"]
    (forecaster,) = agents
    assert [t["params"]["parent_span_id"] for t in tools] == [forecaster["span_id"]] * 2
    assert sorted(t["params"]["input"]["city"] for t in tools) == ["Atlantis", "Paris"]
    failed = next(t for t in tools if t["params"]["input"]["city"] == "Atlantis")
    assert failed["params"]["status"] == "ERROR"
    assert [e["trigger_event_id"] for e in errors] == [failed["id"]]
    assert all(t["params"]["cost"] == 0.5 for t in tools)
