"""Sessions recorded through our SDK whose overview numbers are known exactly (the read API and
the dashboard's Overview page are checked against them)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import agentops_async as ao


@dataclass(frozen=True)
class OverviewSample:
    """The ids of the recorded sessions and what their overview must say."""

    succeeded: str  # the most expensive: 2 x gpt-4o-mini (1000 + 500 tokens) and one 0.25 call
    failed: str  # gpt-4o (2000 + 1000 tokens) = 0.015
    indeterminate: str  # no cost
    cost: str = "0.2659"
    succeeded_cost: str = "0.2509"
    failed_cost: str = "0.015"


async def record_overview_sample(url: str, api_key: str) -> OverviewSample:
    """Record three ended sessions (SUCCEEDED, FAILED, INDETERMINATE) with LLM calls of three
    models and tools of known durations; returns when the collector has stored everything."""
    client = ao.AsyncClient(api_key=api_key, endpoint=url, log_session_stats=False)
    async with client:
        t = time.time() - 60
        async with client.session(tags=["alpha", "<script>alert(1)</script>"]) as ok:
            for _ in range(2):
                await ok.record(
                    ao.LLMEvent(model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
                )
            await ok.record(ao.LLMEvent(model="house-model", prompt_tokens=5, cost=0.25))
            await ok.record(ao.ToolEvent(name="search", init_timestamp=t, end_timestamp=t + 2))
            await ok.record(ao.ToolEvent(name="search", init_timestamp=t, end_timestamp=t + 1))
            await ok.record(ao.ActionEvent(action_type="plan"))
        failed = client.session(tags=["beta"])
        await failed.start()
        await failed.record(ao.LLMEvent(model="gpt-4o", prompt_tokens=2000, completion_tokens=1000))
        await failed.record(
            ao.ToolEvent(name="<img src=x onerror=alert(1)>", init_timestamp=t, end_timestamp=t + 4)
        )
        await failed.end("Fail", "the tool failed")
        unsure = client.session(tags=["gamma"])
        await unsure.start()
        await unsure.end("Indeterminate")
        assert await client.flush(timeout=30)
    return OverviewSample(
        succeeded=str(ok.session_id),
        failed=str(failed.session_id),
        indeterminate=str(unsure.session_id),
    )
