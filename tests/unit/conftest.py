from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

import agentops_async as ao
from agentops_async.testing import Capture, capture_events

from .fake_api import API_KEY, ENDPOINT, FakeApi, fake_api


@pytest.fixture(autouse=True)
def no_leaked_sessions() -> Iterator[None]:
    """Every test ends the sessions it starts (the registry is process-wide)."""
    yield
    leaked = ao.get_active_sessions()
    from agentops_async.session import _registry

    for session in leaked:
        _registry.unregister(session)
    assert not leaked, f"test left sessions running: {leaked}"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A scripted in-process AgentOps v2 API (aioresponses)."""
    with fake_api() as api:
        yield api


@pytest.fixture
def captured() -> Iterator[Capture]:
    """Clients made in the test deliver to memory (agentops_async.testing), not to an API."""
    with capture_events() as capture:
        yield capture


@pytest.fixture
def make_client() -> Iterator[Any]:
    """A factory of AsyncClients pointed at the fake API; each is closed at teardown."""
    made: list[ao.AsyncClient] = []

    def make(**settings: Any) -> ao.AsyncClient:
        settings.setdefault("flush_interval", 0.01)
        settings.setdefault("log_session_stats", False)
        client = ao.AsyncClient(api_key=API_KEY, endpoint=ENDPOINT, **settings)
        made.append(client)
        return client

    yield make
    assert all(c._exporter is None for c in made), "test left a client open: close it"


@pytest_asyncio.fixture
async def client(api: FakeApi, make_client: Any) -> AsyncIterator[ao.AsyncClient]:
    c = make_client()
    yield c
    await c.close()
