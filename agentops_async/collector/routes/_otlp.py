"""OTLP/HTTP trace ingest (``POST /v1/traces``), protobuf or JSON.

The sender shows a project credential: the API key (``X-Agentops-Api-Key`` or
``Authorization: Bearer <key>``) or a project token from ``POST /v3/auth/token``
(``Authorization: Bearer <jwt>``, what the agentops SDK 0.4 sends). An export, in order: the
decoding (:mod:`agentops_async.collector._otlp`, to ``FinishedSpan``), the session of each trace
(one of the project's sessions that names the trace id, else one made from the trace by the rules
of :mod:`agentops_async.collector._traces`), then each span's typed events through the mapping
shared with the SDK (:func:`agentops_async._spans.map_span`), stored with ids derived from the
span (idempotent: a span exported twice, or captured by the SDK and exported over OTLP, is stored
once). A tool span's ``gen_ai.usage.total_cost`` becomes its ``tools`` event's ``cost`` column,
which the session's cost sums (see :func:`tool_cost`). Spans that cannot be stored (their
trace's session belongs to another project, a time out of range, an id of the wrong size,
attributes or an event nested too deep) are refused one by one in the answer's ``partialSuccess``
with the reason, and the rest of the export is stored; never a 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import msgspec
from aiohttp import web

from ..._limits import MAX_NESTING_DEPTH
from ..._spans import (
    AGENT_ID_ATTRIBUTE,
    AGENT_NAME_ATTRIBUTE,
    MARKER_ATTRIBUTE,
    FinishedSpan,
    is_marker,
    map_span,
)
from ...events import EventType, _encode_event, _wire_events
from .. import _auth as auth
from .. import _otlp as otlp
from .. import _traces as traces
from .. import _wire as wire
from .._context import Context
from .._http import continue_after, fail
from .._ingest import finish, nesting_exceeds
from .._storage import EventBatch, EventRow

__all__ = ["TOOL_COST_ATTRIBUTE", "add_routes", "tool_cost"]

log = logging.getLogger("agentops_async")

TOOL_COST_ATTRIBUTE = "gen_ai.usage.total_cost"
"""The span attribute of a tool call's cost in US dollars, stored as its ``tools`` event's cost."""

_head_decoder = msgspec.json.Decoder(wire.EventHead)


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add ``POST /v1/traces`` to ``app``."""
    api = _OtlpApi(ctx)
    sender = continue_after(functools.partial(auth.project_credential, ctx))
    app.add_routes([web.post("/v1/traces", api.traces, expect_handler=sender)])


def _decode_spans(body: bytes, protobuf: bool) -> otlp.DecodedSpans:
    try:
        if protobuf:
            return otlp.decode_protobuf_request(body)
        return otlp.decode_json_request(body)
    except ValueError as exc:
        fail(400, str(exc))
    except RecursionError:
        fail(400, f"invalid OTLP body: nested deeper than {MAX_NESTING_DEPTH} levels")
    except ImportError:
        fail(415, "OTLP/protobuf needs opentelemetry-proto: pip install agentops-async[collector]")


class _Rows(msgspec.Struct):
    """The rows of an export's spans, the agents they name, and the spans refused (with why)."""

    rows: EventBatch
    agents: list[tuple[str, str, str | None]]
    refused: int = 0
    reason: str = ""


def tool_cost(span: FinishedSpan) -> float | None:
    """A span's ``gen_ai.usage.total_cost`` (agentops 0.4's ``@tool(cost=...)``), if usable.

    The same rule as an event's ``cost``: a finite number in [0, ``MAX_COST``] (US dollars).
    Anything else (a string, a boolean, a negative or non-finite number) is no cost: the span is
    still stored, the value stays in its attributes, and a debug record says why.
    """
    value = span.attributes.get(TOOL_COST_ATTRIBUTE)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0.0 <= value <= wire.MAX_COST  # also false for NaN
    ):
        log.debug(
            "span %s: %s=%r is not a finite number in [0, %g]: not counted in the session cost",
            span.span_id, TOOL_COST_ATTRIBUTE, value, wire.MAX_COST,
        )  # fmt: skip
        return None
    return float(value)


def _event_row(session_id: str, data: str, cost: float | None = None) -> EventRow:
    """The row of one mapped event; ``cost`` is the span's tool cost, for a ``tools`` event."""
    head = _head_decoder.decode(data)
    tool = head.event_type == EventType.TOOL
    if cost is not None and tool and head.cost is None:
        head.cost = cost
    # The shortest row that holds the event's columns, as the v2 API's (EventRow).
    began, ended = (head.init_timestamp, head.end_timestamp) if tool else (None, None)
    usage = (head.model, head.prompt_tokens, head.completion_tokens, head.cost)
    if usage != (None, None, None, None):
        return (session_id, head.id, head.event_type, began, ended, data, *usage)
    if tool:
        return (session_id, head.id, head.event_type, began, ended, data)
    return (session_id, head.id, head.event_type, data)


def _span_rows(spans: Sequence[FinishedSpan], sessions: dict[str, str]) -> _Rows:
    """The events of the spans whose trace has a session in ``sessions`` (by trace id), as rows.

    CPU work only (it runs in a decode thread for large exports).
    """
    out = _Rows(EventBatch(), [])
    for span in spans:
        session_id = sessions.get(span.trace_id)
        if session_id is None:
            out.refused += 1
            out.reason = out.reason or (
                f"trace {span.trace_id}: its session belongs to another project"
            )
            continue
        if is_marker(span):  # session or agent state (this SDK's OTLP target), not an event
            _marker_agent(span, session_id, out.agents)
            continue
        events = map_span(span)
        encoded = [_encode_event(e) for e in _wire_events(events, session_id, span.trace_id)
                   if not isinstance(e, msgspec.Raw)]  # fmt: skip
        texts = [data.decode() for data in encoded]
        if any(nesting_exceeds(text) for text in texts):
            out.refused += 1
            out.reason = out.reason or (
                f"span {span.span_id}: nested deeper than {MAX_NESTING_DEPTH} levels"
            )
            continue
        cost = tool_cost(span)
        out.rows.extend(_event_row(session_id, text, cost) for text in texts)
        if span.attributes.get("agentops.span.kind") == "agent":
            name = span.attributes.get("agentops.entity.name") or span.name.removesuffix(".agent")
            out.agents.append((session_id, span.span_id, str(name)))
    out.rows.width = max(map(len, out.rows), default=4)
    finish(out.rows)  # one width for the batch
    return out


def _marker_agent(
    span: FinishedSpan, session_id: str, agents: list[tuple[str, str, str | None]]
) -> None:
    """An agent marker (``agentops.marker = agent``): the agent it registers, if well formed."""
    if span.attributes.get(MARKER_ATTRIBUTE) != "agent":
        return
    agent_id = span.attributes.get(AGENT_ID_ATTRIBUTE)
    name = span.attributes.get(AGENT_NAME_ATTRIBUTE)
    if isinstance(agent_id, str) and agent_id and isinstance(name, str):
        agents.append((session_id, agent_id, name))


class _OtlpApi:
    """The OTLP request handler."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def traces(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.project_credential(ctx, request)).project_id
        protobuf = request.content_type == "application/x-protobuf"
        if not protobuf and request.content_type != "application/json":
            fail(415, "Content-Type must be application/x-protobuf or application/json")
        body = await ctx.body(request)
        decoded = await ctx.off_loop(len(body), _decode_spans, body, protobuf)
        spans = decoded.spans
        sessions = await self._sessions(project, spans)
        result = await ctx.off_loop(len(body), _span_rows, spans, sessions)
        result.refused += decoded.rejected
        result.reason = decoded.reason or result.reason
        if result.rows:
            await ctx.storage.insert_events(result.rows)
        for session_id, agent_id, name in result.agents:
            await ctx.storage.create_agent(session_id, agent_id, name)
        return web.Response(
            body=otlp.encode_response(protobuf, result.refused, result.reason),
            content_type="application/x-protobuf" if protobuf else "application/json",
        )

    async def _sessions(self, project: str, spans: Sequence[FinishedSpan]) -> dict[str, str]:
        """``{trace_id: session_id}`` for the export's traces, creating or completing the sessions
        made from traces (a trace whose session is another project's is left out)."""
        storage = self.ctx.storage
        by_trace = traces.group_by_trace(spans)
        known = await storage.sessions_for_traces(project, sorted(by_trace))
        sessions: dict[str, str] = {}
        for trace_id, trace_spans in by_trace.items():
            made = traces.session_id_of(trace_id, trace_spans)
            # Spans that name their session (agentops.session.id: this SDK's OTLP target) go to
            # it, even when another session names the same trace id (trace ids repeat when an
            # application seeds `random`, which OpenTelemetry's id generator uses).
            named = made != traces.trace_session_id(trace_id)
            session_id = known.get(trace_id)
            if session_id is not None and session_id != made and not named:
                sessions[trace_id] = session_id  # a v2 session that names the trace: as it is
                continue
            stored = await storage.get_session(made) if session_id is not None or named else None
            write = traces.session_for_trace(project, trace_id, trace_spans, stored)
            if write is not None:
                if await storage.upsert_session(write) != project:
                    continue
                self.ctx.remember_owner(made, project)
            sessions[trace_id] = made
        return sessions
