"""The export-target seam: whole batches in, per-item reports out; the v2 encoding unchanged."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

import agentops_async as ao
from agentops_async.api import _wire as wire
from agentops_async.telemetry._targets import (
    SESSION_CREATED,
    SESSION_UPDATED,
    EventRun,
    ExportBatch,
    Report,
    SessionOp,
)
from agentops_async.telemetry._v2_target import session_body

pytestmark = pytest.mark.asyncio


class _OldSessionBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The session body as the session built it before the seam (datetimes, not text)."""

    session_id: str
    init_timestamp: datetime
    end_state: str
    tags: list[str]
    end_timestamp: datetime | None = None
    end_state_reason: str | None = None
    video: str | None = None
    host_env: dict[str, Any] | None = None
    trace_id: str | None = None
    event_counts: dict[str, int] | None = None


class _OldEnvelope(msgspec.Struct):
    session: _OldSessionBody


def old_body(session: ao.AsyncSession) -> bytes:
    assert session.init_timestamp is not None
    return wire.encoder.encode(
        _OldEnvelope(
            _OldSessionBody(
                session_id=session.session_id,
                init_timestamp=session.init_timestamp,
                end_timestamp=session.end_timestamp,
                tags=list(session.tags),
                end_state=session.state.wire_name,
                end_state_reason=session.end_state_reason,
                video=session.video,
                host_env=wire.host_env(),
                trace_id=session.trace_id,
                event_counts=session.event_counts,
            )
        )
    )


async def test_the_v2_session_body_from_a_snapshot_is_byte_for_byte_the_old_one(
    captured: Any, make_client: Any
) -> None:
    client = make_client()
    session = await client.start_session(tags=["a", "ünï"])
    await session.record(ao.ActionEvent())
    assert session_body(session._snapshot()) == old_body(session)
    await session.end("Fail", end_state_reason="why", video="http://v.test/1")
    assert session_body(session._snapshot()) == old_body(session)
    assert session_body(captured.session().snapshots[-1]) == old_body(session)
    await client.close()


class BatchRecorder:
    """A target shaped like OTLP: one request per cut batch, whatever sessions it mixes."""

    name = "recorder"

    def __init__(self) -> None:
        self.batches: list[ExportBatch] = []
        self.sent = asyncio.Event()

    def encode_events(self, session_id: str, trace_id: str | None, events: Any) -> bytes:
        return msgspec.json.encode([getattr(e, "id", None) for e in events])

    def join_encoded(self, parts: list[bytes]) -> bytes:
        return b"".join(parts)

    async def send(self, batch: ExportBatch, report: Report) -> None:
        self.batches.append(batch)
        for part in batch:
            for step in part.steps:
                if type(step) is EventRun:
                    kept = len(step.events) - 1  # the receiver refuses one event of each run
                    report.delivered(part.session_id, kept)
                    report.dropped(part.session_id, 1, "refused by the recorder", "detail")
                else:
                    assert isinstance(step, SessionOp)
                    cost = Decimal("0.25") if step.final else None
                    report.op_sent(step, session_url=f"http://x/{part.session_id}", token_cost=cost)
        self.sent.set()

    def watch_pending(self, pending: Any) -> None:
        return None

    async def close(self) -> None:
        return None

    def close_now(self) -> None:
        return None


async def test_a_target_gets_one_batch_mixing_sessions_and_its_reports_are_accounted(
    make_client: Any,
) -> None:
    target = BatchRecorder()
    client = make_client(flush_interval=60, max_concurrent_exports=1)  # one lane, one batch
    client._make_target = lambda: target
    sessions = [await client.start_session(tags=[str(n)]) for n in range(3)]
    for session in sessions:
        for i in range(4):
            await session.record(ao.ActionEvent(params={"i": i}))
    assert await client.flush(5)
    (batch,) = target.batches  # three sessions, one send
    assert [part.session_id for part in batch] == [s.session_id for s in sessions]
    for part, session in zip(batch, sessions, strict=True):
        assert part.trace_id == session.trace_id
        created, run = part.steps
        assert isinstance(created, SessionOp) and created.kind == SESSION_CREATED
        assert created.snapshot.tags == (session.tags[0],)  # type: ignore[union-attr]
        assert isinstance(run, EventRun) and len(run.events) == 4
        assert msgspec.json.decode(run.body) == [e.id for e in run.events]  # type: ignore[union-attr]
    for session in sessions:
        await session.end()
    for session in sessions:
        assert session.stats.delivered == 3 and session.stats.dropped == 1
        assert session.stats.session_url == f"http://x/{session.session_id}"
        assert session.stats.token_cost == Decimal("0.25")
    finals = [step for part in target.batches[-1] for step in part.steps]
    assert all(isinstance(s, SessionOp) and s.kind == SESSION_UPDATED and s.final for s in finals)
    assert client.stats.dropped_by_reason == {"refused by the recorder": 3}
    assert client.stats.delivered == 9 and client.stats.pending == 0
    await client.close()


async def test_a_batch_on_the_wire_holds_no_tracked_structures_per_session(
    make_client: Any,
) -> None:
    # While a batch of request sessions is on the wire, each GC-tracked object it holds per
    # session is carried into the older generations (whose full collections cost a busy service
    # milliseconds each): a session's part, its steps, its runs' events and its create_sessions
    # entry are not tracked once a young collection has seen them (tuples of untracked structs).
    import gc

    from agentops_async.telemetry._v2_target import _Entry

    class Holding(BatchRecorder):
        def __init__(self) -> None:
            super().__init__()
            self.held: ExportBatch = []
            self.on_wire = asyncio.Event()
            self.release = asyncio.Event()

        async def send(self, batch: ExportBatch, report: Report) -> None:
            self.held = batch
            self.on_wire.set()
            await self.release.wait()
            await super().send(batch, report)

    target = Holding()
    # One lane: the whole batch, every session's part, is on the wire at once.
    client = make_client(flush_interval=60, instrument_otel=False, max_concurrent_exports=1)
    client._make_target = lambda: target
    for n in range(20):
        async with ao.AsyncSession(client=client, tags=[str(n)], flush_on_exit=False) as session:
            await session.record(ao.ActionEvent(action_type="a", params={"n": n}))
    flushed = asyncio.ensure_future(client.flush(5))
    await asyncio.wait_for(target.on_wire.wait(), 5)
    gc.collect(0)  # what a young collection in a running service does while it is out
    on_wire = target.held
    assert len(on_wire) == 20
    held = [(part, part.steps, *part.steps) for part in on_wire]
    held += [(s.events,) for part in on_wire for s in part.steps if type(s) is EventRun]
    tracked = [obj for objects in held for obj in objects if gc.is_tracked(obj)]
    assert tracked == []
    assert not gc.is_tracked(_Entry(on_wire[0], b"{}", 1))
    target.release.set()
    assert await flushed
    assert [len(part.steps) for part in target.batches[0]] == [3] * 20  # created, events, ended
    await client.close()
