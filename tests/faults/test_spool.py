"""The disk spool: outages longer than memory lose nothing, and survive a process restart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import agentops_async as ao

from .ledger import Ledger
from .proxy import Fault, FaultProxy
from .test_delivery_under_faults import client_for, for_protocol, wait_for

pytestmark = pytest.mark.asyncio


async def test_an_outage_longer_than_memory_is_bridged_by_the_spool(
    collector: Any, proxy: FaultProxy, tmp_path: Path, protocol: str
) -> None:
    (rule,) = for_protocol([Fault("status", path="/v2/", status=503)], protocol)
    outage = proxy.add(rule)
    spool = tmp_path / "spool"
    client = client_for(
        proxy.url, collector.api_key, max_queue_size=100, spool_dir=str(spool), protocol=protocol
    )
    ledger = Ledger()
    sessions = []
    for round_ in range(3):  # sessions start, record and end during the outage
        async with client.session(tags=[f"round-{round_}"]) as session:
            sessions.append(session)
            for i in range(700):
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
                if i % 50 == 0:
                    await asyncio.sleep(0)
            if round_ == 0:
                await wait_for(lambda: outage.applied >= 2, "the exporter to meet the outage")
            await session.end(wait=False)
    assert list(spool.glob("*.spool")), "the overflow went to disk"
    proxy.clear()  # the collector is back
    assert await client.close()
    result = await ledger.check(collector, client, "outage beyond memory, spool on", proxy.injected)
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert not list(spool.glob("*.spool")), "a drained spool leaves no segment behind"
    for session in sessions:
        stored = await collector.get_session(session.session_id)
        assert stored is not None and stored["end_state"] == "Success"
        assert stored["tags"] == [f"round-{sessions.index(session)}"]


async def test_beyond_the_spool_cap_drops_are_counted_exactly(
    collector: Any, proxy: FaultProxy, tmp_path: Path
) -> None:
    outage = proxy.add(Fault("status", path="/v2/create_events", status=503))
    client = client_for(
        proxy.url,
        collector.api_key,
        max_queue_size=50,
        spool_dir=str(tmp_path / "spool"),
        spool_max_bytes=60_000,
    )
    ledger = Ledger()
    async with client.session() as session:
        for i in range(20):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        await wait_for(lambda: outage.applied >= 1, "the exporter to meet the outage")
        for i in range(20, 1_500):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        proxy.clear()
    assert await client.close()
    result = await ledger.check(collector, client, "outage beyond the spool cap", proxy.injected)
    assert result.dropped_reported > 0
    assert result.missing == result.dropped_reported
    assert result.duplicated == 0
    assert client.stats.dropped_by_reason == {
        "spool full (spool_max_bytes reached)": result.dropped_reported
    }


RECORDER = textwrap.dedent(
    """
    import asyncio, json, sys
    import agentops_async as ao

    async def main(endpoint, key, spool, protocol):
        client = ao.AsyncClient(api_key=key, endpoint=endpoint, max_queue_size=200,
                                spool_dir=spool, request_timeout=1, flush_interval=0.02,
                                shutdown_timeout=1, log_session_stats=False,
                                protocol=protocol)
        ids = []
        async with client.session(tags=["spooled"]) as session:
            for i in range(1500):
                event = ao.ToolEvent(name="t", params={"i": i})
                ids.append(event.ensure_id())
                await session.record(event)
                if i % 100 == 0:
                    await asyncio.sleep(0.01)
        delivered = await client.close()
        print(json.dumps({"session_id": session.session_id, "ids": ids,
                          "all_delivered": delivered, "dropped": client.stats.dropped,
                          "reasons": client.stats.dropped_by_reason}))

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_spooled_items_survive_a_process_restart(
    collector: Any, proxy: FaultProxy, tmp_path: Path, protocol: str
) -> None:
    spool = tmp_path / "spool"
    (down,) = for_protocol([Fault("status", path="/v2/", status=503)], protocol)
    proxy.add(down)  # the API is down for the first process
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), proxy.url, collector.api_key, str(spool), protocol],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert first["all_delivered"] is False  # it could not deliver...
    assert first["dropped"] == 0, first["reasons"]  # ...and lost nothing: all of it is on disk
    assert await collector.get_session(first["session_id"]) is None

    proxy.clear()  # the API is back; a new process uses the same spool directory
    client = client_for(proxy.url, collector.api_key, spool_dir=str(spool), protocol=protocol)
    assert await client.flush(30)
    assert await client.close()
    stored = await collector.get_events(first["session_id"])
    assert sorted(e["id"] for e in stored) == sorted(first["ids"])
    assert [e["params"]["i"] for e in stored] == list(range(1500))  # replayed in order
    session = await collector.get_session(first["session_id"])
    assert session is not None and session["end_state"] == "Success"
    assert session["tags"] == ["spooled"]
    assert not list(spool.glob("*.spool"))


async def test_a_spool_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    first = ao.AsyncClient(api_key="k", endpoint="http://127.0.0.1:9", spool_dir=spool)
    second = ao.AsyncClient(api_key="k", endpoint="http://127.0.0.1:9", spool_dir=spool)
    await first.flush(0.1)
    with pytest.raises(ao.ConfigError, match="in use by another process"):
        await second.flush(0.1)
    await first.close(0.1)
    await second.close(0.1)
