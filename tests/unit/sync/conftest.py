"""Fixtures of the sync facade's unit tests: disabled clients (no network), clean process state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import agentops_async as ao
from agentops_async import sync
from agentops_async.sync import _client as sync_client


@pytest.fixture(autouse=True)
def no_session_left_running() -> Iterator[None]:
    """Fail a test that leaves a sync session running (it would leak into the next test)."""
    yield
    leftover = sync.get_active_sessions()
    for session in leftover:
        session.end("Indeterminate", "left running by a test", timeout=1)
    assert not leftover, f"the test left sessions running: {leftover}"


@pytest.fixture
def offline_client() -> ao.Client:
    """A disabled sync client: sessions run through the loop thread, nothing is sent."""
    return ao.Client(enabled=False, log_session_stats=False)


@pytest.fixture
def restore_defaults() -> Iterator[None]:
    """Put the process's default clients back after a test that calls ``init``."""
    saved = sync_client._default
    yield
    sync_client._default = saved
    ao.set_default_client(None)
