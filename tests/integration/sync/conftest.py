"""Fixtures of the sync facade's integration tests (the collector fixtures are in tests/)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import CollectorHandle

import agentops_async as ao
from agentops_async import sync


@pytest.fixture(autouse=True)
def no_session_left_running() -> Iterator[None]:
    """Fail a test that leaves a sync session running (it would leak into the next test)."""
    yield
    leftover = sync.get_active_sessions()
    for session in leftover:
        session.end("Indeterminate", "left running by a test", timeout=1)
    assert not leftover, f"the test left sessions running: {leftover}"


@pytest.fixture
def make_sync_client(collector: CollectorHandle) -> Iterator[Callable[..., ao.Client]]:
    """Sync clients pointed at the test's collector project; closed when the test ends."""
    made: list[ao.Client] = []

    def make(**settings: Any) -> ao.Client:
        settings.setdefault("flush_interval", 0.05)
        settings.setdefault("log_session_stats", False)
        client = ao.Client(api_key=collector.api_key, endpoint=collector.url, **settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=10)
