"""The AgentOps v2 API target: each session's part of a batch as v2 requests, in order.

A session is created (``POST /v2/create_session``, which answers its JWT) before its events go
(``POST /v2/create_events`` with that JWT); agents, updates and the final update follow in queue
order. Sessions of one batch are sent concurrently (at most eight at a time), each one's requests
in order. A session met without a JWT (replayed from the spool by a new process) is
re-authorised with the API key first. Retries, ``Retry-After`` and the outage warning live in
:class:`~agentops_async.api._client.ApiClient`; what the server refuses (a 413, a 400 for some
event) is bisected so that only the offending events are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

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
        events: list[Event | msgspec.Raw],
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
            body = wire.events_body(events)  # (already encoded once: encoding cannot fail)
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
        self, session: _V2Session, events: list[Event | msgspec.Raw], size: int, report: Report
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


_V2_CALLS = {
    SESSION_CREATED: "create_session",
    AGENT_ADDED: "create_agent",
    "session_updated": "update_session",
}


def _refuses_content(exc: ApiError) -> bool:
    """True when the server refused what was sent (not who sent it, nor its own availability)."""
    return not exc.retryable and exc.status is not None and exc.status not in (401, 403, 404)
