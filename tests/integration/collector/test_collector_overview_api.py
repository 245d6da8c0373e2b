"""``GET /api/overview``: sessions recorded through our SDK into a real collector, on both
backends; the overview is the caller's project's only."""

from __future__ import annotations

from typing import Any

import pytest
from _overview_sample import record_overview_sample
from _servers import CollectorHandle

pytestmark = pytest.mark.asyncio


async def _overview(collector: CollectorHandle, api_key: str, query: str = "") -> Any:
    answer = await collector.request(
        "GET", f"/api/overview{query}", headers={"X-Agentops-Api-Key": api_key}
    )
    assert answer.status == 200, answer.raw
    return answer.body


async def test_overview_api_sums_the_sessions_recorded_through_the_sdk(
    collector: CollectorHandle,
) -> None:
    sample = await record_overview_sample(collector.url, collector.api_key)
    body = await _overview(collector, collector.api_key)

    assert len(body["days"]) == 30  # the last 30 UTC days, today included, oldest first
    assert body["days"][0]["date"] < body["days"][-1]["date"]
    assert body["sessions"] == 3
    assert body["by_state"] == {"SUCCEEDED": 1, "FAILED": 1, "INDETERMINATE": 1, "RUNNING": 0}
    assert body["failure_rate"] == 0.3333
    assert body["cost"] == sample.cost
    assert sum(day["sessions"] for day in body["days"]) == 3
    assert {m["model"]: (m["calls"], m["cost"]) for m in body["cost_by_model"]} == {
        "house-model": (1, "0.25"),
        "gpt-4o": (1, "0.015"),
        "gpt-4o-mini": (2, "0.0009"),
    }
    assert [(t["name"], t["calls"], t["mean_s"], t["max_s"]) for t in body["slowest_tools"]] == [
        ("<img src=x onerror=alert(1)>", 1, 4.0, 4.0),
        ("search", 2, 1.5, 2.0),
    ]
    assert [(s["id"], s["state"], s["cost"]) for s in body["costliest_sessions"]] == [
        (sample.succeeded, "SUCCEEDED", sample.succeeded_cost),
        (sample.failed, "FAILED", sample.failed_cost),
    ]
    assert body["costliest_sessions"][0]["tags"] == ["alpha", "<script>alert(1)</script>"]


async def test_overview_api_shows_another_project_nothing(collector: CollectorHandle) -> None:
    await record_overview_sample(collector.url, collector.api_key)
    body = await _overview(collector, collector.new_api_key())
    assert body["sessions"] == 0 and body["cost"] == "0"
    assert body["cost_by_model"] == body["slowest_tools"] == body["costliest_sessions"] == []


async def test_overview_api_takes_a_range_and_refuses_a_bad_one(
    collector: CollectorHandle,
) -> None:
    body = await _overview(collector, collector.api_key, "?since=2026-01-01&until=2026-01-04")
    assert [day["date"] for day in body["days"]] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert (body["since"], body["until"]) == ("2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z")
    for query, message in (
        ("?since=2026-01-04&until=2026-01-01", "until: must be a time after since"),
        ("?since=2020-01-01&until=2026-01-01", "since, until: at most 366 days"),
        ("?since=yesterday", "since"),
    ):
        answer = await collector.request(
            "GET", f"/api/overview{query}", headers={"X-Agentops-Api-Key": collector.api_key}
        )
        assert answer.status == 400, query
        assert message in answer.body["message"], answer.body
    answer = await collector.request("GET", "/api/overview")  # no key
    assert answer.status == 401
