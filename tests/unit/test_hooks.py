"""before_send, the built-in secret redaction and session sampling, against the fake API."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import pytest

import agentops_async as ao
from agentops_async.testing import Capture

from .fake_api import FakeApi

REDACTED = "[REDACTED]"


def is_sampled(session_id: str, rate: float) -> bool:
    from agentops_async._sampling import is_sampled

    return is_sampled(session_id, rate)


pytestmark = pytest.mark.asyncio

OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def sent_events(api: FakeApi, session: ao.AsyncSession) -> list[dict[str, Any]]:
    return api.events[session.session_id]


# -- redaction ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key is {OPENAI_KEY} ok", f"key is {REDACTED} ok"),
        ("Authorization: Bearer abcdefghijklmnop123", f"Authorization: {REDACTED}"),
        ("curl -H 'x-api-key: 0123456789abcdef'", f"curl -H 'x-api-key: {REDACTED}'"),
        ("use Bearer abcdefghijklmnop123 here", f"use Bearer {REDACTED} here"),
        ("https://h/?api_key=0123456789abcdef&q=1", f"https://h/?api_key={REDACTED}&q=1"),
        (f"token {JWT}", f"token {REDACTED}"),
        ("AKIAIOSFODNN7EXAMPLE is aws", f"{REDACTED} is aws"),
        ("a plain sentence about the weather in Paris", None),
        ("sk-short", None),
    ],
)
async def test_redact_text_replaces_common_secrets_and_keeps_the_rest(
    text: str, expected: str | None
) -> None:
    from agentops_async._hooks import redact_text

    assert redact_text(text) == (text if expected is None else expected)
    assert redact_text(redact_text(text)) == redact_text(text)  # idempotent


async def test_secrets_in_params_returns_prompts_completions_are_sent_redacted(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    params = {"headers": {"Authorization": "Bearer abcdefghijklmnop123"}, "q": "weather"}
    async with client.session() as session:
        await session.record(ao.ActionEvent(params=params, returns=[f"got {OPENAI_KEY}"]))
        await session.record(
            ao.LLMEvent(
                prompt=[{"role": "user", "content": f"my key is {OPENAI_KEY}"}],
                completion=f"noted: {OPENAI_KEY}",
                params={"api_key": "anything-at-all", "temperature": 0.2},
            )
        )
    action, llm = sent_events(api, session)
    assert action["params"] == {"headers": {"Authorization": REDACTED}, "q": "weather"}
    assert action["returns"] == [f"got {REDACTED}"]
    assert llm["prompt"] == [{"role": "user", "content": f"my key is {REDACTED}"}]
    assert llm["completion"] == f"noted: {REDACTED}"
    assert llm["params"] == {"api_key": REDACTED, "temperature": 0.2}
    # the application's own values are untouched
    assert params["headers"] == {"Authorization": "Bearer abcdefghijklmnop123"}


async def test_redact_secrets_false_sends_values_as_recorded(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(redact_secrets=False)
    async with client.session() as session:
        await session.record(ao.ActionEvent(params={"api_key": OPENAI_KEY}))
    await client.close()
    assert sent_events(api, session)[0]["params"] == {"api_key": OPENAI_KEY}


async def test_error_traceback_is_redacted(api: FakeApi, client: ao.AsyncClient) -> None:
    async with client.session() as session:
        try:
            raise RuntimeError(f"auth failed with {OPENAI_KEY}")
        except RuntimeError as exc:
            await session.record(ao.ErrorEvent.from_exception(exc))
    (error,) = sent_events(api, session)
    assert OPENAI_KEY not in error["logs"] and REDACTED in error["logs"]
    assert error["details"] == f"auth failed with {REDACTED}"


# -- before_send ---------------------------------------------------------------------------------
async def test_before_send_changes_and_drops_events_and_drops_count_as_filtered(
    captured: Capture, make_client: Any
) -> None:
    seen: list[str | None] = []

    def before_send(event: ao.Event) -> ao.Event | None:
        seen.append(event.session_id)
        if isinstance(event, ao.ActionEvent) and event.action_type == "noise":
            return None
        event.params = {"scrubbed": True}
        return event

    client = make_client(before_send=before_send)
    async with client.session() as session:
        await session.record(ao.ActionEvent(action_type="keep", params={"user": "alice"}))
        await session.record(ao.ActionEvent(action_type="noise"))
        await session.record(ao.ToolEvent(name="search", params={"q": "x"}))
    await client.close()
    events = captured.session().events
    assert [(e["event_type"], e["params"]) for e in events] == [
        ("actions", {"scrubbed": True}),
        ("tools", {"scrubbed": True}),
    ]
    assert seen == [session.session_id] * 3
    stats = client.stats
    assert stats.filtered == 1
    assert stats.dropped == 0 and stats.dropped_by_reason == {}
    assert stats.delivered == 2 and stats.pending == 0
    assert (session.stats.recorded, session.stats.delivered) == (3, 2)
    assert (session.stats.filtered, session.stats.dropped) == (1, 0)


async def test_a_raising_before_send_drops_only_that_event_counted_and_logged_once(
    captured: Capture, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")

    def before_send(event: ao.Event) -> ao.Event | None:
        if event.params == {"bad": True}:
            raise ValueError("hook bug")
        return event

    client = make_client(before_send=before_send)
    async with client.session() as session:
        for i in range(3):
            await session.record(ao.ActionEvent(params={"bad": True}))
            await session.record(ao.ActionEvent(params={"i": i}))
    await client.close()
    assert [e["params"] for e in captured.session().events] == [
        {"i": 0},
        {"i": 1},
        {"i": 2},
    ]
    assert client.stats.dropped_by_reason == {"before_send raised an exception": 3}
    assert client.stats.filtered == 0
    hook_logs = [r for r in caplog.records if "before_send raised" in r.getMessage()]
    assert len(hook_logs) == 1 and hook_logs[0].exc_info is not None


async def test_before_send_applies_to_events_recorded_from_other_threads(
    captured: Capture, make_client: Any
) -> None:
    client = make_client(before_send=lambda e: None if e.params == {"drop": 1} else e)
    async with client.session() as session:

        def work() -> None:
            session.record_threadsafe(ao.ActionEvent(params={"drop": 1}))
            session.record_threadsafe(ao.ActionEvent(params={"token": "abcdefghijklmnop"}))

        thread = threading.Thread(target=work)
        thread.start()
        await asyncio.to_thread(thread.join)
    await client.close()
    assert [e["params"] for e in captured.session().events] == [{"token": REDACTED}]
    assert client.stats.filtered == 1
    assert (session.stats.recorded, session.stats.filtered, session.stats.delivered) == (2, 1, 1)


async def test_before_send_must_be_callable() -> None:
    with pytest.raises(ao.ConfigError, match=r"before_send=.*not callable"):
        ao.AsyncClient(api_key="k", before_send="nope")


# -- sampling ----------------------------------------------------------------------------------
async def test_sampling_is_deterministic_by_session_id_and_close_to_the_rate() -> None:
    ids = [str(uuid.UUID(int=i * 7919 + 1, version=4)) for i in range(4000)]
    kept = [i for i in ids if is_sampled(i, 0.25)]
    assert 0.2 < len(kept) / len(ids) < 0.3
    assert kept == [i for i in ids if is_sampled(i, 0.25)]
    assert all(is_sampled(i, 1.0) for i in ids) and not any(is_sampled(i, 0.0) for i in ids)


async def test_a_sampled_out_session_sends_nothing_and_is_counted(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(sample_rate=0.5)
    ids = [str(uuid.uuid4()) for _ in range(40)]
    for session_id in ids:
        async with client.session(session_id=session_id) as session:
            await session.record(ao.ActionEvent(action_type="step"))
        assert session.sampled is is_sampled(session_id, 0.5)
    await client.close()
    kept = {i for i in ids if is_sampled(i, 0.5)}
    assert 0 < len(kept) < len(ids)
    assert set(api.sessions) == kept
    assert set(api.events) == kept
    assert client.stats.sessions_sampled_out == len(ids) - len(kept)
    assert client.stats.dropped == 0


@pytest.mark.parametrize("rate", [-0.1, 1.5, True, "half"])
async def test_sample_rate_out_of_range_is_refused_naming_the_setting(rate: Any) -> None:
    with pytest.raises(ao.ConfigError, match="sample_rate="):
        ao.AsyncClient(api_key="k", sample_rate=rate)


async def test_captured_otel_spans_go_through_the_hooks(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    from _tracing import sdk_provider

    tracer = sdk_provider().get_tracer("llm-instrumentation")
    async with client.session() as session:
        with tracer.start_as_current_span(
            "chat", attributes={"http.header": f"Bearer {OPENAI_KEY}"}
        ):
            pass
    (captured,) = sent_events(api, session)
    assert captured["params"]["attributes"] == {"http.header": f"Bearer {REDACTED}"}


async def test_only_text_under_a_secret_named_key_is_replaced(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    params = {"Api_Token": True, "token": {"kind": "refresh"}, "password": "hunter2"}
    async with client.session() as session:
        await session.record(ao.ActionEvent(params=params))
    (event,) = sent_events(api, session)
    assert event["params"] == {
        "Api_Token": True,
        "token": {"kind": "refresh"},
        "password": REDACTED,
    }


async def test_the_per_field_pre_check_skips_only_values_that_cannot_hold_a_secret() -> None:
    from agentops_async._hooks import redact_event

    clean = {"query": "benchmark", "k": 3, "ok": True, "none": None}
    key = "sk-" + "a" * 20
    event = ao.LLMEvent(
        params=clean,
        returns={"token": "abc", "n": 1},  # short text, but under a secret-named key
        prompt=[{"role": "user", "content": f"use {key}"}],  # a container: walked
        completion=f"Authorization: Bearer {key}",
    )
    redact_event(event)
    assert event.params is clean  # nothing to redact: the same object, not a copy
    assert event.returns == {"token": REDACTED, "n": 1}
    assert event.prompt == [{"role": "user", "content": f"use {REDACTED}"}]
    assert key not in str(event.completion) and REDACTED in str(event.completion)
    error = ao.ErrorEvent(details={"password": "x" * 3}, logs=f"Traceback: api_key={key}")
    redact_event(error)
    assert error.details == {"password": REDACTED}
    assert key not in error.logs  # type: ignore[operator]


async def test_an_event_whose_redaction_raises_is_dropped_alone_counted_and_logged_once(
    captured: Capture, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")

    class Treacherous:  # a key that collides with "token" and cannot be compared
        def __hash__(self) -> int:
            return hash("token")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("cannot compare")

    client = make_client()
    async with client.session() as session:
        for i in range(3):
            await session.record(ao.ActionEvent(params={"i": i, "key": f"sk-{'k' * 20}"}))
            if i == 1:
                await session.record(ao.ActionEvent(params={Treacherous(): "x"}))
    await client.close()
    assert [e["params"] for e in captured.session().events] == [
        {"i": i, "key": REDACTED} for i in range(3)
    ]
    assert client.stats.dropped_by_reason == {"secret redaction failed": 1}
    assert len([r for r in caplog.records if "secret redaction failed" in r.getMessage()]) == 1
