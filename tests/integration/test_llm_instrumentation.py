"""LLM calls through ``agentops_async.instrument()``: the real ``openai`` package and real
OpenTelemetry instrumentations, against a local OpenAI-compatible server and the real collector.

Each test makes four calls in one session: a plain completion, a streaming one (with
``stream_options.include_usage``), one answered with a tool call, and one the server fails (500).
The collector must store them as ``llms`` events with model, token counts and messages, price the
session, and keep the failure as an ``ErrorEvent`` linked to its LLM event.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from _llm_calls import MODEL, four_calls
from _servers import REPO_ROOT, ChatError, fake_chat_completions
from _tracing import sdk_provider, span_recorder
from _venvs import client_venv, require_test_package

import agentops_async as ao

require_test_package("openai")
require_test_package("opentelemetry.instrumentation.openai_v2")

pytestmark = pytest.mark.asyncio

# Token counts the fake model reports, per prompt: (prompt, completion).
USAGE = {"plain": (1000, 500), "stream": (2000, 1000), "tool": (400, 100)}
# gpt-4o-mini: $0.15 per 1M input tokens, $0.60 per 1M output tokens (collector/_prices.py).
EXPECTED_COST = sum(
    (Decimal(p) * Decimal("0.15") + Decimal(c) * Decimal("0.60")) / 1_000_000
    for p, c in USAGE.values()
)
# OpenLLMetry's OpenAI instrumentation of the indexed attribute names, the openai 1.x it
# supports, and what agentops_async itself needs (it runs from the repository).
OPENLLMETRY_REQUIREMENTS = [
    "opentelemetry-instrumentation-openai==0.47.5",
    "openai==1.109.1",
    # it imports opentelemetry._events, which later opentelemetry-api releases dropped
    "opentelemetry-api==1.36.0",
    "opentelemetry-sdk==1.36.0",
    "opentelemetry-instrumentation==0.57b0",
    "opentelemetry-semantic-conventions==0.57b0",
    "msgspec",
    "aiohttp",
    "anyio",
]
OPENLLMETRY_VENV_ENV = "AGENTOPS_TEST_OPENLLMETRY_VENV"
CONTENT_VARIABLES = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "OTEL_INSTRUMENTATION_GENAI_EMIT_EVENT",
    "TRACELOOP_TRACE_CONTENT",
)


def _answer(body: dict[str, Any]) -> dict[str, Any] | ChatError:
    prompt = body["messages"][-1]["content"]
    if prompt == "fail":
        return ChatError(500, "the fake model is down")
    message: dict[str, Any] = {"role": "assistant", "content": f"answer to {prompt}"}
    finish = "stop"
    if body.get("tools"):
        call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        }
        finish = "tool_calls"
    prompt_tokens, completion_tokens = USAGE[prompt]
    return {
        "id": f"chatcmpl-{prompt}", "object": "chat.completion", "created": int(time.time()),
        "model": f"{MODEL}-2024-07-18",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


@pytest_asyncio.fixture
async def fake_openai() -> AsyncIterator[str]:
    async with fake_chat_completions(_answer) as url:
        yield url


@pytest.fixture
def clean_instrumentation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No content setting from the environment; everything instrument() did is undone after."""
    for variable in CONTENT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    try:
        yield
    finally:
        ao.uninstrument()


async def _four_calls(collector: Any, base_url: str) -> ao.AsyncSession:
    session: ao.AsyncSession = await four_calls(collector.api_key, collector.url, base_url)
    return session


def _text(value: Any) -> str:
    """Every string inside a stored prompt or completion, joined (message shapes differ)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return ""


async def _check_stored(collector: Any, session_id: str, counts: dict[str, int]) -> None:
    events = await collector.get_events(session_id)
    llms = [e for e in events if e["event_type"] == "llms"]
    errors = [e for e in events if e["event_type"] == "errors"]
    assert len(llms) == 4, [e["event_type"] for e in events]
    by_prompt = {}
    for event in llms:
        prompt = _text(event["prompt"])
        for key in (*USAGE, "fail"):
            if key in prompt.split():
                by_prompt[key] = event
    assert sorted(by_prompt) == ["fail", "plain", "stream", "tool"], [e["prompt"] for e in llms]
    for key, (prompt_tokens, completion_tokens) in USAGE.items():
        event = by_prompt[key]
        assert event["model"].startswith(MODEL), event["model"]
        assert (event["prompt_tokens"], event["completion_tokens"]) == (
            prompt_tokens,
            completion_tokens,
        ), key
    assert "answer to plain" in _text(by_prompt["plain"]["completion"])
    assert "answer to stream" in _text(by_prompt["stream"]["completion"])
    # The tool call shows as such: its name and arguments in the completion.
    tool_completion = _text(by_prompt["tool"]["completion"])
    assert "get_weather" in tool_completion and "Paris" in tool_completion
    # The failed call: an LLM event (model, no tokens) and an ErrorEvent that points at it.
    failed = by_prompt["fail"]
    assert failed["prompt_tokens"] in (None, 0)
    assert len(errors) == 1
    assert errors[0]["trigger_event_id"] == failed["id"]
    assert errors[0]["trigger_event_type"] == "llms"
    stored = await collector.get_session(session_id)
    assert stored is not None
    assert Decimal(str(stored["token_cost"])) == EXPECTED_COST
    assert counts == {"llms": 4, "errors": 1}  # the client's stats count them as llms


async def test_official_openai_instrumentation_stores_priced_llm_events(
    collector: Any, fake_openai: str, clean_instrumentation: None
) -> None:
    assert "openai-v2" in ao.instrument(capture_content=True)
    session = await _four_calls(collector, fake_openai)
    await _check_stored(collector, session.session_id, session.event_counts)


async def test_event_only_content_from_log_records_reaches_the_llm_event(
    collector: Any, fake_openai: str, clean_instrumentation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The official instrumentation then writes the messages on a log record, not on the span.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    recorder = span_recorder()  # the application's provider: instrument() joins it
    assert ao.instrument(include=["openai-v2"]) == ["openai-v2"]
    session = await _four_calls(collector, fake_openai)
    # The spans themselves carry no message (so the content did come from the log records).
    for span in recorder.get_finished_spans():
        assert "gen_ai.input.messages" not in (span.attributes or {}), span.name
    await _check_stored(collector, session.session_id, session.event_counts)


async def _run_llm_calls(python: str, *args: str) -> dict[str, Any]:
    """Run tests/_llm_calls.py in a fresh interpreter; its JSON result."""
    env = {k: v for k, v in os.environ.items() if k not in CONTENT_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
    process = await asyncio.create_subprocess_exec(
        python,
        str(REPO_ROOT / "tests" / "_llm_calls.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_sync_init_with_instrument_llm_calls_records_the_call(
    collector: Any, fake_openai: str
) -> None:
    """``init(..., instrument_llm_calls=True)`` and the sync ``openai.OpenAI`` client, as an
    AgentOps user writes it (in a fresh interpreter: init() sets the process's defaults)."""
    result = await _run_llm_calls(
        sys.executable, "sync", collector.api_key, collector.url, fake_openai
    )
    assert result["instrumented"] == ["openai-v2"]
    assert result["counts"] == {"llms": 1}
    prompt_tokens, completion_tokens = USAGE["plain"]
    cost = Decimal(prompt_tokens) * Decimal("0.15") + Decimal(completion_tokens) * Decimal("0.60")
    assert Decimal(result["token_cost"]) == cost / 1_000_000  # what the API answered the client
    [llm] = await collector.get_events(result["session_id"], event_type="llms")
    assert llm["model"].startswith(MODEL)
    assert (llm["prompt_tokens"], llm["completion_tokens"]) == USAGE["plain"]


async def test_openllmetry_openai_instrumentation_passes_the_same_checks(
    collector: Any, fake_openai: str
) -> None:
    """OpenLLMetry's instrumentation with its own attribute names (``gen_ai.prompt.N.*``,
    ``gen_ai.completion.N.*``, ``llm.usage.*``: releases before 0.5x; later ones write the
    current ``gen_ai.input.messages``), in a cached venv of its own: it cannot share one with the
    official instrumentation's opentelemetry-util-genai. There the application has no tracer
    provider: instrument() hands the instrumentation the SDK's private one."""
    python = client_venv("openllmetry-openai", OPENLLMETRY_REQUIREMENTS, OPENLLMETRY_VENV_ENV)
    result = await _run_llm_calls(
        str(python), "openai", collector.api_key, collector.url, fake_openai
    )
    assert result["instrumented"] == ["openai"]
    assert result["global_provider"] == "ProxyTracerProvider"
    events = await collector.get_events(result["session_id"])
    names = {key for e in events for key in (e["params"] or {}).get("attributes", {})}
    assert {"gen_ai.prompt.0.content", "gen_ai.completion.0.role"} <= names, sorted(names)
    assert any(name.startswith("llm.usage.") for name in names), sorted(names)
    await _check_stored(collector, result["session_id"], result["event_counts"])


async def test_the_apps_own_provider_and_exporter_keep_their_spans(
    collector: Any, fake_openai: str, clean_instrumentation: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = sdk_provider()  # the application's global SDK provider, with its own exporter
    recorder = span_recorder()
    set_calls: list[object] = []
    monkeypatch.setattr("opentelemetry.trace.set_tracer_provider", set_calls.append)
    assert ao.instrument(include=["openai-v2"], capture_content=True) == ["openai-v2"]
    session = await _four_calls(collector, fake_openai)
    assert set_calls == []
    from opentelemetry import trace

    assert trace.get_tracer_provider() is provider
    app_spans = [s for s in recorder.get_finished_spans() if s.name == f"chat {MODEL}"]
    assert len(app_spans) == 4  # the application's exporter got every LLM span
    assert {f"{s.context.trace_id:032x}" for s in app_spans if s.context} == {session.trace_id}
    # and so did the session
    await _check_stored(collector, session.session_id, session.event_counts)
