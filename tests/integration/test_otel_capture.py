"""OpenTelemetry capture against the real collector: the SDK's own requests are never spans of a
session, and a span delivered twice is stored once (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from _tracing import sdk_provider, span_recorder
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.trace import SpanKind, format_span_id

import agentops_async as ao
from agentops_async._spans import span_event_id
from agentops_async.telemetry._otel import router

pytestmark = pytest.mark.asyncio

RECORDED = 6


async def test_the_sdks_own_requests_are_never_spans_of_a_session(collector: Any) -> None:
    recorder = span_recorder()
    tracer = sdk_provider().get_tracer("web-app")
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument()
    try:
        client = ao.AsyncClient(
            api_key=collector.api_key,
            endpoint=collector.url,
            flush_interval=0.01,
            log_session_stats=False,
        )
        with tracer.start_as_current_span("GET /agent"):
            # The application's own HTTP calls are traced: the instrumentation is live.
            async with aiohttp.ClientSession() as http, http.get(f"{collector.url}/nowhere"):
                pass
            async with client.session() as session:
                for i in range(RECORDED):
                    await session.record(ao.ActionEvent(action_type="step", params={"i": i}))
                    assert await session.flush(10)  # one create_events request per event
        assert await client.close()
    finally:
        instrumentor.uninstrument()

    client_spans = [s for s in recorder.get_finished_spans() if s.kind is SpanKind.CLIENT]
    urls = [str(s.attributes.get("http.url") or s.attributes.get("url.full")) for s in client_spans]
    assert urls == [f"{collector.url}/nowhere"], "the SDK's requests must not be traced"
    events = await collector.get_events(session.session_id)
    assert sorted(e["params"]["i"] for e in events) == list(range(RECORDED))
    stored = json.dumps(events)
    assert "/v2/create_events" not in stored
    assert collector.url not in stored
    assert session.event_counts == {"actions": RECORDED}


async def test_a_span_delivered_twice_is_stored_once_and_an_llm_span_is_priced(
    collector: Any,
) -> None:
    recorder = span_recorder()
    tracer = sdk_provider().get_tracer("app")
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    llm_attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
    }
    async with client.session() as session:
        with tracer.start_as_current_span("retrieve"):
            pass
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=llm_attributes):
            pass
        # A second path delivers the same ended spans again (e.g. a processor added twice).
        for span in recorder.get_finished_spans():
            router().on_end(span)
    assert await client.close()

    events = await collector.get_events(session.session_id)
    assert sorted(e["event_type"] for e in events) == ["actions", "llms"]
    by_type = {e["event_type"]: e for e in events}
    for span in recorder.get_finished_spans():
        if span.name == "agentops.session":  # the root is the session itself, not an event
            continue
        event = by_type["llms" if span.name.startswith("chat") else "actions"]
        assert span.context is not None
        span_hex = format_span_id(span.context.span_id)
        assert event["id"] == span_event_id(session.trace_id, span_hex)
        assert event["span_id"] == span_hex
    llm = by_type["llms"]
    assert (llm["model"], llm["prompt_tokens"], llm["completion_tokens"]) == (
        "gpt-4o-mini-2024-07-18",
        1000,
        500,
    )
    stored = await collector.get_session(session.session_id)
    assert stored is not None
    # gpt-4o-mini: $0.15 per 1M input tokens, $0.60 per 1M output tokens.
    assert Decimal(str(stored["token_cost"])) == Decimal("0.00045")
