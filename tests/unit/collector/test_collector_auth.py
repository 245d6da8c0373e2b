"""The collector's auth module: each credential resolved to a principal, or a 401 naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp.test_utils import make_mocked_request

from agentops_async.collector import CollectorSettings
from agentops_async.collector._auth import (
    Principal,
    SessionPrincipal,
    api_key,
    api_key_header,
    bearer_api_key,
    hash_key,
    project_token,
    session_token,
)
from agentops_async.collector._context import Context
from agentops_async.collector._http import HttpError
from agentops_async.collector._jwt import JwtSigner

KEY = "6f1e4f3c-61a4-4b55-9d0a-2d2f4a8e9c11"
PROJECT = "project-1"
SESSION = "0b3c8d3e-9a5c-4d0e-8f6a-3c1b2a4d5e6f"


class _Keys:
    """The storage as the auth module sees it: API key hashes to projects."""

    def __init__(self) -> None:
        self.lookups = 0

    async def project_for_key(self, key_hash: str) -> str | None:
        self.lookups += 1
        return PROJECT if key_hash == hash_key(KEY) else None


@pytest_asyncio.fixture
async def ctx() -> AsyncIterator[Context]:
    context = Context(_Keys(), JwtSigner(b"k" * 32, 60.0), CollectorSettings())  # type: ignore[arg-type]
    try:
        yield context
    finally:
        await context.close()


def _request(**headers: str):  # type: ignore[no-untyped-def]
    return make_mocked_request("POST", "/", headers=headers)


async def _refusal(resolver, ctx: Context, **headers: str) -> HttpError:  # type: ignore[no-untyped-def]
    with pytest.raises(HttpError) as caught:
        await resolver(ctx, _request(**headers))
    assert caught.value.status == 401
    return caught.value


@pytest.mark.asyncio
async def test_api_key_header_resolves_the_project_and_is_cached(ctx: Context) -> None:
    for _ in range(3):
        assert await api_key_header(ctx, _request(**{"X-Agentops-Api-Key": KEY})) == Principal(
            PROJECT
        )
    assert ctx.storage.lookups == 1  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_api_key_refusals_name_the_header_and_never_the_key(ctx: Context) -> None:
    missing = await _refusal(api_key_header, ctx)
    assert missing.message == "missing API key (X-Agentops-Api-Key header)"
    wrong = "0f1e4f3c-61a4-4b55-9d0a-2d2f4a8e9c11"
    unknown = await _refusal(api_key_header, ctx, **{"X-Agentops-Api-Key": wrong})
    assert unknown.message == "invalid or revoked API key"
    assert wrong not in unknown.message
    # A refused key is not cached: every try asks the storage again.
    await _refusal(api_key_header, ctx, **{"X-Agentops-Api-Key": wrong})
    assert ctx.storage.lookups == 2  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_bearer_api_key_and_either_form(ctx: Context) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert await bearer_api_key(ctx, _request(**bearer)) == Principal(PROJECT)
    assert await api_key(ctx, _request(**bearer)) == Principal(PROJECT)
    # The header wins over the bearer form when both are sent.
    both = {"X-Agentops-Api-Key": "not-a-key", **bearer}
    assert (await _refusal(api_key, ctx, **both)).message == "invalid or revoked API key"
    basic = await _refusal(bearer_api_key, ctx, Authorization=f"Basic {KEY}")
    assert basic.message == "missing API key (X-Agentops-Api-Key header)"


@pytest.mark.asyncio
async def test_session_token_names_its_session(ctx: Context) -> None:
    token = ctx.signer.issue(SESSION, PROJECT)
    caller = await session_token(ctx, _request(Authorization=f"Bearer {token}"))
    assert caller == SessionPrincipal(PROJECT, SESSION)
    missing = await _refusal(session_token, ctx)
    assert missing.message == "missing session token (Authorization: Bearer <jwt>)"
    expired = JwtSigner(b"k" * 32, -1.0).issue(SESSION, PROJECT)
    late = await _refusal(session_token, ctx, Authorization=f"Bearer {expired}")
    assert late.message == "Expired Token"
    forged = JwtSigner(b"x" * 32, 60.0).issue(SESSION, PROJECT)
    bad = await _refusal(session_token, ctx, Authorization=f"Bearer {forged}")
    assert bad.message == "Invalid Token"


@pytest.mark.asyncio
async def test_project_token_names_only_its_project(ctx: Context) -> None:
    token = ctx.signer.issue(None, PROJECT)
    assert await project_token(ctx, _request(Authorization=f"Bearer {token}")) == Principal(PROJECT)


@pytest.mark.asyncio
async def test_each_token_kind_is_refused_where_the_other_is_needed(ctx: Context) -> None:
    project = ctx.signer.issue(None, PROJECT)
    refused = await _refusal(session_token, ctx, Authorization=f"Bearer {project}")
    assert "project token" in refused.message
    assert "create_session" in refused.message
    session = ctx.signer.issue(SESSION, PROJECT)
    refused = await _refusal(project_token, ctx, Authorization=f"Bearer {session}")
    assert refused.message == "Invalid Token: a session token, not a project token"
