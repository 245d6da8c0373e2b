"""Outages speak: one WARNING when delivery has been failing for a while, one INFO on recovery.

Each request's retries log at DEBUG only; the outage is reported once, with how long it has
lasted, the reason and what is pending, and never with the API key or a session's JWT.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from _servers import free_port

import agentops_async as ao

from .ledger import Ledger
from .proxy import Fault, FaultProxy
from .test_delivery_under_faults import client_for, wait_for

pytestmark = pytest.mark.asyncio

FAILING = "has been failing for"
RECOVERED = "recovered after"


class LogWaiter(logging.Handler):
    """Sets an asyncio event when a record containing ``needle`` is logged (on the loop)."""

    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


@pytest.fixture
def waiters() -> Iterator[dict[str, LogWaiter]]:
    logger = logging.getLogger("agentops_async")
    made = {needle: LogWaiter(needle) for needle in (FAILING, RECOVERED)}
    for handler in made.values():
        logger.addHandler(handler)
    yield made
    for handler in made.values():
        logger.removeHandler(handler)


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


async def test_an_outage_is_warned_once_with_reason_and_pending_and_its_end_is_logged(
    collector: Any,
    proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    waiters: dict[str, LogWaiter],
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentops_async")
    client = client_for(proxy.url, collector.api_key, outage_warning_after=0.3)
    ledger = Ledger()
    async with client.session(tags=["outage"]) as session:
        await ledger.record(session, ao.ActionEvent(action_type="before"))
        assert await session.flush(10)  # the session exists and has its JWT
        auth = client._exporter.target._session(session.session_id).auth  # type: ignore[union-attr]
        outage = proxy.add(Fault("status", path="/v2/", status=503))
        for i in range(30):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        await asyncio.wait_for(waiters[FAILING].seen.wait(), 20)
        failures_at_warning = outage.applied
        # More failed attempts after the warning: still one warning for this outage.
        await wait_for(lambda: outage.applied >= failures_at_warning + 2, "more failed attempts")
        assert not waiters[RECOVERED].seen.is_set()
        proxy.clear()  # the API is back
        await asyncio.wait_for(waiters[RECOVERED].seen.wait(), 20)
    assert await client.close()

    (warning,) = messages(caplog, FAILING)
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert f"delivery to {proxy.url} has been failing for" in text
    assert "HTTP 503" in text  # the reason
    lasted = float(re.search(r"failing for ([\d.]+)s", text)[1])  # type: ignore[index]
    assert lasted >= 0.3
    pending = int(re.search(r"(\d+) item\(s\) pending", text)[1])  # type: ignore[index]
    assert 1 <= pending <= 32  # the 30 events (and the final session update) at most
    (recovery,) = messages(caplog, RECOVERED)
    assert recovery.levelno == logging.INFO
    assert float(re.search(r"after ([\d.]+)s", recovery.getMessage())[1]) >= lasted  # type: ignore[index]
    jwt = auth.jwt
    assert jwt
    for record in caplog.records:
        assert collector.api_key not in record.getMessage()
        assert jwt not in record.getMessage()
    result = await ledger.check(collector, client, "outage warned and recovered", proxy.injected)
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)


async def test_an_unreachable_api_is_warned_once_without_the_key(
    caplog: pytest.LogCaptureFixture, waiters: dict[str, LogWaiter]
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentops_async")
    api_key = "11111111-2222-4333-8444-555555555555"
    endpoint = f"http://user:secret@127.0.0.1:{free_port()}"  # nothing listens there
    client = client_for(endpoint, api_key, outage_warning_after=0.2, shutdown_timeout=0.5)
    session = await client.start_session(tags=["refused"])
    for i in range(5):
        await session.record(ao.ActionEvent(params={"i": i}))
    await asyncio.wait_for(waiters[FAILING].seen.wait(), 20)
    await session.end(wait=False)
    assert await client.close() is False  # nothing could be delivered: counted as dropped

    (warning,) = messages(caplog, FAILING)
    text = warning.getMessage()
    assert "Cannot connect" in text or "Connect" in text  # the reason: connection refused
    assert re.search(r"\d+ item\(s\) pending", text)
    assert "secret" not in text and "user:" not in text  # the endpoint without credentials
    assert not messages(caplog, RECOVERED)
    for record in caplog.records:
        assert api_key not in record.getMessage()
        assert "secret" not in record.getMessage()
    assert client.stats.dropped == 5
