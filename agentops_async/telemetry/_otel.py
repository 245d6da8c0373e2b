"""OpenTelemetry: the session's root span, and capture of spans started inside a session.

Recorded events are not OTel SDK spans (an SDK span start/end costs tens of microseconds); they
carry trace and span ids instead. What OTel gives us is context propagation (the session's root span
is current inside the session, so spans from user code and third-party instrumentation become its
children) and a span processor that routes every ended child span of an active session's trace onto
that session's export queue as an event.

We never install a global tracer provider (that would get in the user's way). When the global
provider is an SDK ``TracerProvider``, the router is added to it and the root span comes from it;
otherwise the root span comes from a private provider and there is nothing to capture (without an
SDK provider, no library records spans).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from ..events import ActionEvent, to_json_safe

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Span

SpanSink = Callable[[ActionEvent], object]


class _Route:
    __slots__ = ("root_span_id", "session_id", "sink", "trace_hex")

    def __init__(self, session_id: str, trace_hex: str, root_span_id: int, sink: SpanSink):
        self.session_id = session_id
        self.trace_hex = trace_hex
        self.root_span_id = root_span_id
        self.sink = sink


class SessionSpanRouter(SpanProcessor):
    """Routes ended spans of active sessions' traces to their sessions (any thread)."""

    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}

    def register(self, trace_id: int, root_span_id: int, session_id: str, sink: SpanSink) -> None:
        """Send the ended spans of ``trace_id`` (except the root) to ``sink``."""
        self._routes[trace_id] = _Route(session_id, format_trace_id(trace_id), root_span_id, sink)

    def unregister(self, trace_id: int) -> None:
        """Stop routing ``trace_id``."""
        self._routes.pop(trace_id, None)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        route = self._routes.get(ctx.trace_id)
        if route is None or ctx.span_id == route.root_span_id:
            return
        route.sink(span_to_event(span, route))

    def shutdown(self) -> None:
        self._routes.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _ns_to_datetime(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, timezone.utc)


def span_to_event(span: ReadableSpan, route: _Route) -> ActionEvent:
    """An ended OTel span as an AgentOps action event (``action_type="span"``)."""
    ctx = span.context
    parent = span.parent
    attributes: dict[str, Any] = dict(span.attributes or {})
    params = {
        "name": span.name,
        "kind": span.kind.name,
        "parent_span_id": format_span_id(parent.span_id) if parent is not None else None,
        "attributes": to_json_safe(attributes),
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "events": [
            {
                "name": e.name,
                "timestamp": e.timestamp,
                "attributes": to_json_safe(dict(e.attributes or {})),
            }
            for e in span.events
        ],
    }
    return ActionEvent(
        action_type="span",
        params=params,
        init_timestamp=_ns_to_datetime(span.start_time) or datetime.now(timezone.utc),
        end_timestamp=_ns_to_datetime(span.end_time),
        session_id=route.session_id,
        trace_id=route.trace_hex,
        span_id=format_span_id(ctx.span_id) if ctx is not None else None,
    )


_router = SessionSpanRouter()
_private_provider: TracerProvider | None = None
_attached: set[int] = set()
_lock = threading.Lock()


def router() -> SessionSpanRouter:
    """The process-wide span router."""
    return _router


def session_tracer(capture: bool) -> trace.Tracer:
    """The tracer that opens session root spans.

    With ``capture``, and a global SDK TracerProvider set by the application, the router joins that
    provider (once) and the root span comes from it, so child spans are captured. Otherwise a
    private provider is used.
    """
    global _private_provider
    from .. import __version__

    provider = trace.get_tracer_provider()
    with _lock:
        if capture and isinstance(provider, TracerProvider):
            if id(provider) not in _attached:
                provider.add_span_processor(_router)
                _attached.add(id(provider))
            return provider.get_tracer("agentops_async", __version__)
        if _private_provider is None:
            # An explicit resource: the default one runs resource detectors in a thread pool,
            # which fails once the interpreter is shutting down (a session started at exit).
            _private_provider = TracerProvider(
                resource=Resource({"service.name": "agentops_async"})
            )
        return _private_provider.get_tracer("agentops_async", __version__)
