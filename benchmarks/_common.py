"""Small helpers shared by the figures: a collector for a figure, stored counts, RSS."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from pathlib import Path

from _report import Options
from _servers import CollectorProcess
from bench_ingest import _stored_total

__all__ = ["collector", "percentile", "stored_total", "vm_kb"]

stored_total = _stored_total  # bench_ingest's read-API count of stored events


@contextlib.contextmanager
def collector(opts: Options, tag: str, database: str | None = None) -> Iterator[tuple[str, str]]:
    """A collector subprocess on a fresh SQLite file (or ``database``); yields (url, api key)."""
    db = database or str(opts.work_dir / f"{tag}.db")
    backend = "postgres" if db.startswith("postgresql://") else "sqlite"
    process = CollectorProcess(db, backend, opts.work_dir / f"collector-{tag}.log").start()
    try:
        _, key = process.create_project(f"bench-{tag}")
        yield process.url, key
    finally:
        process.stop()


def vm_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmHWM``: peak RSS, ``VmRSS``: current)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, int(q * 10) - 1)]
