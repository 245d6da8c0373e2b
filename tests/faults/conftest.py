"""Fixtures of the fault suite: a collector behind a fault-injecting proxy, and the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .ledger import LEDGER_ROWS
from .proxy import FaultProxy


@pytest.fixture
def collector_backend() -> str:
    """The fault suite runs on SQLite unless a test picks a backend itself."""
    return "sqlite"


@pytest_asyncio.fixture
async def proxy(collector: Any) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of this test's collector (no rules yet)."""
    proxy = await FaultProxy(collector.url).start()
    yield proxy
    await proxy.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LEDGER_ROWS:
        return
    terminalreporter.section("delivery ledger (fault suite)")
    terminalreporter.write_line(
        "| scenario | recorded | stored | duplicated | dropped (reported) | missing | injected |"
    )
    terminalreporter.write_line("|---|---:|---:|---:|---:|---:|---|")
    for row in LEDGER_ROWS:
        terminalreporter.write_line(row)
