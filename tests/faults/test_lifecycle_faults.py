"""The client's lifecycle against the real collector: loops that close, exit, shutdown.

- loop closed: a client reused across two ``asyncio.run()`` calls without ``close()`` (the
  pytest pattern) delivers what the first loop left from the second one;
- exit without close: the default client (configured from the environment) is closed at
  interpreter exit: delivered, or counted and logged, or spooled for the next process;
- shutdown with the collector down: what close() reports equals what is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _servers import free_port

import agentops_async as ao

from .ledger import LEDGER_ROWS, Ledger
from .proxy import Fault, FaultProxy
from .test_delivery_under_faults import client_for, wait_for


def test_loop_closed_a_client_reused_across_asyncio_run_loses_nothing(collector: Any) -> None:
    client = client_for(collector.url, collector.api_key)
    ledger = Ledger()

    async def first_test() -> ao.AsyncSession:
        session = await client.start_session(tags=["loop-1"])
        for i in range(300):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        await session.end(wait=False)
        return session  # the loop closes with most of it pending

    async def second_test() -> ao.AsyncSession:
        async with client.session(tags=["loop-2"]) as session:
            for i in range(100):
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
        return session

    first = asyncio.run(first_test())
    assert client.stats.pending > 0, "the scenario: the first loop closed with events pending"
    second = asyncio.run(second_test())

    async def close_and_check() -> Any:
        assert await client.close()
        result = await ledger.check(collector, client, "loop closed (client reused across runs)")
        states = [await collector.get_session(s.session_id) for s in (first, second)]
        return result, states

    result, states = asyncio.run(close_and_check())
    assert result.recorded == 400
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert [s["end_state"] for s in states] == ["Success", "Success"]


@pytest.mark.asyncio
async def test_shutdown_with_the_collector_down_reports_exactly_what_is_missing(
    collector: Any, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(proxy.url, collector.api_key, shutdown_timeout=1.0)
    ledger = Ledger()
    session = await client.start_session()
    for i in range(100):
        await ledger.record(session, ao.ActionEvent(params={"i": i}))
    assert await session.flush(10)
    outage = proxy.add(Fault("status", path="/v2/", status=503))  # the collector goes away
    for i in range(100, 400):
        await ledger.record(session, ao.ActionEvent(params={"i": i}))
    await wait_for(lambda: outage.applied >= 1, "the exporter to meet the outage")
    await session.end(wait=False)
    with caplog.at_level(logging.WARNING, logger="agentops_async"):
        assert await client.close() is False
    result = await ledger.check(
        collector, client, "shutdown with the collector down", proxy.injected
    )
    assert result.stored == 100 and result.duplicated == 0
    assert result.dropped_reported == result.recorded - result.stored == result.missing == 300
    assert (client.stats.ops_dropped, client.stats.sessions_not_ended) == (1, 1)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "close() could not deliver 300 event(s) (300 not acknowledged before" in line
    assert "1 session(s) left RUNNING on the server" in line
    stored = await collector.get_session(session.session_id)
    assert stored is not None and stored["state"] == "RUNNING"  # what the counter says


# -- exit without close: the default client, configured from the environment -------------------
HANDLER = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    import agentops_async as ao

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

    async def handler(count):
        session = ao.AsyncSession(tags=["exit"])  # the default client, from AGENTOPS_* variables
        await session.start()
        ids = []
        for i in range(count):
            event = ao.ActionEvent(params={"i": i})
            ids.append(event.ensure_id())
            await session.record(event)
        await session.end(wait=False)  # e.g. a handler cancelled at shutdown
        return session.session_id, ids

    session_id, ids = asyncio.run(handler(int(sys.argv[1])))
    print(json.dumps({"session_id": session_id, "ids": ids}), flush=True)
    # no close(): the interpreter exits here
    """
)


def run_handler(tmp_path: Path, env: dict[str, str], count: int) -> tuple[dict[str, Any], str]:
    script = tmp_path / "handler.py"
    script.write_text(HANDLER)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOPS_")}
    environ.update(
        AGENTOPS_FLUSH_INTERVAL="0.02",
        AGENTOPS_REQUEST_TIMEOUT="1",
        AGENTOPS_LOG_SESSION_STATS="false",
        AGENTOPS_INSTRUMENT_OTEL="false",
        **env,
    )
    done = subprocess.run(
        [sys.executable, str(script), str(count)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def ledger_row(scenario: str, recorded: int, stored: list[str], reported: int) -> None:
    duplicated = len(stored) - len(set(stored))
    LEDGER_ROWS.append(
        f"| {scenario} | {recorded} | {len(stored)} | {duplicated} | {reported} | "
        f"{recorded - len(set(stored))} | |"
    )


@pytest.mark.asyncio
async def test_exit_without_close_delivers_and_ends_the_session(
    collector: Any, tmp_path: Path
) -> None:
    # A host name, not an IP: asyncio resolves it in a thread pool, which exit shuts down early.
    endpoint = collector.url.replace("127.0.0.1", "localhost")
    env = {"AGENTOPS_API_KEY": collector.api_key, "AGENTOPS_API_ENDPOINT": endpoint}
    out, _ = await asyncio.to_thread(run_handler, tmp_path, env, 500)
    stored = [e["id"] for e in await collector.get_events(out["session_id"])]
    ledger_row("exit without close", len(out["ids"]), stored, 0)
    assert sorted(stored) == sorted(out["ids"])
    session = await collector.get_session(out["session_id"])
    assert session is not None and session["end_state"] == "Success"


@pytest.mark.asyncio
async def test_exit_without_close_with_the_collector_down_logs_the_loss(tmp_path: Path) -> None:
    env = {
        "AGENTOPS_API_KEY": "key",
        "AGENTOPS_API_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AGENTOPS_SHUTDOWN_TIMEOUT": "0.5",
    }
    _, stderr = await asyncio.to_thread(run_handler, tmp_path, env, 200)
    reported = re.search(r"could not deliver (\d+) event", stderr)
    ledger_row("exit without close, collector down", 200, [], int(reported[1]) if reported else 0)
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING agentops_async: close() could not deliver 200 event(s) (200 not acknowledged "
        "before the shutdown timeout) and 2 session operation(s) (1 session(s) left RUNNING on "
        "the server); see client.stats"
    ], stderr


@pytest.mark.asyncio
async def test_exit_without_close_with_a_spool_keeps_the_events_for_the_next_process(
    collector: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    proxy.add(Fault("status", path="/v2/", status=503))  # the API is down for the first process
    env = {
        "AGENTOPS_API_KEY": collector.api_key,
        "AGENTOPS_API_ENDPOINT": proxy.url,
        "AGENTOPS_SHUTDOWN_TIMEOUT": "0.5",
        "AGENTOPS_SPOOL_DIR": str(spool),
    }
    out, stderr = await asyncio.to_thread(run_handler, tmp_path, env, 300)
    spooled = (
        "INFO agentops_async: close(): 300 event(s) and 2 session operation(s) are in the spool "
        f"{spool}, for the next process that uses it"
    )
    assert spooled in stderr.splitlines(), stderr
    assert "WARNING" not in stderr, stderr
    assert list(spool.glob("*.spool"))

    proxy.clear()  # the API is back; the next process starts on the same spool directory
    client = client_for(proxy.url, collector.api_key, spool_dir=str(spool))
    async with client:  # replay starts with the client: nothing new is recorded
        stored: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(stored) < 300:
            assert loop.time() < deadline, f"timed out waiting for the replay ({len(stored)})"
            if await collector.get_session(out["session_id"]) is not None:
                stored = [e["id"] for e in await collector.get_events(out["session_id"])]
            await asyncio.sleep(0.05)  # poll interval (bounded by the deadline above)
    done = stored
    ledger_row("exit without close, spool on, replayed", 300, done, client.stats.dropped)
    assert sorted(done) == sorted(out["ids"])
    session = await collector.get_session(out["session_id"])
    assert session is not None and session["end_state"] == "Success"
    assert not list(spool.glob("*.spool"))
