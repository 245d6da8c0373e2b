"""Where the collector's CPU goes during ``bench_ingest.py`` runs: py-spy on the collector process.

Runs ``bench_ingest.py`` with the given arguments; around each run (each checkout of ``--code``,
each client) ``py-spy record`` samples the collector subprocess, and a breakdown of its non-idle
samples by part of the ingest path is printed (decode and rows, thread hand-off, ``COPY``
encoding, socket writes, HTTP, ...). Needs py-spy (the ``bench`` extra) and the right to trace
the collector (root, or ``kernel.yama.ptrace_scope = 0``).

    python benchmarks/profile_ingest.py --backends postgres --clients raw,sdk --events 400000 \\
        --runs 1 --code start=/tmp/old,new=.

The raw stacks stay in ``--out`` (default: a temporary directory, printed) as py-spy's collapsed
format (``-f raw``), one file per run in the order the runs are printed. With two threads (the
decode thread), a sample where a thread waits for the GIL counts as busy: read the shares with
the CPU per event that ``bench_ingest.py`` prints beside them.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

import _servers  # noqa: E402
import bench_ingest  # noqa: E402

# Leaf frames of an idle collector: waiting in epoll, or a decode thread waiting for work.
_IDLE = ("EpollSelector.select", "_worker (", "Condition.wait", "SimpleQueue")
_HANDOFF = (
    "_write_to_self",
    "_read_from_self",
    "ThreadPoolExecutor.submit",
    "call_soon_threadsafe",
    "wrap_future",
    "_chain_future",
    "_copy_future_state",
    "Future.set_result",
    "_WorkItem.run",
    "run_in_executor",
)
_DECODE = (
    "_ingest.py",
    "decode_event_heads",
    "decode_session_heads",
    "_session_batch",
    "decode_json",
)


def part(frames: list[str]) -> str | None:
    """The part of the ingest path a sample's stack is in (None: idle)."""
    leaf, stack = frames[-1], ";".join(frames)
    if leaf.startswith(_IDLE) or any(k in leaf for k in _IDLE):
        return None
    if any(k in leaf for k in _HANDOFF):
        return "thread hand-off"
    if "_SelectorSocketTransport.write" in leaf:
        return "socket writes (COPY data, answers)"
    if "copy_records_to_table" in leaf:
        return "asyncpg COPY encoding"
    if any(k in stack for k in _DECODE) or "_insert_on.<locals>.<genexpr>" in leaf:
        return "decode + checks + rows"
    if "asyncpg" in stack:
        return "asyncpg other (pool, statements)"
    if any(k in stack for k in ("_read_ready", "data_received", "aiohttp", "_read_body")):
        return "HTTP (receive, parse, middlewares, answer)"
    if "_sqlite.py" in stack:
        return "SQLite writes"
    return "event loop, other"


def breakdown(path: Path) -> str:
    """The shares of a py-spy collapsed-stack file's busy samples, one line per part."""
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        name = part(stack.split(";"))
        if name is not None:
            counts[name] += int(number)
    total = sum(counts.values()) or 1
    lines = [f"{path.name}: {total} busy samples"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counts.most_common()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    ours, rest = parser.parse_known_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = ours.out or Path(tempfile.mkdtemp(prefix="agentops-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    start, stop = _servers.CollectorProcess.start, _servers.CollectorProcess.stop

    def start_sampled(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = start(self, *args, **kwargs)
        files.append(out / f"run-{len(files) + 1}.txt")
        cmd = [spy, "record", "-p", str(self.process.pid), "-r", str(ours.rate), "-f", "raw"]
        self._spy = subprocess.Popen(
            [*cmd, "-o", str(files[-1])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return started

    def stop_sampled(self: Any, *args: Any, **kwargs: Any) -> Any:
        sampler = getattr(self, "_spy", None)
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(60)
        return stop(self, *args, **kwargs)

    _servers.CollectorProcess.start = start_sampled  # type: ignore[method-assign]
    _servers.CollectorProcess.stop = stop_sampled  # type: ignore[method-assign]
    bench_ingest.CollectorProcess = _servers.CollectorProcess  # type: ignore[misc]
    sys.argv[1:] = rest
    code = bench_ingest.main()
    print(f"\npy-spy stacks in {out}\n")
    for path in files:
        if path.exists():
            print(breakdown(path))
    return code


if __name__ == "__main__":
    sys.exit(main())
