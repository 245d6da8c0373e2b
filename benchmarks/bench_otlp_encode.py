"""OTLP encoding of a realistic batch: msgspec OTLP/JSON (what the OTLP target sends) against
OTLP/protobuf built with ``opentelemetry-proto`` from the same events.

The batch: ``--events`` finalized events of one session, a mix as agents record them: LLM calls
with chat messages (a few hundred bytes of prompt and completion, tokens, model), tool calls and
actions with small ``params``/``returns``. Both encoders start from the same ``Event`` structs and
produce a complete ExportTraceServiceRequest body; the variants are interleaved within each
repetition, medians reported (the machine is noisy).

Run: ``python benchmarks/bench_otlp_encode.py [--events N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentops_async._spans import recorded_attributes
from agentops_async.events import ActionEvent, Event, LLMEvent, ToolEvent, _wire_events
from agentops_async.telemetry import _otlp_encode as otlp
from agentops_async.telemetry._otlp_encode import _name_and_kind, _ns  # the same span shape

SESSION, TRACE, ROOT = (
    "3f0c0b8e-1d2a-4c5e-9f00-0000000000a1",
    "0af7651916cd43dd8448eb211c80319c",
    "b7ad6b7169203331",
)


def _batch(n: int) -> list[Event]:
    events: list[Event] = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            event: Event = LLMEvent(
                model="gpt-4o-mini",
                prompt=[
                    {"role": "system", "content": "You are a careful planner. " * 4},
                    {"role": "user", "content": f"Plan step {i}: find flights to Lisbon " * 3},
                ],
                completion={"role": "assistant", "content": "Search flights, compare. " * 6},
                prompt_tokens=120 + i % 50,
                completion_tokens=40 + i % 20,
                params={"temperature": 0.2, "max_tokens": 256},
            )
        elif kind == 1:
            event = ToolEvent(name="search", params={"q": f"flights {i}"}, returns={"hits": 12})
        else:
            event = ActionEvent(action_type="decide", params={"step": i}, returns="ok")
        event._check(time.time())
        events.append(event)
    wired = _wire_events(events, SESSION, TRACE)
    return [e for e in wired if isinstance(e, Event)]


def _pb_value(value: Any, out: AnyValue) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            _pb_value(item, out.array_value.values.add())
    else:
        out.string_value = json.dumps(value)


def encode_protobuf(events: list[Event]) -> bytes:
    """The same spans as the JSON encoder makes, as OTLP/protobuf."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = otlp.SCOPE_NAME
    trace, root = bytes.fromhex(TRACE), bytes.fromhex(ROOT)
    for event in events:
        span = scope_spans.spans.add()
        span.trace_id = trace
        span.span_id = bytes.fromhex(event.span_id or "")
        span.parent_span_id = root
        span.name, kind = _name_and_kind(event)
        span.kind = Span.SpanKind.ValueType(kind)
        span.start_time_unix_nano = _ns(event.init_timestamp)
        span.end_time_unix_nano = _ns(event.end_timestamp)
        attributes = recorded_attributes(event)
        attributes["agentops.session.id"] = SESSION
        for key, value in attributes.items():
            kv: KeyValue = span.attributes.add()
            kv.key = key
            _pb_value(value, kv.value)
    data: bytes = request.SerializeToString()
    return data


def encode_json(events: list[Event]) -> bytes:
    run = otlp.with_root(otlp.encode_events(SESSION, TRACE, events), ROOT)
    return otlp.request_body([], [run])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    variants = {"msgspec OTLP/JSON": encode_json, "opentelemetry-proto protobuf": encode_protobuf}
    times: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, encode in variants.items():  # interleaved
            events = _batch(args.events)
            start = time.perf_counter()
            body = encode(events)
            times[name].append(time.perf_counter() - start)
            sizes[name] = len(body)
    print(f"{args.events} events, {args.repeats} repetitions (median, min, max per event)")
    for name, samples in times.items():
        per = [t / args.events * 1e6 for t in samples]
        print(
            f"  {name:30s} {statistics.median(per):6.2f} us  ({min(per):.2f}..{max(per):.2f})"
            f"  body {sizes[name] / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    main()
