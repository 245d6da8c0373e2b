"""before_send, redaction and sampling against the real collector: what it stores."""

from __future__ import annotations

import uuid
import zlib
from typing import Any

import pytest

import agentops_async as ao

pytestmark = pytest.mark.asyncio

SECRET = "sk-ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm" * 2


def _ids_for(rate: float, kept: bool, count: int) -> list[str]:
    """Session ids that ``rate`` keeps (or leaves out), found deterministically."""
    found = []
    n = 0
    while len(found) < count:
        candidate = str(uuid.UUID(int=n * 104729 + 17, version=4))
        # the documented decision: CRC-32 of the session id below rate * 2**32
        if (zlib.crc32(candidate.encode()) < int(rate * 2**32)) is kept:
            found.append(candidate)
        n += 1
    return found


async def test_collector_stores_redacted_values_not_filtered_events_nor_sampled_out_sessions(
    collector: Any,
) -> None:
    def before_send(event: ao.Event) -> ao.Event | None:
        return None if getattr(event, "action_type", None) == "heartbeat" else event

    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        before_send=before_send,
        sample_rate=0.5,
    )
    (kept_id,) = _ids_for(0.5, True, 1)
    (left_out_id,) = _ids_for(0.5, False, 1)
    async with client.session(session_id=kept_id) as kept:
        await kept.record(
            ao.LLMEvent(
                model="claude",
                prompt=[{"role": "user", "content": f"use {SECRET}"}],
                completion="ok",
                params={"headers": {"Authorization": "Bearer abcdefghijklmnopqrstuv"}},
            )
        )
        await kept.record(ao.ActionEvent(action_type="heartbeat"))
        await kept.record(ao.ActionEvent(action_type="step", returns="done"))
    async with client.session(session_id=left_out_id) as left_out:
        await left_out.record(ao.ActionEvent(action_type="step"))
    assert await client.close()

    events = await collector.get_events(kept_id)
    assert sorted(e["event_type"] for e in events) == ["actions", "llms"]
    llm = next(e for e in events if e["event_type"] == "llms")
    assert llm["prompt"] == [{"role": "user", "content": "use [REDACTED]"}]
    assert llm["params"] == {"headers": {"Authorization": "[REDACTED]"}}
    assert SECRET not in str(events)
    assert all(e.get("action_type") != "heartbeat" for e in events)

    assert kept.sampled and not left_out.sampled
    assert await collector.get_session(left_out_id) is None
    stats = client.stats
    assert stats.filtered == 1
    assert stats.sessions_sampled_out == 1
    assert stats.dropped == 0 and stats.delivered == 2
