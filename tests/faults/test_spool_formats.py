"""The spool is target-neutral: snapshots and events in the SDK's own encoding, versioned.

A spool written while sending to one target is replayed by another, and a spool file written
before the export-target seam (operations as v2 request bodies) is still replayed, its
unreadable records skipped with a log line.
"""

from __future__ import annotations

import logging
import struct
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

import agentops_async as ao
from agentops_async.testing import capture_events

pytestmark = pytest.mark.asyncio

_OFFSET = 2**40  # the spool's segment numbering (telemetry/_spool.py)


def write_v1_segment(directory: Path, records: list[list[Any]]) -> None:
    """A spool segment as the SDK wrote it before format versions: [kind, session_id, body,
    final] msgpack arrays, each behind a 4-byte big-endian length."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = []
    for record in records:
        payload = msgspec.msgpack.encode(record)
        frames.append(struct.pack(">I", len(payload)) + payload)
    (directory / f"{_OFFSET:015d}.spool").write_bytes(b"".join(frames))


def v1_session_body(session_id: str, end_state: str, tags: list[str]) -> bytes:
    session: dict[str, Any] = {
        "session_id": session_id,
        "init_timestamp": "2026-11-30T10:00:00.000001Z",
        "end_state": end_state,
        "tags": tags,
        "host_env": {"OS": {"OS": "Linux"}},
        "trace_id": "ab" * 16,
    }
    if end_state != "Indeterminate":
        session["end_timestamp"] = "2026-11-30T10:00:05Z"
    return msgspec.json.encode({"session": session})


def v1_event(session_id: str, i: int) -> bytes:
    return msgspec.json.encode(
        {
            "event_type": "actions",
            "id": str(uuid.uuid4()),
            "session_id": session_id,
            "init_timestamp": "2026-11-30T10:00:01Z",
            "end_timestamp": "2026-11-30T10:00:01Z",
            "params": {"i": i},
            "action_type": "step",
        }
    )


async def test_a_spool_file_of_the_previous_format_is_replayed_and_bad_records_skipped(
    collector: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentops_async")
    spool = tmp_path / "spool"
    sid = str(uuid.uuid4())
    write_v1_segment(
        spool,
        [
            ["create_session", sid, v1_session_body(sid, "Indeterminate", ["old"]), False],
            *(["e", sid, v1_event(sid, i), False] for i in range(3)),
            ["create_agent", sid, b"{not json", False],  # unreadable: skipped, logged
            ["update_session", sid, v1_session_body(sid, "Success", ["old", "done"]), True],
        ],
    )
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        spool_dir=str(spool),
        flush_interval=0.02,
        log_session_stats=False,
    )
    assert await client.flush(20)
    assert await client.close()
    stored = await collector.get_session(sid)
    assert stored is not None
    assert stored["end_state"] == "Success" and sorted(stored["tags"]) == ["done", "old"]
    events = await collector.get_events(sid)
    assert sorted(e["params"]["i"] for e in events) == [0, 1, 2]
    assert client.stats.delivered == 3 and client.stats.pending == 0
    skipped = [r for r in caplog.records if "skipping a spooled session operation" in r.message]
    assert len(skipped) == 1 and "create_agent" in skipped[0].message
    assert "format version 1" in skipped[0].message
    assert not list(spool.glob("*.spool"))


async def test_a_spool_written_under_the_v2_target_is_replayed_by_the_in_memory_target(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    nowhere = ao.AsyncClient(  # nothing listens on port 9 of loopback: every request fails
        api_key=str(uuid.uuid4()),
        endpoint="http://127.0.0.1:9",
        spool_dir=str(spool),
        request_timeout=0.2,
        max_retry_time=30,
        log_session_stats=False,
    )
    async with nowhere.session(tags=["offline"]) as session:
        agent = session.create_agent("planner")
        for i in range(5):
            await session.record(ao.ActionEvent(params={"i": i}, agent_id=agent))
        await session.end("Fail", end_state_reason="no network", wait=False)
    assert not await nowhere.close(timeout=0.3)
    assert nowhere.stats.spooled == 5 and nowhere.stats.dropped == 0

    async with capture_events() as captured:
        replay = ao.AsyncClient(spool_dir=str(spool), flush_interval=0.02)
        assert await replay.flush(10)
        await replay.close()
    got = captured.session(session.session_id)
    assert [e["params"]["i"] for e in got.events] == list(range(5))
    assert [(a.agent_id, a.name) for a in got.agents] == [(agent, "planner")]
    assert got.ended and got.state == "FAILED" and got.end_state_reason == "no network"
    assert got.snapshots[0].trace_id == session.trace_id and got.tags == ["offline"]
