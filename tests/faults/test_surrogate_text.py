"""Surrogate text against the real collector: every event stored (surrogates replaced by U+FFFD),
none missing or duplicated, nothing dropped, the exporter alive afterwards (issue 10, item 1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import agentops_async as ao

from .ledger import Ledger

SURROGATE = b"caf\xe9".decode("utf-8", "surrogateescape")  # what os.listdir gives
REPLACED = "caf\ufffd"
SESSIONS = 4
ROUNDS = 30


class _FileHandle:
    def __repr__(self) -> str:
        return f"<file {SURROGATE}>"


def mixed_events(index: int) -> list[ao.Event]:
    """Normal events with surrogates in values, keys, lists, nesting, str fields and a repr."""
    return [
        ao.ActionEvent(params={"i": index}),
        ao.ActionEvent(params={"path": SURROGATE, "i": index}),
        ao.ToolEvent(name="ls", params={SURROGATE: index}, returns=[SURROGATE, index]),
        ao.LLMEvent(prompt=f"summarise {SURROGATE}", completion="ok", model="m"),
        ao.ToolEvent(name=SURROGATE, params={"deep": {"er": [{"x": SURROGATE}]}}),
        ao.ActionEvent(params={"handle": _FileHandle()}),
        ao.ToolEvent(name="t", params={"i": index}),
    ]


def assert_replaced(stored: list[dict[str, Any]]) -> None:
    """Every surrogate of mixed_events() arrived as U+FFFD, in every place it was put."""
    assert "\\ud" not in json.dumps(stored)  # (ensure_ascii: a lone surrogate would be \udce9)
    paths = [e["params"]["path"] for e in stored if "path" in (e.get("params") or {})]
    assert paths and set(paths) == {REPLACED}
    prompts = {e["prompt"] for e in stored if e["event_type"] == "llms"}
    assert prompts == {f"summarise {REPLACED}"}
    handles = {e["params"]["handle"] for e in stored if "handle" in (e.get("params") or {})}
    assert handles == {f"<file {REPLACED}>"}
    tools = [e for e in stored if e["event_type"] == "tools"]
    assert {e["name"] for e in tools} == {"ls", REPLACED, "t"}
    listed = [e for e in tools if e["name"] == "ls"]
    assert listed and all(list(e["params"]) == [REPLACED] for e in listed)
    assert all(e["returns"][0] == REPLACED for e in listed)
    nested = [e["params"]["deep"] for e in tools if e["name"] == REPLACED]
    assert nested and all(d == {"er": [{"x": REPLACED}]} for d in nested)


@pytest.mark.asyncio
async def test_surrogate_text_is_stored_replaced_and_nothing_is_lost(collector: Any) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        flush_interval=0.02,
        max_batch_size=50,
        log_session_stats=False,
    )
    ledger = Ledger()

    async def agent(number: int) -> ao.AsyncSession:
        async with client.session(tags=[f"agent-{number}"]) as session:
            for index in range(ROUNDS):
                for event in mixed_events(index):
                    await ledger.record(session, event)
                if index % 5 == 0:
                    await asyncio.sleep(0)  # let the exporter send batches meanwhile
        return session

    sessions = await asyncio.gather(*(agent(n) for n in range(SESSIONS)))
    # The exporter is still alive: a session started afterwards is delivered too.
    async with client.session(tags=["later"]) as later:
        await ledger.record(later, ao.ActionEvent(params={"later": SURROGATE}))
    assert await client.close() is True  # and close() does not raise
    result = await ledger.check(collector, client, "surrogate text (async)")
    assert result.recorded == SESSIONS * ROUNDS * 7 + 1
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert result.stored == result.recorded
    assert client.stats.dropped_by_reason == {}
    assert client.stats.pending == 0
    for session in sessions:
        assert_replaced(await collector.get_events(session.session_id))
        stored_session = await collector.get_session(session.session_id)
        assert stored_session is not None and stored_session["end_state"] == "Success"
    assert [e["params"] for e in await collector.get_events(later.session_id)] == [
        {"later": REPLACED}
    ]


def test_surrogate_text_through_the_sync_facade(collector: Any) -> None:
    client = ao.Client(
        api_key=collector.api_key,
        endpoint=collector.url,
        flush_interval=0.02,
        log_session_stats=False,
    )
    ledger = Ledger()
    try:
        sessions = [client.start_session(tags=[f"sync-{n}"]) for n in range(2)]
        for index in range(ROUNDS):
            for session in sessions:
                for event in mixed_events(index):
                    ledger.recorded[session.session_id].append(event.ensure_id())
                    assert session.record(event) is True  # never raises
        for session in reversed(sessions):  # LIFO: each restores the current session it found
            stats = session.end_session(end_state="Success")
            assert stats.delivered == ROUNDS * 7 and stats.dropped == 0
        assert ao.get_current_session() is None
    finally:
        assert client.close(timeout=30) is True
    result = asyncio.run(ledger.check(collector, client, "surrogate text (sync facade)"))
    assert result.recorded == 2 * ROUNDS * 7
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert result.stored == result.recorded
    for session in sessions:
        assert_replaced(collector.get_events_sync(session.session_id))
