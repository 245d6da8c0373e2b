"""Message content that GenAI instrumentations put on log records, attached to its LLM span.

Newer OpenTelemetry GenAI instrumentations can write a model call's prompt and completion as a
*log record* (an "event") correlated with the call's span instead of (or besides) span
attributes: the official OpenAI instrumentation in its ``EVENT_ONLY`` content mode emits one
``gen_ai.client.inference.operation.details`` record with ``gen_ai.input.messages`` and
``gen_ai.output.messages``; its older releases (and other instrumentations of the 1.30
conventions) emit one ``gen_ai.{system,user,assistant,tool}.message`` record per prompt message
and one ``gen_ai.choice`` per completion.

:class:`SpanContentLogs` is a ``LogRecordProcessor``: it keeps the content of the records of spans
in an active session's trace, keyed by span id, until :class:`~.._otel.SessionSpanRouter` maps the
span when it ends; the content then becomes the span's ``gen_ai.input.messages`` /
``gen_ai.output.messages`` / ``gen_ai.system_instructions`` (the span's own attributes win), so
the LLM event carries the messages.

Memory is bounded: at most ``max_spans`` spans' content is held (the oldest is dropped beyond),
each with at most ``max_records`` records. A record that never meets its span (the span ended
before the record was emitted, it was dropped for room, or its session ended first) is not
attached: the event has already been sent, and the collector stores an event once. Such records
are counted in :attr:`SpanContentLogs.unmatched` and logged once at DEBUG. The instrumentations
this module knows emit their records before they end the span.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor

from ..events import _to_json_safe

log = logging.getLogger("agentops_async")

DETAILS_EVENT = "gen_ai.client.inference.operation.details"
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
_ROLES = {"system", "user", "assistant", "tool"}

SpanKey = tuple[int, int]  # (trace id, span id)


class _Content:
    """What the records of one span said so far."""

    __slots__ = ("attributes", "inputs", "outputs", "records")

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.records = 0

    def as_attributes(self) -> dict[str, Any]:
        out = dict(self.attributes)
        if self.inputs and "gen_ai.input.messages" not in out:
            out["gen_ai.input.messages"] = self.inputs
        if self.outputs and "gen_ai.output.messages" not in out:
            out["gen_ai.output.messages"] = self.outputs
        return out


class SpanContentLogs(LogRecordProcessor):
    """Keeps GenAI content log records until their span ends (see the module docstring).

    Args:
        is_routed: ``is_routed(trace_id)``: the trace belongs to an active session (other
            records are ignored at once, nothing is kept for them).
        max_spans: Most spans whose content is held at once.
        max_records: Most records kept for one span.
    """

    def __init__(
        self,
        is_routed: Callable[[int], bool],
        max_spans: int = 1024,
        max_records: int = 256,
    ) -> None:
        self._is_routed = is_routed
        self._max_spans = max_spans
        self._max_records = max_records
        self._pending: OrderedDict[SpanKey, _Content] = OrderedDict()
        self._ended: deque[SpanKey] = deque(maxlen=max_spans)
        self._ended_set: set[SpanKey] = set()
        self._lock = threading.Lock()
        self.attached = 0
        """Records whose content went onto their span's event."""
        self.unmatched = 0
        """Records that never met their span (late, dropped for room, session over)."""
        self._warned = False

    # -- LogRecordProcessor -------------------------------------------------------------------
    def on_emit(self, log_data: Any) -> None:
        # SDK >= 1.3x passes a ReadWriteLogRecord, older ones a LogData: both hold .log_record.
        record = getattr(log_data, "log_record", log_data)
        trace_id = getattr(record, "trace_id", None)
        span_id = getattr(record, "span_id", None)
        if not trace_id or not span_id or not self._is_routed(trace_id):
            return
        try:  # runs inside the instrumentation's call: never raise there
            self._keep((trace_id, span_id), record)
        except Exception:
            self._count_unmatched(1, "could not be read", exc_info=True)

    def emit(self, log_data: Any) -> None:  # the name of on_emit in SDKs before 1.3x
        self.on_emit(log_data)

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- the router's side ----------------------------------------------------------------------
    def take(self, trace_id: int, span_id: int) -> dict[str, Any] | None:
        """The content attributes of span ``(trace_id, span_id)``, which just ended (or None)."""
        key = (trace_id, span_id)
        with self._lock:
            content = self._pending.pop(key, None) if self._pending else None
            if len(self._ended) == self._ended.maxlen:
                self._ended_set.discard(self._ended[0])
            self._ended.append(key)
            self._ended_set.add(key)
            if content is None:
                return None
            self.attached += content.records
        return content.as_attributes()

    def discard_trace(self, trace_id: int) -> None:
        """The session of ``trace_id`` ended: what its spans' records still hold is dropped."""
        with self._lock:
            if not self._pending:
                return
            stale = [key for key in self._pending if key[0] == trace_id]
            dropped = sum(self._pending.pop(key).records for key in stale)
        if dropped:
            self._count_unmatched(dropped, "their session ended before their span did")

    # -- internals ------------------------------------------------------------------------------
    def _keep(self, key: SpanKey, record: Any) -> None:
        attributes: Mapping[str, Any] = record.attributes or {}
        name = getattr(record, "event_name", None) or attributes.get("event.name")
        found = _content_of(name, attributes, record.body)
        if found is None:
            return
        dropped = 0
        with self._lock:
            if key in self._ended_set:
                dropped = 1
            else:
                content = self._pending.get(key)
                if content is None:
                    if len(self._pending) >= self._max_spans:
                        _, oldest = self._pending.popitem(last=False)
                        dropped = oldest.records
                    content = self._pending[key] = _Content()
                if content.records >= self._max_records:
                    dropped += 1
                else:
                    content.records += 1
                    which, value = found
                    if which == "input":
                        content.inputs.append(value)
                    elif which == "output":
                        content.outputs.append(value)
                    else:
                        content.attributes.update(value)
        if dropped:
            self._count_unmatched(dropped, "they did not meet their span (late, or no room)")

    def _count_unmatched(self, n: int, why: str, exc_info: bool = False) -> None:
        with self._lock:
            self.unmatched += n
            warned, self._warned = self._warned, True
        if not warned:
            log.debug(
                "agentops_async: %d GenAI content log record(s) not attached to their LLM "
                "event: %s (later ones are counted, not logged)",
                n,
                why,
                exc_info=exc_info,
            )


def _content_of(name: Any, attributes: Mapping[str, Any], body: Any) -> tuple[str, Any] | None:
    """``("attributes", {...})``, ``("input", message)``, ``("output", message)`` or None."""
    if name == DETAILS_EVENT or any(key in attributes for key in CONTENT_KEYS):
        found = {
            key: _to_json_safe(_plain(attributes[key])) for key in CONTENT_KEYS if key in attributes
        }
        return ("attributes", found) if found else None
    if not isinstance(name, str) or not name.startswith("gen_ai."):
        return None
    body = _plain(body) if body is not None else {}
    if not isinstance(body, dict):
        body = {"content": body}
    if name == "gen_ai.choice":
        message = body.get("message")
        message = dict(message) if isinstance(message, dict) else {}
        if "content" not in message and "tool_calls" not in message:
            return None
        message.setdefault("role", "assistant")
        if body.get("finish_reason") is not None:
            message["finish_reason"] = body["finish_reason"]
        return "output", _to_json_safe(message)
    role = name[len("gen_ai.") : -len(".message")] if name.endswith(".message") else None
    if role not in _ROLES or ("content" not in body and "tool_calls" not in body):
        return None
    message = {"role": role, **{k: v for k, v in body.items() if k != "id"}}
    if "id" in body:
        message["tool_call_id"] = body["id"]
    return "input", _to_json_safe(message)


def _plain(value: Any) -> Any:
    """Log attribute values (tuples, nested mappings) as plain lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
