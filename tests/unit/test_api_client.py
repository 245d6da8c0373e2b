"""HTTP edge cases of the API client, against aioresponses (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from agentops_async import ApiError
from agentops_async._config import load_config
from agentops_async.api._client import ApiClient, RetryPolicy, SessionAuth

from .fake_api import API_KEY, ENDPOINT, CallbackResult, FakeApi

pytestmark = pytest.mark.asyncio

SID = "3f1c0f5e-1111-4222-8333-444455556666"
BODY = (
    b'{"session": {"session_id": "'
    + SID.encode()
    + b'", "init_timestamp": "2026-01-01T00:00:00Z"}}'
)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's backoff sleeps instead of sleeping (keeps the tests instant)."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("agentops_async.api._client.asyncio.sleep", fake_sleep)
    return delays


def make_api(**settings: Any) -> ApiClient:
    config = load_config({"api_key": API_KEY, "endpoint": ENDPOINT, **settings}, environ={})
    return ApiClient(config, RetryPolicy(initial=0.1, maximum=2.0, max_elapsed=30.0))


async def test_create_session_sends_the_api_key_and_returns_the_jwt(api: FakeApi) -> None:
    client = make_api()
    answer = await client.create_session(BODY)
    await client.close()
    assert answer.jwt == f"jwt-{SID}-0"
    (_, headers, body) = api.calls("/v2/create_session")[0]
    assert headers["X-Agentops-Api-Key"] == API_KEY
    assert body["session"]["session_id"] == SID


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        (None, None),  # the AgentOps service: the standard calls
        ("/v2/create_sessions", "/v2/create_sessions"),
        ("https://elsewhere.example/v2/create_sessions", None),
        ("/v2/../admin/projects", None),
        ("//elsewhere.example/v2/x", None),
        ("/api/sessions", None),
    ],
)
async def test_the_sessions_batch_path_is_taken_only_under_the_api(
    api: FakeApi, offered: str | None, kept: str | None
) -> None:
    # The API key goes with that request: only a path under the API's own /v2/ is followed.
    answer = {"jwt": "j", "session_url": "u", "sessions_batch_path": offered}
    api.script("/v2/create_session", lambda body, headers: CallbackResult(payload=answer))
    client = make_api()
    await client.create_session(BODY)
    await client.close()
    assert client.sessions_batch_path == kept


async def test_parent_key_header_is_sent_when_configured(api: FakeApi) -> None:
    client = make_api(parent_key="parent-key")
    await client.create_session(BODY)
    await client.close()
    assert api.calls("/v2/create_session")[0][1]["X-Agentops-Parent-Key"] == "parent-key"


async def test_401_on_a_jwt_call_reauthorises_once_and_retries(api: FakeApi) -> None:
    client = make_api()
    auth = SessionAuth(SID, "old-jwt")
    api.script("/v2/create_events", 401)
    await client.create_events(auth, b'{"events": []}')
    await client.close()
    calls = api.calls("/v2/create_events")
    assert [c[1]["Authorization"] for c in calls] == ["Bearer old-jwt", f"Bearer jwt-{SID}-1"]
    assert api.calls("/v2/reauthorize_jwt")[0][1]["X-Agentops-Api-Key"] == API_KEY
    assert auth.jwt == f"jwt-{SID}-1"


async def test_a_second_401_after_reauthorising_is_an_error(api: FakeApi) -> None:
    client = make_api()
    api.script("/v2/create_events", 401, 401)
    with pytest.raises(ApiError) as info:
        await client.create_events(SessionAuth(SID, "old"), b'{"events": []}')
    await client.close()
    assert info.value.status == 401
    assert len(api.calls("/v2/reauthorize_jwt")) == 1


async def test_429_honours_retry_after(api: FakeApi, sleeps: list[float]) -> None:
    client = make_api()
    api.script("/v2/create_events", (429, "slow down", {"Retry-After": "7"}))
    await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert sleeps == [7.0]
    assert len(api.calls("/v2/create_events")) == 2


async def test_500s_are_retried_with_growing_jittered_backoff(
    api: FakeApi, sleeps: list[float]
) -> None:
    client = make_api()
    api.script("/v2/create_events", 500, 502, 503, 500)
    await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert len(api.calls("/v2/create_events")) == 5
    assert len(sleeps) == 4
    ceilings = [0.1, 0.2, 0.4, 0.8]
    assert all(0 <= d <= c for d, c in zip(sleeps, ceilings, strict=True))


async def test_repeated_500s_end_after_a_few_quick_attempts(
    api: FakeApi, sleeps: list[float]
) -> None:
    client = make_api()
    api.script("/v2/create_events", 500, 500, 500)
    with pytest.raises(ApiError, match="server error") as info:
        await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert info.value.status == 500 and not info.value.retryable
    assert len(api.calls("/v2/create_events")) == 3


async def test_timeouts_and_connection_errors_are_retried(
    api: FakeApi, sleeps: list[float]
) -> None:
    client = make_api()
    api.script(
        "/v2/create_events",
        asyncio.TimeoutError(),
        aiohttp.ClientConnectionError("reset by peer"),
    )
    await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert len(api.calls("/v2/create_events")) == 3
    assert len(sleeps) == 2


async def test_gives_up_after_max_retry_time(api: FakeApi, sleeps: list[float]) -> None:
    client = make_api()
    client.retry = RetryPolicy(initial=1.0, maximum=1.0, max_elapsed=0.0)
    api.script("/v2/create_events", 503)
    with pytest.raises(ApiError, match="failed after 1 attempts") as info:
        await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert info.value.retryable and info.value.status == 503


async def test_400_is_not_retried(api: FakeApi, sleeps: list[float]) -> None:
    client = make_api()
    api.script("/v2/create_events", (400, '{"message": "bad event"}', {}))
    with pytest.raises(ApiError, match="bad event") as info:
        await client.create_events(SessionAuth(SID, "j"), b'{"events": []}')
    await client.close()
    assert info.value.status == 400 and not info.value.retryable
    assert sleeps == []
    assert len(api.calls("/v2/create_events")) == 1


async def test_a_garbled_answer_is_retried(api: FakeApi, sleeps: list[float]) -> None:
    client = make_api()
    api.script("/v2/create_session", (200, "<html>proxy error</html>", {}))
    answer = await client.create_session(BODY)
    await client.close()
    assert answer.jwt == f"jwt-{SID}-0"
    assert len(api.calls("/v2/create_session")) == 2
    assert len(sleeps) == 1


async def test_persistently_malformed_answers_end_in_a_clear_error(
    api: FakeApi, sleeps: list[float]
) -> None:
    client = make_api()
    client.retry = RetryPolicy(initial=1.0, maximum=1.0, max_elapsed=0.0)
    api.script("/v2/create_session", (200, "<html>proxy error</html>", {}))
    with pytest.raises(ApiError, match="malformed JSON"):
        await client.create_session(BODY)
    await client.close()


async def test_answer_missing_the_jwt_is_a_clear_error(api: FakeApi, sleeps: list[float]) -> None:
    client = make_api()
    client.retry = RetryPolicy(initial=1.0, maximum=1.0, max_elapsed=0.0)
    api.script("/v2/create_session", (200, '{"status": "Success"}', {}))
    with pytest.raises(ApiError, match="jwt"):
        await client.create_session(BODY)
    await client.close()


async def test_secrets_never_appear_in_error_messages(api: FakeApi) -> None:
    client = make_api()
    echo = f'{{"message": "bad key {API_KEY} / Bearer secret-jwt"}}'
    api.script("/v2/create_events", (403, echo, {}))
    with pytest.raises(ApiError) as info:
        await client.create_events(SessionAuth(SID, "secret-jwt"), b'{"events": []}')
    await client.close()
    assert API_KEY not in str(info.value)
    assert "secret-jwt" not in str(info.value)
    assert "<redacted>" in str(info.value)
