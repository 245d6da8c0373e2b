"""Peer benchmark: the ``agentops`` 0.3.26 package's ``session.record()`` (runs in its own venv).

Usage: ``python agentops_0326.py '{"endpoint": ..., "api_key": ..., "events": N, "warmup": W}'``

Records ``warmup`` untimed then ``events`` timed ``ActionEvent``s into one session against an
AgentOps v2 endpoint on 127.0.0.1 (our collector), then ``events`` more built beforehand (record()
alone), ends the session (which flushes its BatchSpanProcessor) and prints one JSON line: µs per
event both ways, end_session seconds, the session id (the runner counts what the collector
stored), peak RSS and any blocked connection.
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
    events, warmup = int(config["events"]), int(config["warmup"])
    import agentops
    import agentops.helpers

    agentops.helpers.check_agentops_update = lambda: None  # no PyPI query from a benchmark
    logging.getLogger("agentops").setLevel(logging.ERROR)
    agentops.init(
        api_key=config["api_key"],
        endpoint=config["endpoint"],
        auto_start_session=False,
        max_queue_size=events + warmup + 10,  # its BatchSpanProcessor drops silently when full
        max_wait_time=1000,
        instrument_llm_calls=False,
    )
    session = agentops.start_session(tags=["bench"])
    if session is None:
        print(json.dumps({"error": "agentops.start_session() returned None"}))
        return 1
    Event = agentops.ActionEvent
    for i in range(warmup):
        session.record(Event(action_type="warmup", params={"q": "weather", "i": i}))
    t0 = time.perf_counter()
    for i in range(events):
        session.record(Event(action_type="search", params={"q": "weather", "i": i}))
    recorded_s = time.perf_counter() - t0
    # The same with the events built beforehand: record() alone, without the constructor (whose
    # call-stack inspection for an agent id is most of the cost above).
    prebuilt = [Event(action_type="search", params={"q": "weather", "i": i}) for i in range(events)]
    t2 = time.perf_counter()
    for event in prebuilt:
        session.record(event)
    prebuilt_s = time.perf_counter() - t2
    t1 = time.perf_counter()
    session.end_session("Success")
    end_s = time.perf_counter() - t1
    result = {
        "version": agentops.__version__ if hasattr(agentops, "__version__") else "0.3.26",
        "record_us": recorded_s / events * 1e6,
        "record_prebuilt_us": prebuilt_s / events * 1e6,
        "end_s": end_s,
        "total_s": recorded_s + prebuilt_s + end_s,
        "recorded": 2 * events + warmup,
        "timed_events": 2 * events,  # the events inside total_s
        "session_id": str(session.session_id),
        "peak_rss_mb": _peak_rss_mb(),
        "blocked": _guard.BLOCKED,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
