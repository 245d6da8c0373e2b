"""Figure 1: hot-path cost, µs per recorded event, agentops_async against its peers.

Rows (interleaved: every repetition runs every row once):

- agentops_async ``await session.record(ActionEvent(...))`` (``bench_record``'s timing loop; event
  construction included, as in every other row), exporter posting to a stub on 127.0.0.1;
- agentops_async sync facade ``Session.record()`` and ``sync.record()`` from a plain thread
  (helper-2's ``bench_sync.py``, one repetition per round), else ``session.record_threadsafe()``;
- OpenTelemetry SDK ``start_span``/``end`` with a ``BatchSpanProcessor`` (``bench_record``);
- ``agentops`` 0.3.26 ``session.record()`` in its own venv, sending to our collector;
- ``langfuse`` (current release) ``create_event()`` and ``start_observation().end()`` in its own
  venv, exporting OTLP to a stub on 127.0.0.1.

Delivered counts are read back (client stats, collector read API, stub counters) and shown.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from _peers import PeerEnv, PeerUnavailable, ensure_peer, peer_environment, run_peer
from _report import Figure, Options
from _stub import ThreadStub, serve_in_thread
from bench_record import (
    _stub_server,
    _time_async_record,
    _time_otel_span,
    _time_prebuilt_record,
    _time_thread_record,
)

import agentops_async as ao

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _servers import CollectorProcess, http_request

try:  # helper-2's sync facade benchmark (needs agentops_async.sync)
    import bench_sync
except ImportError:
    bench_sync = None  # type: ignore[assignment]

OURS = "agentops_async await session.record()"
OURS_PREBUILT = "agentops_async await session.record(), event built beforehand"
SYNC = "agentops_async sync Session.record() from a thread"
SYNC_HELPER = "agentops_async sync.record() (current session) from a thread"
BENCH_SYNC_ROW = "sync Session.record() from a plain thread"  # bench_sync.py's row names
BENCH_SYNC_HELPER_ROW = "sync agentops_async.sync.record() (current session) from a thread"
OTEL = "OpenTelemetry SDK span start/end (BatchSpanProcessor)"
AGENTOPS = "agentops 0.3.26 session.record()"
AGENTOPS_PREBUILT = "agentops 0.3.26 session.record(), event built beforehand"
LANGFUSE_EVENT = "langfuse create_event()"
LANGFUSE_SPAN = "langfuse start_observation().end()"


def _sync_rows(figure: Figure, n: int) -> None:
    """The sync facade's rows, from helper-2's ``bench_sync.run`` (one repetition, own stub).

    ``bench_sync`` checks delivered == recorded itself (SystemExit when not).
    """
    try:
        samples = bench_sync.run(n, 1)
    except SystemExit as exc:
        figure.row(SYNC).extra["delivered"] = f"FAILED: {exc}"
        return
    for row, key in ((SYNC, BENCH_SYNC_ROW), (SYNC_HELPER, BENCH_SYNC_HELPER_ROW)):
        if key not in samples:
            figure.row(row).why_missing = f"bench_sync.py has no row {key!r} any more"
            continue
        figure.row(row).samples += samples[key]
        figure.row(row).extra["delivered"] = f"{n:,}/{n:,}"  # checked by bench_sync


async def _in_process_round(figure: Figure, n: int) -> None:
    runner, url = await _stub_server()
    client = ao.AsyncClient(api_key="bench", endpoint=url, max_queue_size=n * 2 + 100,
                            log_session_stats=False)  # fmt: skip
    try:
        async with client.session(tags=["bench"]) as session:
            # Warm-up of the full size, untimed (the OTel row gets the same): the first touch of
            # memory the VM never backed costs ~10 us per 4 KB page here, which would otherwise
            # land in whichever row allocates first (see the README, figure 1).
            await _time_async_record(session, n, False)
            figure.row(OURS).samples.append(await _time_async_record(session, n, False))
            figure.row(OURS_PREBUILT).samples.append(await _time_prebuilt_record(session, n))
        stats = session.stats
        _delivered(figure, OURS, stats.delivered, stats.recorded)
        if bench_sync is not None:
            await asyncio.to_thread(_sync_rows, figure, n)
        else:  # no sync facade in this tree: the engine path it would use
            async with client.session(tags=["bench-thread"]) as thread_session:
                us = await _time_thread_record(thread_session, n)
            figure.row(SYNC).samples.append(us)
            stats = thread_session.stats
            _delivered(figure, SYNC, stats.delivered, stats.recorded)
        await asyncio.to_thread(_time_otel_span, n)  # warm-up of the full size, untimed
        figure.row(OTEL).samples.append(await asyncio.to_thread(_time_otel_span, n))
    finally:
        await client.close()
        await runner.cleanup()


def _delivered(figure: Figure, name: str, delivered: int, recorded: int) -> None:
    """Keep the worst delivered/recorded of the repetitions in the row's ``delivered`` column."""
    row = figure.row(name)
    previous = row.extra.get("delivered")
    if previous is None or delivered != recorded:
        row.extra["delivered"] = f"{delivered:,}/{recorded:,}"
    elif previous is not None and "/" in previous:
        a, b = previous.split("/")
        if a != b:
            return
        row.extra["delivered"] = f"{delivered:,}/{recorded:,}"


def _peer_envs(opts: Options, figure: Figure) -> dict[str, PeerEnv]:
    envs: dict[str, PeerEnv] = {}
    names = {
        "agentops-0.3.26": [AGENTOPS, AGENTOPS_PREBUILT],
        "langfuse": [LANGFUSE_EVENT, LANGFUSE_SPAN],
    }
    for peer, rows in names.items():
        if not opts.peers:
            for row in rows:
                figure.row(row).why_missing = "peers off (--smoke or --no-peers)"
            continue
        try:
            envs[peer] = ensure_peer(peer, opts.peers_dir, opts.work_dir / f"pip-{peer}.log")
        except PeerUnavailable as exc:
            for row in rows:
                figure.row(row).why_missing = f"could not install: {exc}"
    return envs


def _run_agentops(figure: Figure, env: PeerEnv, collector: CollectorProcess, key: str,
                  n: int) -> dict[str, Any] | None:  # fmt: skip
    config = {"endpoint": collector.url, "api_key": key, "events": n, "warmup": min(n, 200)}
    try:
        result = run_peer(env, "agentops_0326.py", config, peer_environment())
    except PeerUnavailable as exc:
        figure.row(AGENTOPS).why_missing = str(exc)
        return None
    answer = http_request("GET", f"{collector.url}/api/sessions/{result['session_id']}",
                          headers={"X-Agentops-Api-Key": key})  # fmt: skip
    stored = int(answer.body["events_total"]) if answer.status == 200 else 0
    result["stored"] = stored
    figure.row(AGENTOPS).samples.append(result["record_us"])
    figure.row(AGENTOPS).extra["version"] = str(result.get("version", "0.3.26"))
    figure.row(AGENTOPS_PREBUILT).samples.append(result["record_prebuilt_us"])
    _delivered(figure, AGENTOPS_PREBUILT, stored, int(result["recorded"]))
    _delivered(figure, AGENTOPS, stored, int(result["recorded"]))
    _blocked(figure, AGENTOPS, result)
    return result


def _run_langfuse(figure: Figure, env: PeerEnv, stub: ThreadStub, api: str, row: str,
                  n: int) -> dict[str, Any] | None:  # fmt: skip
    before = stub.counts["spans"]
    config = {"endpoint": stub.url, "events": n, "warmup": min(n, 200), "api": api}
    extra = {"OTEL_BSP_MAX_QUEUE_SIZE": str(2 * n + 500)}  # else its queue drops silently
    try:
        result = run_peer(env, "langfuse_current.py", config, peer_environment(extra))
    except PeerUnavailable as exc:
        figure.row(row).why_missing = str(exc)
        return None
    figure.row(row).samples.append(result["record_us"])
    _delivered(figure, row, stub.counts["spans"] - before, int(result["recorded"]))
    _blocked(figure, row, result)
    figure.row(row).extra["version"] = str(result.get("version", "?"))
    return result


def _blocked(figure: Figure, name: str, result: dict[str, Any]) -> None:
    blocked = result.get("blocked") or []
    if blocked:
        figure.row(name).extra["blocked non-loopback connects"] = str(len(blocked))


def run(opts: Options) -> tuple[Figure, dict[str, list[dict[str, Any]]]]:
    """Measure figure 1; also returns the raw peer results (figures 2 and 5 quote them)."""
    n = opts.size(50_000, 2_000)
    n_agentops = opts.size(2_000, 100)
    n_langfuse = opts.size(10_000, 200)
    figure = Figure("hotpath", "1. Hot-path cost per recorded event", "µs/event",
                    reference=OURS)  # fmt: skip
    for name in (OURS, OURS_PREBUILT, SYNC, SYNC_HELPER, OTEL, AGENTOPS, AGENTOPS_PREBUILT,
                 LANGFUSE_EVENT, LANGFUSE_SPAN):  # fmt: skip
        figure.row(name)
    envs = _peer_envs(opts, figure)
    peer_results: dict[str, list[dict[str, Any]]] = {"agentops": [], "langfuse": []}
    collector = CollectorProcess(str(opts.work_dir / "hotpath.db"), "sqlite",
                                 opts.work_dir / "collector-hotpath.log")  # fmt: skip
    stub = serve_in_thread() if "langfuse" in envs else None
    try:
        key = ""
        if "agentops-0.3.26" in envs:
            collector.start()
            key = collector.create_project("bench-peers")[1]
        for _ in range(opts.repeats):
            asyncio.run(_in_process_round(figure, n))
            if "agentops-0.3.26" in envs:
                res = _run_agentops(figure, envs["agentops-0.3.26"], collector, key, n_agentops)
                if res:
                    peer_results["agentops"].append(res)
            if stub is not None:
                for api, row in (("create_event", LANGFUSE_EVENT), ("span", LANGFUSE_SPAN)):
                    res = _run_langfuse(figure, envs["langfuse"], stub, api, row, n_langfuse)
                    if res:
                        peer_results["langfuse"].append(res)
    finally:
        collector.stop()
        if stub is not None:
            stub.stop()
    figure.notes += [
        f"Events per repetition: agentops_async and OTel {n:,}; agentops 0.3.26 {n_agentops:,}; "
        f"langfuse {n_langfuse:,} (after an untimed warm-up; of the same size for agentops_async "
        "and OTel). Event construction is inside the "
        "timed loop for every row except the 'built beforehand' ones. agentops 0.3.26's "
        "ActionEvent() constructor inspects the call stack (inspect.stack()) to find an agent id: "
        "that, not record(), is most of its cost.",
        "delivered for agentops 0.3.26: the session's stored events (both of its rows and the "
        "warm-up go into one session).",
        "agentops_async's exporter runs on the same loop but cannot run inside the timed loop "
        "(record() never yields while the queue has room); its cost is in figures 2, 3 and 6. "
        "The peers' exporter threads do run during their timed loops (GIL contention included).",
        "delivered: worst repetition; agentops 0.3.26 counted by our collector's read API, "
        "langfuse by the stub's OTLP span count, agentops_async by the client's stats.",
        "Peers run in their own virtualenvs (benchmarks/.peers/) with a loopback-only socket "
        "guard; agentops 0.3.26 talks to `agentops-async serve` (SQLite), langfuse to a stub.",
    ]
    return figure, peer_results
