"""OTLP/HTTP trace ingest (``POST /v1/traces``), protobuf or JSON, with the project's API key.

The decoding is :mod:`agentops_async.collector._otlp`; here the spans whose trace belongs to one
of the project's sessions become that session's ``spans`` events, and the others are refused in
the answer's ``partialSuccess``.
"""

from __future__ import annotations

import functools

from aiohttp import web

from ..._limits import MAX_NESTING_DEPTH
from .. import _auth as auth
from .. import _otlp as otlp
from .. import _wire as wire
from .._context import Context
from .._http import continue_after, fail
from .._ingest import nesting_exceeds, too_deep_message
from .._storage import EventRow

__all__ = ["add_routes"]


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add ``POST /v1/traces`` to ``app``."""
    api = _OtlpApi(ctx)
    sender = continue_after(functools.partial(auth.api_key, ctx))
    app.add_routes([web.post("/v1/traces", api.traces, expect_handler=sender)])


def _decode_spans(body: bytes, protobuf: bool) -> list[otlp.SpanRecord]:
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


def _span_rows(spans: list[otlp.SpanRecord], sessions: dict[str, str]) -> list[EventRow]:
    """Rows of the spans of ``sessions`` (by trace id); a 400 if one is nested too deep."""
    rows: list[EventRow] = []
    for span in spans:
        session_id = sessions.get(span.trace_id)
        if session_id is None:
            continue
        span.session_id = session_id
        data = wire.encode(span).decode()
        if nesting_exceeds(data):
            fail(400, too_deep_message(f"span {span.span_id}"))
        rows.append(
            (session_id, span.id, span.event_type, span.init_timestamp, span.end_timestamp, data)
        )
    return rows


class _OtlpApi:
    """The OTLP request handler."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def traces(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key(ctx, request)).project_id
        protobuf = request.content_type == "application/x-protobuf"
        if not protobuf and request.content_type != "application/json":
            fail(415, "Content-Type must be application/x-protobuf or application/json")
        body = await ctx.body(request)
        spans = await ctx.off_loop(len(body), _decode_spans, body, protobuf)
        sessions = await ctx.storage.sessions_for_traces(
            project, sorted({s.trace_id for s in spans})
        )
        rows = await ctx.off_loop(len(body), _span_rows, spans, sessions)
        if rows:
            await ctx.storage.insert_events(rows)
        rejected = len(spans) - len(rows)
        message = f"{rejected} spans belong to no session of this project" if rejected else ""
        return web.Response(
            body=otlp.encode_response(protobuf, rejected, message),
            content_type="application/x-protobuf" if protobuf else "application/json",
        )
