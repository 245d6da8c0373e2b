"""Peer benchmark: ``langfuse`` (current release) event/span API (runs in its own venv).

Usage: ``python langfuse_current.py '{"endpoint": ..., "events": N, "warmup": W, "api": A}'``
with ``api`` one of ``"create_event"`` (``langfuse.create_event(name=..., input=...)``) or
``"span"`` (``langfuse.start_observation(name=..., input=...)`` then ``.end()``).

Langfuse exports OTLP/HTTP to ``<endpoint>/api/public/otel/v1/traces``; the runner points it at a
stub on 127.0.0.1 that accepts anything and counts spans. Prints one JSON line: record µs/event,
flush seconds, peak RSS and any blocked connection.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _guard

_guard.install()


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    config = json.loads(sys.argv[1])
    events, warmup, api = int(config["events"]), int(config["warmup"]), config["api"]
    from importlib.metadata import version

    from langfuse import Langfuse

    logging.getLogger("langfuse").setLevel(logging.ERROR)
    client = Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        base_url=config["endpoint"],
        flush_interval=1.0,
    )
    if api == "create_event":

        def one(i: int) -> None:
            client.create_event(name="search", input={"q": "weather", "i": i})

    else:

        def one(i: int) -> None:
            client.start_observation(name="search", input={"q": "weather", "i": i}).end()

    for i in range(warmup):
        one(i)
    t0 = time.perf_counter()
    for i in range(events):
        one(i)
    recorded_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    client.flush()
    flush_s = time.perf_counter() - t1
    client.shutdown()
    result = {
        "version": version("langfuse"),
        "record_us": recorded_s / events * 1e6,
        "end_s": flush_s,
        "total_s": recorded_s + flush_s,
        "recorded": events + warmup,
        "peak_rss_mb": _peak_rss_mb(),
        "blocked": _guard.BLOCKED,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
