"""OpenTelemetry: the session's root span, and capture of spans started inside a session.

Recorded events are not OTel SDK spans (an SDK span start/end costs tens of microseconds); they
carry trace and span ids instead. What OTel gives us is context propagation (the session's root span
is current inside the session, so spans from user code and third-party instrumentation become its
children) and a span processor that routes every ended child span of an active session's trace onto
that session's export queue, as the events :mod:`agentops_async._spans` maps it to.

A session is always a trace of its own: its root span has no parent, even when the session is
opened inside another span (a web request's, an agent framework's run); it carries a link to that
ambient span instead. So two sessions never share a trace id, and a span's trace id names the one
session whose root it descends from. The SDK's own network work runs in a quiet context
(:func:`quiet_context`): no span of the user's, instrumentation suppressed.

We never install a global tracer provider (that would get in the user's way). When the global
provider is an SDK ``TracerProvider``, the router is added to it (:func:`join_tracer_provider`)
and the root span comes from it. Otherwise nothing the application itself set up records spans,
and the root span is a non-recording span of a new trace (its context is all that is used; a
span of a private provider when it has a link to keep). A private provider carrying the router
exists for :func:`agentops_async.instrument`, which hands it to the GenAI instrumentations when
the application has no provider of its own: their spans are children of that context and are
routed by trace id like any other. The same rule holds for log records (message content that
instrumentations emit as logs, :mod:`._logs`): join the global SDK ``LoggerProvider``, else a
private one.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from .._spans import FinishedSpan, map_span
from ..events import Event
from ._logs import SpanContentLogs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Span

log = logging.getLogger("agentops_async")

SpanSink = Callable[[Event], object]


class _Route:
    __slots__ = ("root_span_id", "session_id", "sink")

    def __init__(self, session_id: str, root_span_id: int, sink: SpanSink):
        self.session_id = session_id
        self.root_span_id = root_span_id
        self.sink = sink


class SessionSpanRouter(SpanProcessor):
    """Routes ended spans of active sessions' traces to their sessions (any thread).

    A session is a trace of its own (its root span has no parent), so the trace id of a span
    names the one session whose root it descends from.
    """

    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}
        self._warned = False
        # Message content that instrumentations emit as log records, waiting for its span.
        self.content = SpanContentLogs(self._routes.__contains__)

    def register(self, trace_id: int, root_span_id: int, session_id: str, sink: SpanSink) -> None:
        """Send the events of the ended spans of ``trace_id`` (except the root) to ``sink``."""
        self._routes[trace_id] = _Route(session_id, root_span_id, sink)

    def unregister(self, trace_id: int) -> None:
        """Stop routing ``trace_id``."""
        if self._routes.pop(trace_id, None) is not None:
            self.content.discard_trace(trace_id)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        route = self._routes.get(ctx.trace_id)
        if route is None or ctx.span_id == route.root_span_id:
            return
        try:  # runs inside the user's span.end(): never raise there
            content = self.content.take(ctx.trace_id, ctx.span_id)
            for event in span_to_events(span, content):
                route.sink(event)
        except Exception:
            if not self._warned:
                self._warned = True
                log.warning(
                    "agentops_async: could not capture span %r into session %s (it is not "
                    "recorded); later failures are not logged",
                    span.name,
                    route.session_id,
                    exc_info=True,
                )

    def shutdown(self) -> None:
        self._routes.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_to_events(span: ReadableSpan, content: dict[str, object] | None = None) -> list[Event]:
    """The events an ended OTel span becomes (see :mod:`agentops_async._spans`).

    ``content``: message attributes its log records carried (:mod:`._logs`); the span's own
    attributes win over them.
    """
    finished = FinishedSpan.from_readable_span(span)
    if content:
        finished = msgspec.structs.replace(finished, attributes={**content, **finished.attributes})
    return map_span(finished)


# --- the SDK's own work runs in a quiet context -------------------------------------------------
# Everything the SDK does on the wire (the exporter task, the API client's requests) runs with no
# current span and with OpenTelemetry instrumentation suppressed: an instrumented HTTP client
# (opentelemetry-instrumentation-aiohttp-client...) then makes no span of our requests, which
# would otherwise be captured into the session, exported, and make another span, and so on.
_SUPPRESS_KEYS: tuple[object, ...] = tuple(
    key
    for key in (
        getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None),
        getattr(otel_context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None),
        "suppress_instrumentation",  # the plain-string key older instrumentations read
    )
    if key is not None
)


def suppressed_otel_context() -> Context:
    """An OpenTelemetry context with no current span and instrumentation suppressed."""
    ctx = Context()
    for key in _SUPPRESS_KEYS:
        ctx = otel_context.set_value(key, True, ctx)  # type: ignore[arg-type]
    return ctx


def quiet_context() -> contextvars.Context:
    """A fresh ``contextvars.Context`` for the SDK's own tasks: none of the caller's context
    variables (no current session, no current span), OTel instrumentation suppressed.

    Start a task in it with ``quiet_context().run(loop.create_task, coro)`` (a task copies the
    context it is created in).
    """
    ctx = contextvars.Context()
    ctx.run(otel_context.attach, suppressed_otel_context())
    return ctx


def session_links() -> list[trace.Link]:
    """A link to the ambient span, if any: a session is a new trace, joined to where it began."""
    ambient = trace.get_current_span().get_span_context()
    if not ambient.is_valid:
        return []
    return [trace.Link(ambient, {"agentops.link": "opened_in"})]


_router = SessionSpanRouter()
_private_provider: TracerProvider | None = None
_private_logger_provider: LoggerProvider | None = None
_attached: set[int] = set()
_lock = threading.Lock()
_global_tracer: tuple[object, trace.Tracer] | None = None  # (provider, its tracer), made once


def router() -> SessionSpanRouter:
    """The process-wide span router."""
    return _router


def join_tracer_provider(provider: TracerProvider) -> None:
    """Add the router to ``provider`` (the application's), once; never replace anything."""
    with _lock:
        if id(provider) not in _attached:
            provider.add_span_processor(_router)
            _attached.add(id(provider))


def private_tracer_provider() -> TracerProvider:
    """The SDK's own tracer provider (never installed globally), with the router on it."""
    global _private_provider
    with _lock:
        if _private_provider is None:
            # An explicit resource: the default one runs resource detectors in a thread pool,
            # which fails once the interpreter is shutting down (a session started at exit).
            _private_provider = TracerProvider(
                resource=Resource({"service.name": "agentops_async"})
            )
            _private_provider.add_span_processor(_router)
        return _private_provider


def capture_tracer_provider() -> TracerProvider:
    """Where capture happens: the global SDK provider (joined), else the private one."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        join_tracer_provider(provider)
        return provider
    return private_tracer_provider()


def capture_logger_provider() -> LoggerProvider:
    """Where content log records are caught: the global SDK ``LoggerProvider`` (our processor
    added once, nothing replaced), else a private one (never installed globally)."""
    global _private_logger_provider
    provider = get_logger_provider()
    with _lock:
        if isinstance(provider, LoggerProvider):
            if id(provider) not in _attached:
                provider.add_log_record_processor(_router.content)
                _attached.add(id(provider))
            return provider
        if _private_logger_provider is None:
            _private_logger_provider = LoggerProvider(
                resource=Resource({"service.name": "agentops_async"})
            )
            _private_logger_provider.add_log_record_processor(_router.content)
        return _private_logger_provider


class _ContextOnlyTracer(trace.NoOpTracer):
    """Opens session root spans that only carry a fresh trace: nothing records them.

    Where a root span would come from a provider of our own (no SDK provider of the
    application's, or capture switched off), no processor ever sees it: what the session needs
    of it is its context (new trace and span ids, sampled, for its children and the ids of its
    events), and an SDK span for that costs ~20 us per session (attributes, sampler, lock) where
    this costs ~2. A session opened inside another span gets a real span, which keeps its link.
    """

    def __init__(self) -> None:
        self._ids = RandomIdGenerator()
        self._linking: trace.Tracer | None = None

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        if kwargs.get("links"):
            # Opened inside another span (of a provider that is not global): a real span keeps
            # the link to it, for whoever looks at ``session.span``.
            return self._linking_tracer().start_span(*args, **kwargs)
        return self.new_trace_span()

    def new_trace_span(self) -> trace.Span:
        """A non-recording span of a new sampled trace (what ``start_span`` gives without
        links; a session calls it directly, without building the span's attributes)."""
        ids = self._ids
        context = trace.SpanContext(
            ids.generate_trace_id(),
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED,
        )
        return trace.NonRecordingSpan(context)

    def _linking_tracer(self) -> trace.Tracer:
        if self._linking is None:
            from .. import __version__

            # An explicit resource: the default one runs resource detectors in a thread pool,
            # which fails once the interpreter is shutting down (a session started at exit).
            provider = TracerProvider(resource=Resource({"service.name": "agentops_async"}))
            self._linking = provider.get_tracer("agentops_async", __version__)
        return self._linking


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_context_only_tracer = _ContextOnlyTracer()
context_only_tracer = _context_only_tracer


def _global_tracer_provider() -> object:
    """``trace.get_tracer_provider()`` without its cost per session (~1 µs, mostly an
    ``os.environ`` lookup) while the application has set no provider: the global it reads,
    unless ``OTEL_PYTHON_TRACER_PROVIDER`` names one (that one is loaded on the first call)."""
    provider = getattr(trace, "_TRACER_PROVIDER", None)
    if provider is not None or _PROVIDER_FROM_ENV:
        return trace.get_tracer_provider()
    return None


# Read once: the provider named in the environment is loaded by the first lookup anyway.
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ or not hasattr(
    trace, "_TRACER_PROVIDER"
)


def session_tracer(capture: bool) -> trace.Tracer:
    """The tracer that opens session root spans.

    With ``capture``, and a global SDK TracerProvider set by the application, the router joins that
    provider (once) and the root span comes from it, so child spans are captured. Otherwise the
    root span records nothing (no processor would see it): it carries a new trace's context.
    """
    global _global_tracer
    if not capture:
        return _context_only_tracer
    provider = _global_tracer_provider()
    cached = _global_tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    if not isinstance(provider, TracerProvider):
        return _context_only_tracer
    from .. import __version__

    join_tracer_provider(provider)
    tracer = provider.get_tracer("agentops_async", __version__)
    _global_tracer = (provider, tracer)
    return tracer
