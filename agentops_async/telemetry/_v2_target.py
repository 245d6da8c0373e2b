"""The AgentOps v2 API target: each session's part of a batch as v2 requests, in order.

A session is created (``POST /v2/create_session``, which answers its JWT) before its events go
(``POST /v2/create_events`` with that JWT); agents, updates and the final update follow in queue
order. Sessions of one batch are sent concurrently (at most eight at a time), each one's requests
in order. A session met without a JWT (replayed from the spool by a new process) is
re-authorised with the API key first. Retries, ``Retry-After`` and the outage warning live in
:class:`~agentops_async.api._client.ApiClient`; what the server refuses (a 413, a 400 for some
event) is bisected so that only the offending events are dropped.

When the server offers it (our collector names ``sessions_batch_path`` in its create_session
answer; the AgentOps service never does), every session's part of a batch goes in one
``POST /v2/create_sessions`` request for many sessions instead: the latest state of the session
in the batch and its events. A service's per-request sessions then cost one request per batch,
not three each. Parts with an agent to add, or of a session that could not be created, take the
standard calls; so do the parts of a create_sessions request the server refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from .._limits import MAX_EVENTS_PER_REQUEST
from ..api import _wire as wire
from ..api._client import ApiClient, SessionAuth
from ..errors import ApiError
from ..events import Event, _describe_oversize
from ._targets import (
    AGENT_ADDED,
    SESSION_CREATED,
    AgentSnapshot,
    EventRun,
    ExportBatch,
    Report,
    SessionOp,
    SessionPart,
    SessionSnapshot,
)

if TYPE_CHECKING:
    from .._config import Config

_MAX_CONCURRENCY = 8  # sessions of one batch sent at the same time
_V2_END_STATES = {
    "RUNNING": "Indeterminate",
    "INITIALIZING": "Indeterminate",
    "SUCCEEDED": "Success",
    "FAILED": "Fail",
    "INDETERMINATE": "Indeterminate",
}
SESSION_NOT_CREATED = "session could not be created"


class _V2Session:
    """What the target knows of one session: its JWT, and why it could not be created."""

    __slots__ = ("auth", "failure")

    def __init__(self, session_id: str) -> None:
        self.auth = SessionAuth(session_id)
        self.failure: str | None = None


def session_body(snapshot: SessionSnapshot) -> bytes:
    """The ``{"session": {...}}`` body of create_session / update_session."""
    body = wire.SessionBody(
        session_id=snapshot.session_id,
        init_timestamp=snapshot.init_timestamp,
        end_timestamp=snapshot.end_timestamp,
        tags=list(snapshot.tags),
        end_state=_V2_END_STATES.get(snapshot.state, "Indeterminate"),
        end_state_reason=snapshot.end_state_reason,
        video=snapshot.video,
        host_env=snapshot.host_env,
        trace_id=snapshot.trace_id or None,
        event_counts=snapshot.event_counts,
    )
    return wire.encoder.encode(wire.SessionEnvelope(session=body))


def agent_body(snapshot: AgentSnapshot) -> bytes:
    """The body of create_agent."""
    return wire.encoder.encode(wire.AgentBody(id=snapshot.agent_id, name=snapshot.name))


class V2Target:
    """Sends batches to an AgentOps-compatible v2 API (the AgentOps service, our collector)."""

    name = "agentops_v2"

    def __init__(self, api: ApiClient, config: Config) -> None:
        self.api = api
        self._batch_bytes = config.max_batch_bytes
        self._sessions: dict[str, _V2Session] = {}

    def __repr__(self) -> str:
        return f"V2Target({self.api!r})"

    # -- the ExportTarget protocol ------------------------------------------------------------
    def encode_events(
        self, session_id: str, trace_id: str | None, events: Sequence[Event | msgspec.Raw]
    ) -> bytes:
        return wire.events_body(events if isinstance(events, list) else list(events))

    def join_encoded(self, parts: list[bytes]) -> bytes:
        return parts[0] if len(parts) == 1 else wire.join_bodies(parts)

    def watch_pending(self, pending: Callable[[], int]) -> None:
        self.api.outage.pending = pending

    async def close(self) -> None:
        await self.api.close()

    def close_now(self) -> None:
        self.api.close_now()

    async def send(self, batch: ExportBatch, report: Report) -> None:
        if self.api.sessions_batch_path is not None:
            batch = await self._send_batched(batch, report)
        if not batch:
            return
        if len(batch) == 1:
            await self._send_part(batch[0], report)
            return
        limit = asyncio.Semaphore(_MAX_CONCURRENCY)

        async def bounded(part: SessionPart) -> None:
            async with limit:
                await self._send_part(part, report)

        # Every session's part ends before an error is raised, so that nothing is still being
        # sent (and reported) when the caller counts what the error lost.
        results = await asyncio.gather(*(bounded(part) for part in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # -- many sessions per request (our collector's POST /v2/create_sessions) ---------------------
    async def _send_batched(self, batch: ExportBatch, report: Report) -> ExportBatch:
        """Send the sessions' parts of ``batch`` in create_sessions requests (many sessions each:
        a session's latest state in the batch and its events), where the server takes them.

        Returns the parts to send with the standard calls: those with an agent to add, of a
        session that could not be created, too large for one request, or that the server
        refused this way (the standard calls then isolate what it refuses)."""
        rest: ExportBatch = []
        entries: list[_Entry] = []
        for part in batch:
            entry = self._entry(part)
            if entry is None:
                rest.append(part)
            else:
                entries.append(entry)
        for chunk in _chunked(entries, self._batch_bytes, rest):
            body = wire.sessions_body([entry.body for entry in chunk])
            try:
                answer = await self.api.create_sessions(body)
            except ApiError as exc:
                if exc.retryable:  # the API stayed down: as the standard calls giving up
                    for entry in chunk:
                        self._batched_failed(entry.part, exc, report)
                else:
                    rest.extend(entry.part for entry in chunk)
                continue
            results = {result.session_id: result for result in answer.sessions}
            for entry in chunk:
                self._batched_sent(entry.part, results.get(entry.part.session_id), report)
        return rest

    def _entry(self, part: SessionPart) -> _Entry | None:
        """The create_sessions entry of ``part``: the state its last operation carries (each
        snapshot is the whole session as it was then) and its events; None when the part needs
        the standard calls."""
        session = self._sessions.get(part.session_id)
        if session is not None and session.failure is not None:
            return None
        runs: list[bytes] = []
        state: SessionSnapshot | None = None
        count = 0
        for step in part.steps:
            if type(step) is EventRun:
                runs.append(step.body)
                count += len(step.events)
            elif step.kind == AGENT_ADDED:  # type: ignore[union-attr]
                return None
            else:
                state = step.snapshot  # type: ignore[union-attr,assignment]
        if state is None and not runs:
            return None
        events = self.join_encoded(runs) if runs else None
        body = wire.session_entry(
            part.session_id, session_body(state) if state is not None else None, events
        )
        return _Entry(part, body, count)

    def _batched_sent(
        self, part: SessionPart, result: wire.SessionResult | None, report: Report
    ) -> None:
        url = result.session_url if result is not None else None
        cost = wire.parse_token_cost(result.token_cost) if result is not None else None
        for step in part.steps:
            if type(step) is EventRun:
                report.delivered(part.session_id, len(step.events))
            else:
                op: SessionOp = step  # type: ignore[assignment]
                if op.kind == SESSION_CREATED:
                    report.op_sent(op, session_url=url)
                else:
                    report.op_sent(op, session_url=url, token_cost=cost)
                if op.final:
                    self._sessions.pop(op.session_id, None)

    def _batched_failed(self, part: SessionPart, exc: ApiError, report: Report) -> None:
        """What the standard calls report when they give up on ``part`` after retries."""
        first = part.steps[0]
        creating = isinstance(first, SessionOp) and first.kind == SESSION_CREATED
        if creating:
            self._session(part.session_id).failure = str(exc)
            report.session_failed(part.session_id, str(exc))
        for step in part.steps:
            if type(step) is EventRun:
                if creating:
                    report.dropped(part.session_id, len(step.events), SESSION_NOT_CREATED, str(exc))
                else:
                    reason = "create_events gave up after retries"
                    report.dropped(part.session_id, len(step.events), reason, str(exc))
                continue
            op: SessionOp = step  # type: ignore[assignment]
            if creating and op is not first:
                report.op_failed(op, SESSION_NOT_CREATED)
            else:
                call = _V2_CALLS[op.kind]
                detail = f"{call} for session {op.session_id} failed: {exc}"
                report.op_failed(op, f"{call} failed (HTTP {exc.status})", detail)
            if op.final:
                self._sessions.pop(op.session_id, None)

    # -- one session ----------------------------------------------------------------------------
    def _session(self, session_id: str) -> _V2Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _V2Session(session_id)
        return session

    async def _send_part(self, part: SessionPart, report: Report) -> None:
        session = self._session(part.session_id)
        for step in part.steps:
            if type(step) is EventRun:
                await self._send_events(session, step.events, report, step.body)
            else:
                await self._send_op(session, step, report)  # type: ignore[arg-type]

    async def _send_op(self, session: _V2Session, op: SessionOp, report: Report) -> None:
        kind = op.kind
        if kind != SESSION_CREATED and session.failure is not None:
            # The session does not exist on the server; its loss is already counted.
            report.op_failed(op, SESSION_NOT_CREATED)
        else:
            try:
                if kind == SESSION_CREATED:
                    assert isinstance(op.snapshot, SessionSnapshot)
                    answer = await self.api.create_session(session_body(op.snapshot))
                    session.auth.jwt = answer.jwt
                    session.failure = None
                    report.op_sent(op, session_url=answer.session_url)
                elif kind == AGENT_ADDED:
                    assert isinstance(op.snapshot, AgentSnapshot)
                    await self.api.create_agent(session.auth, agent_body(op.snapshot))
                    report.op_sent(op)
                else:
                    assert isinstance(op.snapshot, SessionSnapshot)
                    updated = await self.api.update_session(session.auth, session_body(op.snapshot))
                    report.op_sent(op, token_cost=wire.parse_token_cost(updated.token_cost))
            except ApiError as exc:
                if kind == SESSION_CREATED:
                    session.failure = str(exc)
                    report.session_failed(op.session_id, str(exc))
                call = _V2_CALLS[kind]
                detail = f"{call} for session {op.session_id} failed: {exc}"
                report.op_failed(op, f"{call} failed (HTTP {exc.status})", detail)
        if op.final:
            self._sessions.pop(op.session_id, None)

    async def _send_events(
        self,
        session: _V2Session,
        events: Sequence[Event | msgspec.Raw],
        report: Report,
        body: bytes | None = None,
    ) -> None:
        """Send ``events`` (encoded as ``body`` when given), splitting what the server refuses."""
        session_id = session.auth.session_id
        if session.failure is None and session.auth.jwt is None:
            try:  # a session replayed from the spool by a new process: fetch its JWT
                await self.api.reauthorize(session.auth)
            except ApiError as exc:
                session.failure = str(exc)
                report.session_failed(session_id, str(exc))
        if session.failure is not None:
            report.dropped(session_id, len(events), SESSION_NOT_CREATED, session.failure)
            return
        if body is None:
            body = wire.events_body(list(events))  # (encoded once already: cannot fail)
        if len(body) > self._batch_bytes:
            await self._send_oversized(session, events, len(body), report)
            return
        try:
            await self.api.create_events(session.auth, body)
        except ApiError as exc:
            if len(events) > 1 and _refuses_content(exc):
                # Too large, or some event the server cannot take: bisect, so that only the
                # offending events are dropped and the rest of the batch still arrives.
                half = len(events) // 2
                await self._send_events(session, events[:half], report)
                await self._send_events(session, events[half:], report)
                return
            kind = "gave up after retries" if exc.retryable else f"refused (HTTP {exc.status})"
            report.dropped(session_id, len(events), f"create_events {kind}", str(exc))
            return
        report.delivered(session_id, len(events))

    async def _send_oversized(
        self, session: _V2Session, events: Sequence[Event | msgspec.Raw], size: int, report: Report
    ) -> None:
        """A batch whose body is above max_batch_bytes: send it in pieces that fit."""
        if len(events) == 1:
            event = events[0]
            detail = (
                _describe_oversize(event, size, self._batch_bytes)
                if isinstance(event, Event)
                else f"{size:,} bytes"
            )
            reason = f"event larger than max_batch_bytes ({self._batch_bytes} bytes)"
            report.dropped(session.auth.session_id, 1, reason, detail)
            return
        # Events are of similar size in most batches: cut in as many pieces as the size says
        # (with a margin), and let each piece split again if it is still too large.
        pieces = min(len(events), -(-size * 5 // (self._batch_bytes * 4)))
        step = -(-len(events) // max(pieces, 2))
        for start in range(0, len(events), step):
            await self._send_events(session, events[start : start + step], report)


class _Entry(msgspec.Struct, gc=False):
    """A session's part of a batch, its create_sessions entry, and how many events it holds.

    Not tracked by the garbage collector (it holds an untracked part, bytes and a number): one
    per request session is alive while its batch is on the wire.
    """

    part: SessionPart
    body: bytes
    events: int


def _chunked(entries: list[_Entry], limit: int, rest: ExportBatch) -> list[list[_Entry]]:
    """``entries`` in create_sessions requests of at most ``limit`` bytes and
    MAX_EVENTS_PER_REQUEST sessions and events; a part too large for one goes to ``rest``."""
    chunks: list[list[_Entry]] = []
    chunk: list[_Entry] = []
    size = items = 0
    for entry in entries:
        count = 1 + entry.events
        if len(entry.body) + 16 > limit:
            rest.append(entry.part)
            continue
        if chunk and (
            size + len(entry.body) + 16 > limit or items + count > MAX_EVENTS_PER_REQUEST
        ):
            chunks.append(chunk)
            chunk, size, items = [], 0, 0
        chunk.append(entry)
        size += len(entry.body) + 1
        items += count
    if chunk:
        chunks.append(chunk)
    return chunks


_V2_CALLS = {
    SESSION_CREATED: "create_session",
    AGENT_ADDED: "create_agent",
    "session_updated": "update_session",
}


def _refuses_content(exc: ApiError) -> bool:
    """True when the server refused what was sent (not who sent it, nor its own availability)."""
    return not exc.retryable and exc.status is not None and exc.status not in (401, 403, 404)
