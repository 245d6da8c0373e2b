"""Service benchmark: what tracing costs a FastAPI service per request, and the collector.

uvicorn + FastAPI (``_service_app.py``: a handler doing a little work and recording three things)
under a bounded load from this process (aiohttp, a fixed number of requests at a fixed
concurrency). Variants, each a fresh uvicorn process, interleaved: every round runs each variant
once, in an order that alternates from round to round.

- ``untraced``: the same service without tracing (the reference).
- ``agentops``: ``SessionMiddleware`` with the v2 target, to a real collector (SQLite).
- ``agentops-otlp``: the same with the SDK's OTLP target (``AGENTOPS_PROTOCOL=otlp``), where the
  SDK has one (the row says why it is empty otherwise).
- ``agentops-gcfreeze``: ``agentops`` with ``gc.freeze()`` once the app has started (an option
  docs/web.md describes; not in the default variants).
- ``otel``: OpenTelemetry's FastAPI instrumentation plus three spans (the same three things),
  ``BatchSpanProcessor``, OTLP/HTTP to the collector's ``/v1/traces``; the reference of the
  ratio column.
- ``otel-bare``: the instrumentation alone (its server span and ASGI send spans), recording less
  than the others: the cheapest OpenTelemetry setup, for comparison.
- ``agentops@base``: the ``agentops`` variant with the SDK and collector of another source tree
  (``--baseline-src``, e.g. a ``git worktree`` of an earlier commit), same run.

Per variant and round: requests/s (the load's wall time), p50/p99 latency, the service's CPU per
request (over the load plus a final ``POST /_flush`` that returns when everything is delivered)
and the collector's CPU per request over the same window. CPU is read in nanoseconds: the
service answers its own ``time.process_time()`` (``GET /_cpu``: every thread, exited ones
included), the collector's is the sum of its threads' ``/proc/<pid>/task/*/schedstat`` run
times. The former figures, user+system time from ``/proc/<pid>/stat`` in 10 ms ticks, are kept
beside them (``*_ticks_ms`` in the JSON, and a comparison under the table). Each collector serves
one source tree, each variant its own project; delivery is checked afterwards (stored sessions
and events per project, from the SQLite file).

The table gives the median over rounds, the overhead (CPU/request minus the untraced one), its
ratio to the OTel row's overhead, and the median of the per-round ratios (each round's overhead
against the same round's untraced and OTel runs, which ran next to it on the same machine).

    python benchmarks/bench_service.py                                  # ~6 min
    python benchmarks/bench_service.py --variants untraced agentops otel --baseline-src /tmp/old
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from _servers import CollectorProcess, free_port  # noqa: E402

APP = Path(__file__).resolve().parent / "_service_app.py"
TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("untraced", "agentops", "agentops-otlp", "agentops-gcfreeze", "otel", "otel-bare")
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "agentops-gcfreeze"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, in seconds (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_seconds(pid: int) -> float:
    """Time the live threads of process ``pid`` have run so far, in seconds (ns resolution).

    The first field of ``/proc/<pid>/task/<tid>/schedstat``; a thread that exits takes its
    time with it, so this is for processes whose threads live as long as they do (the
    collector's event loop and its storage thread).
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread just exited
            continue
    return total / 1e9


@dataclass
class Tree:
    """A source tree (this one, or the baseline) and its collector."""

    name: str
    src: Path
    work: Path
    collector: CollectorProcess | None = None
    db: Path = field(default_factory=Path)

    def start(self) -> None:
        self.db = self.work / f"collector-{self.name}.db"
        env = {"PYTHONPATH": str(self.src)}
        self.collector = CollectorProcess(
            str(self.db), "sqlite", self.work / f"collector-{self.name}.log", env=env
        ).start()

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    service_cpu_ms: float
    collector_cpu_ms: float
    errors: int
    service_cpu_ticks_ms: float = float("nan")  # the same, from /proc/<pid>/stat's 10 ms ticks
    collector_cpu_ticks_ms: float = float("nan")
    gc_collections: list[int] = field(default_factory=list)  # the service's, by generation


def http(method: str, url: str, timeout: float = 120.0) -> bytes:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        body: bytes = answer.read()
        return body


def supports(tree: Tree, variant: str) -> str | None:
    """Why ``tree`` cannot run ``variant`` (None when it can)."""
    if variant != "agentops-otlp":
        return None
    probe = (
        "import agentops_async as a, sys\n"
        "try:\n"
        "    a.AsyncClient(api_key='k', endpoint='http://127.0.0.1:9', protocol='otlp')\n"
        "except Exception as exc:\n"
        "    sys.exit(f'{type(exc).__name__}: {exc}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree.src)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return None
    return "the SDK has no OTLP target here (" + done.stderr.strip().splitlines()[-1][:80] + ")"


class Service:
    """One uvicorn process running one variant."""

    def __init__(
        self, variant: str, tree: Tree, api_key: str, log: Path, fresh_gc: bool = False
    ) -> None:
        assert tree.collector is not None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tree.src), str(REPO)]),
            "BENCH_VARIANT": variant,
            "AGENTOPS_API_KEY": api_key,
            "AGENTOPS_API_ENDPOINT": tree.collector.url,
            "BENCH_OTLP_URL": f"{tree.collector.url}/v1/traces",
        }
        if variant == "agentops-otlp":
            env["AGENTOPS_PROTOCOL"] = "otlp"
        env["BENCH_SETTLED_GC"] = "0" if fresh_gc else "1"
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}")
            try:
                http("GET", f"{self.url}/health", timeout=2.0)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the service did not answer /health in time")

    def cpu_seconds(self) -> tuple[float, list[int]]:
        """The service's CPU time so far, as it reads it itself (``time.process_time()``), and
        its garbage collections so far by generation."""
        answer = json.loads(http("GET", f"{self.url}/_cpu", timeout=10.0))
        return float(answer["process_time"]), [int(n) for n in answer["gc_collections"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], float, int]:
    """``requests`` GETs of ``/work`` by ``concurrency`` workers: (latencies, wall time, errors)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            n = remaining
            start = time.perf_counter()
            async with http.get(f"{url}/work", params={"q": f"question {n}"}) as answer:
                await answer.read()
                if answer.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall, errors


def measure(service: Service, collector_pid: int, args: argparse.Namespace) -> Sample:
    asyncio.run(load(service.url, args.warmup, args.concurrency))
    http("POST", f"{service.url}/_flush")
    pid = service.process.pid
    (service_before, gc_before), collector_before = (
        service.cpu_seconds(),
        run_seconds(collector_pid),
    )
    ticks = (cpu_seconds(pid), cpu_seconds(collector_pid))
    latencies, wall, errors = asyncio.run(load(service.url, args.requests, args.concurrency))
    http("POST", f"{service.url}/_flush")
    ticks = (cpu_seconds(pid) - ticks[0], cpu_seconds(collector_pid) - ticks[1])
    (service_after, gc_after), collector_after = service.cpu_seconds(), run_seconds(collector_pid)
    latencies.sort()
    per_request = 1000 / args.requests
    return Sample(
        rps=args.requests / wall,
        p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        service_cpu_ms=per_request * (service_after - service_before),
        collector_cpu_ms=per_request * (collector_after - collector_before),
        errors=errors,
        service_cpu_ticks_ms=per_request * ticks[0],
        collector_cpu_ticks_ms=per_request * ticks[1],
        gc_collections=[b - a for a, b in zip(gc_before, gc_after, strict=True)],
    )


def stored(tree: Tree, project_id: str) -> tuple[int, int]:
    """(sessions, events) of ``project_id`` in ``tree``'s SQLite file."""
    with sqlite3.connect(f"file:{tree.db}?mode=ro", uri=True) as conn:
        sessions = conn.execute(
            "SELECT count(*) FROM sessions WHERE project_id = ?", (project_id,)
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count(*) FROM events WHERE session_id IN "
            "(SELECT id FROM sessions WHERE project_id = ?)",
            (project_id,),
        ).fetchone()[0]
    return int(sessions), int(events)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def round_ratios(results: dict[str, dict[str, Any]], name: str, ref: str = "otel") -> list[float]:
    """Per round: ``name``'s overhead over ``ref``'s, both against that round's untraced run."""
    rows = [results.get(v, {}).get("samples", []) for v in (name, ref, "untraced")]
    ratios = []
    for mine, theirs, untraced in zip(*rows, strict=False):
        reference = theirs.service_cpu_ms - untraced.service_cpu_ms
        if reference > 0:
            ratios.append((mine.service_cpu_ms - untraced.service_cpu_ms) / reference)
    return ratios


def table(results: dict[str, dict[str, Any]]) -> str:
    def cpu(name: str) -> float:
        return median([s.service_cpu_ms for s in results.get(name, {}).get("samples", [])])

    base = cpu("untraced")
    refs = {name: cpu(name) - base for name in ("otel", "otel-bare")}
    lines = [
        "| variant | req/s | p50 ms | p99 ms | service CPU ms/req (min-max) | overhead ms/req"
        " | overhead / otel's | per-round ratio to otel's, median | overhead / otel-bare's"
        " | collector CPU ms/req | collector / overhead | stored |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        samples: list[Sample] = row["samples"]
        if not samples:
            lines.append(f"| {name} | {row.get('why', 'no samples')} |||||||||||")
            continue
        over = cpu(name) - base
        coll = median([s.collector_cpu_ms for s in samples])
        ratios = [
            f"{over / ref:.3f}" if name != "untraced" and ref > 0 else "" for ref in refs.values()
        ]
        per_round = round_ratios(results, name) if name not in ("untraced", "otel") else []
        per = f"{coll / over:.2f}" if name != "untraced" and over > 0 else ""
        lines.append(
            f"| {name} | {median([s.rps for s in samples]):.0f}"
            f" | {median([s.p50_ms for s in samples]):.1f}"
            f" | {median([s.p99_ms for s in samples]):.1f}"
            f" | {cpu(name):.4f} ({min(s.service_cpu_ms for s in samples):.4f}-"
            f"{max(s.service_cpu_ms for s in samples):.4f})"
            f" | {over:.4f} | {ratios[0]} | {f'{median(per_round):.3f}' if per_round else ''}"
            f" | {ratios[1]} | {coll:.3f} | {per} | {row.get('stored', '')} |"
        )
    return "\n".join(lines)


def notes(results: dict[str, dict[str, Any]]) -> str:
    """Per-round ratios, and the nanosecond CPU figures beside the former 10 ms-tick ones."""
    lines = ["Per-round ratios of the overhead to otel's (each round against its untraced run):"]
    for name in results:
        ratios = round_ratios(results, name)
        if name not in ("untraced", "otel") and ratios:
            shown = ", ".join(f"{r:.3f}" for r in ratios)
            lines.append(f"- {name}: {shown} (median {median(ratios):.3f})")
    lines += [
        "",
        "Service CPU ms/request, nanosecond clock vs /proc/<pid>/stat ticks (median, min-max):",
    ]
    for name, row in results.items():
        samples: list[Sample] = row["samples"]
        if not samples:
            continue
        ns = [s.service_cpu_ms for s in samples]
        ticks = [s.service_cpu_ticks_ms for s in samples]
        lines.append(
            f"- {name}: {median(ns):.4f} ({min(ns):.4f}-{max(ns):.4f}) vs "
            f"{median(ticks):.4f} ({min(ticks):.4f}-{max(ticks):.4f})"
        )
    lines += ["", "The service's garbage collections per round (gen0/gen1/gen2, medians):"]
    for name, row in results.items():
        counts = [s.gc_collections for s in row["samples"] if s.gc_collections]
        if counts:
            by_generation = "/".join(f"{median([c[g] for c in counts]):g}" for g in range(3))
            lines.append(f"- {name}: {by_generation}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS)
    parser.add_argument("--baseline-src", type=Path, help="another source tree: agentops@base")
    parser.add_argument(
        "--fresh-gc",
        action="store_true",
        help="no full garbage collection before serving (as until 3b5ad58): each round then "
        "has the first full collection of a fresh process, whatever the requests keep alive",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="service", help="result files: <name>.md, <name>.json")
    args = parser.parse_args()

    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    trees = {"current": Tree("current", REPO, work)}
    plan: list[tuple[str, str, str]] = [(v, "current", v) for v in args.variants]
    if args.baseline_src is not None:
        trees["base"] = Tree("base", args.baseline_src.resolve(), work)
        plan.append(("agentops@base", "base", "agentops"))
    results: dict[str, dict[str, Any]] = {name: {"samples": []} for name, _, _ in plan}
    for tree in trees.values():
        tree.start()
    try:
        projects: dict[str, tuple[str, str]] = {}
        for name, tree_name, variant in list(plan):
            why = supports(trees[tree_name], variant)
            if why is not None:
                results[name]["why"] = why
                plan.remove((name, tree_name, variant))
                continue
            collector = trees[tree_name].collector
            assert collector is not None
            projects[name] = collector.create_project(f"bench-{name}")
        for round_no in range(args.rounds):
            order = plan if round_no % 2 == 0 else list(reversed(plan))
            for name, tree_name, variant in order:
                tree = trees[tree_name]
                assert tree.collector is not None and tree.collector.process is not None
                log = work / f"service-{name}.log"
                service = Service(variant, tree, projects[name][1], log, args.fresh_gc)
                try:
                    service.wait_ready()
                    sample = measure(service, tree.collector.process.pid, args)
                finally:
                    service.stop()
                results[name]["samples"].append(sample)
                print(
                    f"round {round_no + 1} {name}: {sample.rps:.0f} req/s, service "
                    f"{sample.service_cpu_ms:.3f} ms/req, collector "
                    f"{sample.collector_cpu_ms:.3f} ms/req, errors {sample.errors}",
                    flush=True,
                )
        total = args.rounds * (args.requests + args.warmup)
        for name, tree_name, variant in plan:
            if variant == "untraced":
                continue
            sessions, events = stored(trees[tree_name], projects[name][0])
            results[name]["stored"] = f"{sessions} sessions, {events} events (sent {total})"
    finally:
        for tree in trees.values():
            tree.stop()
    text = table(results) + "\n\n" + notes(results)
    header = (
        f"Service benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.python_version()}, {os.cpu_count()} CPUs: {args.rounds} rounds x "
        f"{args.requests} requests at concurrency {args.concurrency} (after {args.warmup} "
        f"warm-up requests); medians over rounds (service CPU: min-max). Load average "
        f"{load_start} at the start, {load_average()} at the end."
    )
    print(header + "\n\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(header + "\n\n" + text + "\n")
    raw = {
        name: {
            "why": row.get("why"),
            "stored": row.get("stored"),
            "samples": [sample.__dict__ for sample in row["samples"]],
        }
        for name, row in results.items()
    }
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "results": raw}
    (args.out / f"{args.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    for path in work.iterdir():
        path.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
