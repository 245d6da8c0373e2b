"""OpenTelemetry helpers shared by the tests: the process's global SDK provider, and a recorder of
every span it ends (OTel lets a process set its global provider once)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_recorder: InMemorySpanExporter | None = None


def sdk_provider() -> TracerProvider:
    """The application's global SDK provider (set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


def span_recorder() -> InMemorySpanExporter:
    """An in-memory exporter of every span the global provider ends (cleared on each call)."""
    global _recorder
    if _recorder is None:
        _recorder = InMemorySpanExporter()
        sdk_provider().add_span_processor(SimpleSpanProcessor(_recorder))
    _recorder.clear()
    return _recorder


def ended_span(recorder: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The one span called ``name`` that ``recorder`` holds."""
    spans = [s for s in recorder.get_finished_spans() if s.name == name]
    assert len(spans) == 1, f"{len(spans)} spans called {name!r}"
    return spans[0]
