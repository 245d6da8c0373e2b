"""The service's CPU per request, in-process: the low-noise companion of ``bench_service.py``.

The benchmark app (``_service_app.py``: ``GET /work`` doing a little work and, when traced,
recording three things) is driven through its ASGI interface in this process: no sockets and no
HTTP server for the requests, so what is measured is the application, its middleware and the
tracing SDK's work, without uvicorn's parsing and the load generator's noise. The tracing is
real: the ``agentops`` variant's client exports to a real collector subprocess (SQLite), the
``otel`` variant's ``BatchSpanProcessor`` posts OTLP/HTTP (protobuf) to that collector's
``/v1/traces``. All variants live in this process at once (each app's lifespan started once)
and are interleaved: every round runs each variant once, in an order that alternates from round
to round, each measured over ``--requests`` requests at ``--concurrency`` after a warm-up and
a full garbage collection, up to the point where everything recorded is delivered (flush).

CPU is ``time.process_time()`` (every thread of this process, nanosecond clock) and, split by
thread, the event loop's own (``time.thread_time()`` on the loop) and the rest (the OTel
exporter's thread, the collector client's resolver threads). The collector's CPU over the same
window comes from its threads' ``/proc/<pid>/task/*/schedstat``. Reported: per variant the
median CPU µs/request (min-max), the overhead over ``untraced`` of the same round, and the
median and spread of the per-round ratio of agentops' overhead to otel's.

    python benchmarks/profile_service.py                       # ~1 min
    python benchmarks/profile_service.py --rounds 21 --requests 2000
    python benchmarks/profile_service.py --profile agentops    # cProfile of that variant's rounds

``bench_service.py`` (uvicorn, a load from another process) stays the issue's figure; this one
shows changes of a few µs per request that its spread hides.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from _servers import CollectorProcess  # noqa: E402

VARIANTS = ("untraced", "agentops", "agentops-1lane", "otel", "otel-bare")
# Settings of a variant's client, in the environment while its lifespan starts it.
VARIANT_ENV = {"agentops-1lane": {"AGENTOPS_MAX_CONCURRENT_EXPORTS": "1"}}

Message = dict[str, Any]
App = Callable[..., Awaitable[None]]


def run_seconds(pid: int) -> float:
    """Time the live threads of process ``pid`` have run so far, in seconds (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


@dataclass
class Variant:
    """One variant's app, its lifespan state and how to wait for its delivery."""

    name: str
    app: App
    flush: Callable[[], Awaitable[Any]]
    state: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # its client's settings (AGENTOPS_*)
    project_id: str = ""
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # total, loop, coll
    lifespan_task: asyncio.Task[None] | None = None
    shutdown: asyncio.Queue[Message] | None = None


async def start_lifespan(variant: Variant) -> None:
    """Run the app's ASGI lifespan until ``startup.complete``; it stays open until stopped."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    settings = variant.env
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    started = asyncio.Event()
    failed: list[str] = []
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": variant.state}

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.failed":
            failed.append(str(message.get("message")))
        if message["type"].startswith("lifespan.startup"):
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    variant.lifespan_task = asyncio.create_task(variant.app(scope, inbox.get, send))
    variant.shutdown = inbox
    try:
        await asyncio.wait_for(started.wait(), 30)
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    if failed:
        raise RuntimeError(f"{variant.name}: lifespan startup failed: {failed[0]}")


async def stop_lifespan(variant: Variant) -> None:
    if variant.shutdown is not None and variant.lifespan_task is not None:
        await variant.shutdown.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(variant.lifespan_task, 60)


def request_scope(n: int, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/work",
        "raw_path": b"/work",
        "query_string": f"q=question+{n}".encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"profile-service")],
        "client": ("127.0.0.1", 40000 + n % 20000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),  # servers give each request a shallow copy of the lifespan state
    }


async def drive(variant: Variant, requests: int, concurrency: int) -> int:
    """``requests`` requests through the app's ASGI interface, ``concurrency`` at a time;
    returns how many did not answer 200."""
    remaining = requests
    errors = 0
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> Message:
        return body

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            status = 0

            async def send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await variant.app(request_scope(remaining, variant.state), receive, send)
            if status != 200:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


def build(names: list[str], collector: CollectorProcess) -> list[Variant]:
    """The variants' apps, from ``_service_app.py``'s builders (all in this process), each
    sending to a project of its own."""
    import _service_app as service

    variants = []
    for name in names:
        project_id, api_key = collector.create_project(f"profile-{name}")
        env = {"AGENTOPS_API_KEY": api_key, "AGENTOPS_API_ENDPOINT": collector.url}
        env.update(VARIANT_ENV.get(name, {}))
        os.environ.update(env)  # the OTel variant reads them as it is built
        if name == "untraced":
            app = service._untraced_app()

            async def nothing() -> None:
                return None

            variants.append(Variant(name, app, nothing, env=env, project_id=project_id))
        elif name.startswith("agentops"):
            app = service._agentops_app()

            async def flush_agentops(app: Any = app) -> Any:
                return await app.state.agentops_client.flush(60.0)

            variants.append(Variant(name, app, flush_agentops, env=env, project_id=project_id))
        else:
            os.environ["BENCH_OTLP_URL"] = f"{collector.url}/v1/traces"
            before = len(service._flushers)
            app = service._otel_app(handler_spans=name == "otel")
            force_flush = service._flushers[before]

            async def flush_otel(force_flush: Callable[[], bool] = force_flush) -> bool:
                return await asyncio.to_thread(force_flush)

            variants.append(Variant(name, app, flush_otel, env=env, project_id=project_id))
    return variants


async def measure(variant: Variant, args: argparse.Namespace, collector_pid: int) -> None:
    await drive(variant, args.warmup, args.concurrency)
    await variant.flush()
    gc.collect()
    total, loop, coll = time.process_time(), time.thread_time(), run_seconds(collector_pid)
    errors = await drive(variant, args.requests, args.concurrency)
    await variant.flush()
    total = time.process_time() - total
    loop = time.thread_time() - loop
    coll = run_seconds(collector_pid) - coll
    if errors:
        raise RuntimeError(f"{variant.name}: {errors} requests did not answer 200")
    per = 1e6 / args.requests
    variant.samples.append((total * per, loop * per, coll * per))


def stored(db: Path, variants: list[Variant], args: argparse.Namespace) -> list[tuple[str, bool]]:
    """Per agentops variant: what the collector stored for its project, and whether it is
    every request's session with its three events."""
    sent = args.rounds * (args.requests + args.warmup)
    lines = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for v in variants:
            if not v.name.startswith("agentops"):
                continue
            sessions, events = conn.execute(
                "SELECT count(DISTINCT s.id), count(e.id) FROM sessions s "
                "LEFT JOIN events e ON e.session_id = s.id WHERE s.project_id = ?",
                (v.project_id,),
            ).fetchone()
            ok = sessions == sent and events == 3 * sent
            lines.append(
                (
                    f"stored: {v.name} {sessions} sessions, {events} events (sent {sent} requests)",
                    ok,
                )
            )
    return lines


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def report(variants: list[Variant]) -> str:
    by_name = {v.name: v for v in variants}
    untraced = by_name.get("untraced")
    lines = [
        "| variant | CPU µs/req, all threads | event loop | other threads | overhead µs/req"
        " | collector µs/req |",
        "|---|---|---|---|---|---|",
    ]
    overheads: dict[str, list[float]] = {}
    for v in variants:
        totals = [s[0] for s in v.samples]
        loops = [s[1] for s in v.samples]
        others = [s[0] - s[1] for s in v.samples]
        if untraced is not None and v is not untraced:
            overheads[v.name] = [
                s[0] - u[0] for s, u in zip(v.samples, untraced.samples, strict=True)
            ]
        lines.append(
            f"| {v.name} | {spread(totals)} | {spread(loops)} | {spread(others)}"
            f" | {spread(overheads.get(v.name, []))} | {spread([s[2] for s in v.samples])} |"
        )
    lines.append("")
    lines.append("Median (min-max) over rounds; overhead: minus the same round's untraced run.")
    for ref in ("otel", "otel-bare"):
        for mine in (name for name in overheads if name.startswith("agentops")):
            if ref not in overheads:
                continue
            ratios = [a / o for a, o in zip(overheads[mine], overheads[ref], strict=True)]
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            lines.append(
                f"{mine} overhead / {ref} overhead, per round: median "
                f"{statistics.median(ratios):.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}"
                f", min-max {min(ratios):.3f}-{max(ratios):.3f}"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace, collector: CollectorProcess) -> list[Variant]:
    assert collector.process is not None
    variants = build(args.variants, collector)
    for variant in variants:
        await start_lifespan(variant)
    profiler = cProfile.Profile() if args.profile else None
    try:
        for round_no in range(args.rounds):
            order = variants if round_no % 2 == 0 else variants[::-1]
            for variant in order:
                profiling = profiler is not None and variant.name == args.profile
                if profiling:
                    assert profiler is not None
                    profiler.enable()
                await measure(variant, args, collector.process.pid)
                if profiling:
                    assert profiler is not None
                    profiler.disable()
            if args.verbose:
                print(
                    f"round {round_no + 1}: "
                    + ", ".join(f"{v.name} {v.samples[-1][0]:.1f}" for v in variants),
                    flush=True,
                )
    finally:
        for variant in variants:
            await stop_lifespan(variant)
    if profiler is not None:
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        if args.profile_out:
            stats.dump_stats(args.profile_out)
        stats.print_stats(args.top)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=["untraced", "agentops", "otel"])
    parser.add_argument("--profile", choices=VARIANTS, help="cProfile this variant's rounds")
    parser.add_argument("--sort", default="tottime", help="cProfile's sort key")
    parser.add_argument("--top", type=int, default=40, help="cProfile's lines shown")
    parser.add_argument("--profile-out", type=Path, help="also write the cProfile stats here")
    parser.add_argument("--verbose", action="store_true", help="print each round")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="profile-service-") as work:
        collector = CollectorProcess(
            str(Path(work) / "collector.db"), "sqlite", Path(work) / "collector.log"
        ).start()
        try:
            variants = asyncio.run(run(args, collector))
            delivery = stored(Path(work) / "collector.db", variants, args)
        finally:
            collector.stop()
    print(
        f"In-process service profile: {args.rounds} rounds x {args.requests} requests at "
        f"concurrency {args.concurrency} (after {args.warmup}), Python "
        f"{sys.version.split()[0]}, load average {load} at the start, "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at the end.\n"
    )
    print(report(variants))
    print("\n" + "\n".join(line for line, _ in delivery))
    if not all(ok for _, ok in delivery):
        raise SystemExit("an agentops variant's sessions or events were not all stored")


if __name__ == "__main__":
    main()
