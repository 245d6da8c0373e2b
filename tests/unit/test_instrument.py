"""``instrument()`` / ``uninstrument()``: idempotent, undo exactly what they did, join the
application's SDK providers (never replace or install one), and GenAI content log records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from _servers import REPO_ROOT
from _tracing import sdk_provider, span_recorder
from _venvs import require_test_package
from opentelemetry import trace
from opentelemetry._logs import LogRecord
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

import agentops_async as ao
from agentops_async.errors import ConfigError
from agentops_async.telemetry import _instrument
from agentops_async.telemetry._instrument import KnownInstrumentation
from agentops_async.telemetry._logs import SpanContentLogs
from agentops_async.telemetry._otel import router

FAKE_MODULE = "agentops_async_tests_fake_instrumentation"


class FakeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Records the providers it was given; makes one GenAI span per ``call()``."""

    calls: list[dict[str, Any]] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return []

    def _instrument(self, **kwargs: Any) -> None:
        FakeInstrumentor.calls.append(kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        FakeInstrumentor.calls.append({"uninstrument": True})


@pytest.fixture
def fake_known(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeInstrumentor]]:
    module = types.ModuleType(FAKE_MODULE)
    module.FakeInstrumentor = FakeInstrumentor  # type: ignore[attr-defined]
    module.__spec__ = types.SimpleNamespace(name=FAKE_MODULE)  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, FAKE_MODULE, module)
    fake = KnownInstrumentation("fake", "fake", FAKE_MODULE, "FakeInstrumentor")
    monkeypatch.setattr(_instrument, "KNOWN", (fake, *_instrument.KNOWN))
    monkeypatch.setattr(_instrument, "_installed", lambda m: m == FAKE_MODULE or _real(m))
    FakeInstrumentor.calls = []
    try:
        yield FakeInstrumentor
    finally:
        ao.uninstrument()
        FakeInstrumentor().uninstrument()  # in case a test turned it on itself


_real = _instrument._installed


def test_instrument_is_idempotent_and_uninstrument_undoes_it(
    fake_known: type[FakeInstrumentor],
) -> None:
    assert ao.instrument(include=["fake"]) == ["fake"]
    assert ao.instrument(include=["fake"]) == ["fake"]
    assert len([c for c in fake_known.calls if "uninstrument" not in c]) == 1
    assert FakeInstrumentor().is_instrumented_by_opentelemetry
    assert ao.uninstrument() == ["fake"]
    assert not FakeInstrumentor().is_instrumented_by_opentelemetry
    assert ao.uninstrument() == []
    assert fake_known.calls[-1] == {"uninstrument": True}


def test_instrument_leaves_an_instrumentation_the_app_turned_on_alone(
    fake_known: type[FakeInstrumentor],
) -> None:
    FakeInstrumentor().instrument()
    assert ao.instrument(include=["fake"]) == []
    assert ao.uninstrument() == []
    assert FakeInstrumentor().is_instrumented_by_opentelemetry  # still the application's


def test_the_real_openai_instrumentation_is_wrapped_once_and_unwrapped() -> None:
    openai = require_test_package("openai")
    require_test_package("opentelemetry.instrumentation.openai_v2")
    method = openai.resources.chat.completions.AsyncCompletions.__dict__["create"]
    try:
        assert "openai-v2" in ao.instrument()
        assert "openai-v2" in ao.instrument()
        wrapped = openai.resources.chat.completions.AsyncCompletions.__dict__["create"]
        assert wrapped is not method and wrapped.__wrapped__ is method  # one layer only
    finally:
        assert "openai-v2" in ao.uninstrument()
    assert openai.resources.chat.completions.AsyncCompletions.__dict__["create"] is method


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown instrumentation\(s\) \['opena1'\].*openai-v2"):
        ao.instrument(include=["opena1"])
    with pytest.raises(ConfigError, match="exclude"):
        ao.instrument(exclude=["nope"])


def test_a_client_without_otel_capture_is_refused() -> None:
    client = ao.AsyncClient(api_key="k", endpoint="http://127.0.0.1:9", instrument_otel=False)
    with pytest.raises(ConfigError, match="instrument_otel=False"):
        ao.instrument(client=client)
    with pytest.raises(ConfigError, match="instrument_llm_calls=True needs instrument_otel"):
        ao.AsyncClient(api_key="k", instrument_otel=False, instrument_llm_calls=True)


def test_init_instrument_llm_calls_turns_the_instrumentations_on(
    fake_known: type[FakeInstrumentor],
) -> None:
    client = ao.init(
        api_key="00000000-0000-0000-0000-000000000001",
        endpoint="http://127.0.0.1:9",
        instrument_llm_calls=True,
    )
    try:
        assert "fake" in _instrument.instrumented()
        assert client.config.instrument_llm_calls
    finally:
        client.close(timeout=0.1)
        assert ao.default_client().config.instrument_llm_calls  # the async twin, same settings


def test_instrument_joins_the_apps_provider_and_never_sets_one(
    fake_known: type[FakeInstrumentor], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = sdk_provider()
    recorder = span_recorder()  # the application's own processor and exporter
    set_calls: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", set_calls.append)
    assert ao.instrument(include=["fake"]) == ["fake"]
    given = fake_known.calls[0]
    assert given["tracer_provider"] is provider
    assert router() in provider._active_span_processor._span_processors  # added, not replacing
    assert set_calls == []
    # A span the instrumentation makes reaches the application's exporter, and the router.
    captured: list[ao.Event] = []
    tracer = given["tracer_provider"].get_tracer("fake")
    with tracer.start_as_current_span("session-root") as root:
        ctx = root.get_span_context()
        router().register(ctx.trace_id, ctx.span_id, "s", captured.append)
        try:
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"},
            ):
                pass
        finally:
            router().unregister(ctx.trace_id)
    assert [s.name for s in recorder.get_finished_spans()] == ["chat gpt-4o-mini", "session-root"]
    assert [type(e).__name__ for e in captured] == ["LLMEvent"]


_OWN_PROVIDER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, types
    from opentelemetry import trace
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
    import agentops_async as ao
    from agentops_async.telemetry import _instrument

    given = {}
    class Fake(BaseInstrumentor):
        def instrumentation_dependencies(self): return []
        def _instrument(self, **kw): given.update(kw)
        def _uninstrument(self, **kw): pass
    module = types.ModuleType("fake_instr"); module.Fake = Fake
    sys.modules["fake_instr"] = module
    _instrument.KNOWN = (_instrument.KnownInstrumentation("fake", "fake", "fake_instr", "Fake"),)
    _instrument._installed = lambda m: True

    async def main():
        names = ao.instrument()
        client = ao.AsyncClient(api_key="k", endpoint="http://127.0.0.1:9", max_retry_time=0,
                                log_session_stats=False)
        async with client.session(flush_on_exit=False) as session:
            tracer = given["tracer_provider"].get_tracer("fake")
            with tracer.start_as_current_span("chat m", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}):
                pass
        await client.close(timeout=0.1)
        print(json.dumps({"names": names, "counts": session.event_counts,
                          "global": type(trace.get_tracer_provider()).__name__,
                          "logger": type(given["logger_provider"]).__module__}))
    asyncio.run(main())
    """
)


def test_without_an_app_provider_the_private_one_is_passed_and_none_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _OWN_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["names"] == ["fake"]
    assert result["counts"] == {"llms": 1}  # the instrumentation's span reached the session
    assert result["global"] == "ProxyTracerProvider"  # nothing installed globally
    assert result["logger"].startswith("opentelemetry.sdk._logs")


# --- content on log records -------------------------------------------------------------------
def _record(name: str, trace_id: int, span_id: int, **kwargs: Any) -> Any:
    return types.SimpleNamespace(
        log_record=LogRecord(event_name=name, trace_id=trace_id, span_id=span_id, **kwargs)
    )


def test_content_records_before_the_span_ends_are_attached() -> None:
    logs = SpanContentLogs(lambda trace_id: trace_id == 1)
    messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    details = "gen_ai.client.inference.operation.details"
    logs.on_emit(_record(details, 1, 7, attributes={"gen_ai.input.messages": messages}))
    logs.on_emit(_record("gen_ai.user.message", 1, 8, body={"content": "legacy hi"}))
    logs.on_emit(
        _record(
            "gen_ai.choice",
            1,
            8,
            body={"index": 0, "finish_reason": "stop", "message": {"content": "hello"}},
        )
    )
    logs.on_emit(_record("gen_ai.user.message", 2, 9, body={"content": "other trace"}))
    assert logs.take(1, 7) == {"gen_ai.input.messages": messages}
    assert logs.take(1, 8) == {
        "gen_ai.input.messages": [{"role": "user", "content": "legacy hi"}],
        "gen_ai.output.messages": [
            {"role": "assistant", "content": "hello", "finish_reason": "stop"}
        ],
    }
    assert logs.take(2, 9) is None  # not a session's trace: never kept
    assert (logs.attached, logs.unmatched) == (3, 0)


def test_content_records_that_never_meet_their_span_are_counted_and_bounded() -> None:
    logs = SpanContentLogs(lambda trace_id: True, max_spans=2, max_records=1)
    assert logs.take(1, 1) is None  # span 1 ended with no content
    logs.on_emit(_record("gen_ai.user.message", 1, 1, body={"content": "late"}))
    assert logs.unmatched == 1  # arrived after its span ended
    for span_id in (2, 3, 4):  # room for two spans: the oldest (2) is dropped
        logs.on_emit(_record("gen_ai.user.message", 1, span_id, body={"content": "x"}))
    assert logs.unmatched == 2
    logs.on_emit(_record("gen_ai.user.message", 1, 4, body={"content": "too many"}))
    assert logs.unmatched == 3  # one record per span at most
    logs.discard_trace(1)  # the session ended before spans 3 and 4 did
    assert logs.unmatched == 5
    assert logs.take(1, 3) is None


_APP_LOGGER_PROVIDER_SCRIPT = textwrap.dedent(
    """
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    app = LoggerProvider()
    set_logger_provider(app)
    from agentops_async.telemetry._otel import capture_logger_provider, router
    first, second = capture_logger_provider(), capture_logger_provider()
    processors = list(app._multi_log_record_processor._log_record_processors)
    print(first is app and second is app, processors.count(router().content),
          get_logger_provider() is app)
    """
)


def test_the_apps_logger_provider_is_joined_once() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _APP_LOGGER_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "1", "True"]


def test_capture_content_sets_only_what_the_user_did_not_and_is_restored(
    fake_known: type[FakeInstrumentor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    content, traceloop = _instrument.CONTENT_ENV, _instrument.TRACELOOP_CONTENT_ENV
    monkeypatch.delenv(content, raising=False)
    monkeypatch.setenv(traceloop, "false")  # the user's choice
    assert ao.instrument(include=["fake"], capture_content=True) == ["fake"]
    assert os.environ[content] in ("SPAN_ONLY", "true")
    assert os.environ[traceloop] == "false"  # theirs wins
    with caplog.at_level("WARNING", logger="agentops_async"):
        ao.instrument(include=["fake"], capture_content=False)  # already on: says so
    assert os.environ[content] in ("NO_CONTENT", "false")
    assert "call uninstrument() first" in caplog.text
    ao.uninstrument()
    assert content not in os.environ
    assert os.environ[traceloop] == "false"
