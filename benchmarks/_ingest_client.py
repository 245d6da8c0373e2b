"""``bench_ingest.py``'s SDK client, run in a subprocess with one checkout's SDK.

    python benchmarks/_ingest_client.py CHECKOUT_DIR '{"url": ..., "api_key": ..., "events": ...,
        "sessions": ..., "protocol": ...}'

``CHECKOUT_DIR``'s ``agentops_async`` is imported before anything else, so that the client of a
``--code old=DIR`` row is the old SDK talking to the old collector (not this checkout's exporter).
The recording loop is ``bench_ingest.run_sdk`` (this checkout's: the same work for every row).
Prints one JSON line: events/s, this process's CPU seconds and the SDK's file.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

code_dir = str(Path(sys.argv[1]).resolve())
sys.path.insert(0, code_dir)
import agentops_async  # noqa: E402  (first: the checkout's SDK, before bench_ingest's sys.path)

sys.path.insert(1, str(Path(__file__).resolve().parent))
from bench_ingest import run_sdk  # noqa: E402


def main() -> None:
    job = json.loads(sys.argv[2])
    cpu_before = time.process_time()
    rate = asyncio.run(
        run_sdk(job["url"], job["api_key"], job["events"], job["sessions"], job["protocol"])
    )
    print(
        json.dumps(
            {
                "rate": rate,
                "client_cpu": time.process_time() - cpu_before,
                "sdk": agentops_async.__file__,
            }
        )
    )


if __name__ == "__main__":
    main()
