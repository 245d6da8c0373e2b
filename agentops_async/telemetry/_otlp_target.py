"""The OTLP/HTTP target: a whole batch, every session mixed, as one OTLP/JSON trace export.

``POST {endpoint}/v1/traces`` (``Content-Type: application/json``) with the API key in
``X-Agentops-Api-Key`` (what our collector's OTLP route accepts), or, when
``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS`` is set (the standard
OpenTelemetry variables: ``key=value`` pairs separated by commas), exactly those headers and no
API key (a third-party receiver never sees it). What goes in a request is described in
:mod:`._otlp_encode`: session operations are spans in the same request as the events, so a
session costs no request of its own.

Reliability is the v2 target's: retries of transient failures with backoff and ``Retry-After``
(in :class:`~agentops_async.api._client.ApiClient`), a request above ``max_batch_bytes`` cut in
pieces, a 413 or a 400 bisected down to the event the receiver refuses, and every event reported
once: delivered when the export is acknowledged; dropped (with the reason) when it is refused,
given up on, or rejected in the answer's ``partialSuccess`` (a receiver does not say which spans
it rejected: the count is charged to the request's events in order).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from ..api._client import ApiClient
from ..errors import ApiError
from ..events import Event
from . import _otlp_encode as otlp
from ._targets import (
    AGENT_ADDED,
    AgentSnapshot,
    EventRun,
    ExportBatch,
    Report,
    SessionOp,
    SessionSnapshot,
)

if TYPE_CHECKING:
    from .._config import Config

TRACES_PATH = "/v1/traces"
PARTIAL_REJECTED = "rejected by the OTLP receiver (partialSuccess)"
_HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")


class _PartialSuccess(msgspec.Struct, rename="camel"):
    rejected_spans: int = 0
    error_message: str = ""


class _ExportAnswer(msgspec.Struct, rename="camel"):
    partial_success: _PartialSuccess | None = None


_answer_decoder = msgspec.json.Decoder(_ExportAnswer, strict=False)  # int64 as "2" too


def _read_answer(payload: bytes) -> _ExportAnswer:
    """The export's answer; an empty or non-JSON 2xx body (some receivers) is full success."""
    try:
        return _answer_decoder.decode(payload) if payload.strip() else _ExportAnswer()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _ExportAnswer()


def otlp_headers(api_key: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The request headers: the OpenTelemetry header variables when set, else the API key."""
    env = os.environ if environ is None else environ
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    for variable in _HEADER_VARIABLES:
        given = env.get(variable, "").strip()
        if given:
            for pair in given.split(","):
                key, sep, value = pair.partition("=")
                if sep and key.strip():
                    headers[key.strip()] = urllib.parse.unquote(value.strip())
            return headers
    if api_key:
        headers["X-Agentops-Api-Key"] = api_key
    return headers


class _Piece(NamedTuple):
    """One step of a session in a request: a run of its events, or an operation's span."""

    session_id: str
    events: Sequence[Event | msgspec.Raw]  # the run's events (empty for an operation)
    body: bytes  # the run's ResourceSpans array, its parent filled in (b"" for an operation)
    op: SessionOp | None
    span: otlp.Span | None  # the operation's span


class OtlpTarget:
    """Sends batches as OTLP/HTTP trace exports (our collector, an OpenTelemetry Collector,
    Jaeger, Tempo, Langfuse...)."""

    name = "otlp"

    def __init__(self, config: Config, api: ApiClient | None = None) -> None:
        self.api = api or ApiClient(config)
        self._batch_bytes = config.max_batch_bytes
        self._headers = otlp_headers(config.api_key)
        # The latest snapshot of each session seen and not ended: its root span id and trace.
        self._sessions: dict[str, SessionSnapshot] = {}

    def __repr__(self) -> str:
        return f"OtlpTarget({self.api!r})"

    # -- the ExportTarget protocol ------------------------------------------------------------
    def encode_events(
        self, session_id: str, trace_id: str | None, events: Sequence[Event | msgspec.Raw]
    ) -> bytes:
        return otlp.encode_events(session_id, trace_id, events)

    def join_encoded(self, parts: list[bytes]) -> bytes:
        return parts[0] if len(parts) == 1 else otlp.join_runs(parts)

    def watch_pending(self, pending: Callable[[], int]) -> None:
        self.api.outage.pending = pending

    async def close(self) -> None:
        await self.api.close()

    def close_now(self) -> None:
        self.api.close_now()

    async def send(self, batch: ExportBatch, report: Report) -> None:
        pieces: list[_Piece] = []
        for part in batch:
            for step in part.steps:
                if type(step) is EventRun:
                    root = self._root_of(part.session_id, part.trace_id)
                    body = otlp.with_root(step.body, root)
                    pieces.append(_Piece(part.session_id, step.events, body, None, None))
                else:
                    assert isinstance(step, SessionOp)
                    pieces.append(self._op_piece(step))
        await self._send_pieces(pieces, report)

    # -- building --------------------------------------------------------------------------------
    def _root_of(self, session_id: str, trace_id: str | None) -> str:
        snapshot = self._sessions.get(session_id)
        if snapshot is not None:
            return snapshot.span_id
        # A session replayed from the spool by a new process: its root is not known here; a
        # stable id keeps its events together (the receiver still names the session by
        # agentops.session.id).
        return otlp.fallback_root(session_id)

    def _op_piece(self, op: SessionOp) -> _Piece:
        snapshot = op.snapshot
        if op.kind == AGENT_ADDED:
            assert isinstance(snapshot, AgentSnapshot)
            session = self._sessions.get(snapshot.session_id)
            span = otlp.agent_span(snapshot, session)
        else:
            assert isinstance(snapshot, SessionSnapshot)
            if op.final:
                self._sessions.pop(snapshot.session_id, None)
            else:
                self._sessions[snapshot.session_id] = snapshot
            span = otlp.session_span(snapshot, op.final)
        return _Piece(op.session_id, [], b"", op, span)

    def _redact(self, text: str) -> str:
        """``text`` without the credentials the headers hold (a receiver may echo them)."""
        for name, value in self._headers.items():
            if name not in ("Content-Type", "Accept") and len(value) >= 8:
                text = text.replace(value, "<redacted>")
        return text

    # -- sending ---------------------------------------------------------------------------------
    def _body(self, pieces: Sequence[_Piece]) -> bytes:
        spans = [p.span for p in pieces if p.span is not None]
        return otlp.request_body(spans, [p.body for p in pieces if p.op is None])

    async def _send_pieces(self, pieces: list[_Piece], report: Report) -> None:
        """Send ``pieces`` in one request, or cut in parts when too large or refused."""
        if not pieces:
            return
        body = self._body(pieces)
        if len(body) > self._batch_bytes:
            if _splittable(pieces):
                await self._send_halves(pieces, report)
                return
            if pieces[0].events:  # one event, too large to send
                event = pieces[0].events[0]
                reason = f"event larger than max_batch_bytes ({self._batch_bytes} bytes)"
                report.dropped(pieces[0].session_id, 1, reason, _oversize(event, len(body)))
                return
        try:
            answer = await self.api.post(TRACES_PATH, body, self._headers, _read_answer)
        except ApiError as exc:
            if _refuses_content(exc) and _splittable(pieces):
                # Too large, or some span the receiver cannot take: bisect, so that only the
                # offending events are dropped and the rest still arrives.
                await self._send_halves(pieces, report)
                return
            kind = "gave up after retries" if exc.retryable else f"refused (HTTP {exc.status})"
            self._report_failed(pieces, report, f"OTLP export {kind}", self._redact(str(exc)))
            return
        rejected = answer.partial_success.rejected_spans if answer.partial_success else 0
        message = answer.partial_success.error_message if answer.partial_success else ""
        self._report_sent(pieces, report, max(rejected, 0), message)

    async def _send_halves(self, pieces: list[_Piece], report: Report) -> None:
        if len(pieces) > 1:
            half = len(pieces) // 2
            await self._send_pieces(pieces[:half], report)
            await self._send_pieces(pieces[half:], report)
            return
        (piece,) = pieces
        half = len(piece.events) // 2
        for events in (piece.events[:half], piece.events[half:]):
            root = self._root_of(piece.session_id, None)
            trace_id = _trace_of(events)
            body = otlp.with_root(otlp.encode_events(piece.session_id, trace_id, events), root)
            await self._send_pieces([_Piece(piece.session_id, events, body, None, None)], report)

    def _report_sent(
        self, pieces: Sequence[_Piece], report: Report, rejected: int, message: str
    ) -> None:
        for piece in pieces:
            if piece.op is not None:
                report.op_sent(piece.op)
                continue
            count = len(piece.events)
            lost = min(rejected, count)
            rejected -= lost
            if lost:
                report.dropped(piece.session_id, lost, PARTIAL_REJECTED, message or None)
            if count - lost:
                report.delivered(piece.session_id, count - lost)

    def _report_failed(
        self, pieces: Sequence[_Piece], report: Report, reason: str, detail: str
    ) -> None:
        for piece in pieces:
            if piece.op is not None:
                what = f"{piece.op.kind} of session {piece.session_id}"
                report.op_failed(piece.op, reason, f"{what}: {detail}")
            else:
                report.dropped(piece.session_id, len(piece.events), reason, detail)


def _splittable(pieces: Sequence[_Piece]) -> bool:
    return len(pieces) > 1 or len(pieces[0].events) > 1


def _trace_of(events: Sequence[Event | msgspec.Raw]) -> str | None:
    for event in events:
        if isinstance(event, Event) and event.trace_id:
            return event.trace_id
    return None


def _oversize(event: Event | msgspec.Raw, size: int) -> str:
    what = type(event).__name__ if isinstance(event, Event) else "event"
    return f"{what} is {size:,} bytes as an OTLP export; trim its largest field"


def _refuses_content(exc: ApiError) -> bool:
    """True when the receiver refused what was sent (not who sent it, nor its availability)."""
    return not exc.retryable and exc.status is not None and exc.status not in (401, 403, 404)
