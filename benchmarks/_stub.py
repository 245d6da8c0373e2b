"""A local stub API that accepts anything and counts what it received (benchmarks only).

- AgentOps v2: ``create_session`` answers a JWT, ``create_events`` counts events; other ``/v2``
  calls answer ``{}``.
- OTLP/HTTP traces (any path ending in ``/v1/traces``, protobuf or JSON): counts spans (this is
  where langfuse exports).
- ``GET /_counts``: ``{"events": n, "spans": n, "requests": n}``.
- ``--status 503`` makes every POST answer 503 (an API outage that still accepts connections).

Runs on its own event loop in a thread of the calling process (:func:`serve_in_thread`); used
while the code being measured runs in another process (the peers).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import msgspec
from aiohttp import web


def _count_otlp_spans(body: bytes, content_type: str) -> int:
    if "json" in content_type:
        data = json.loads(body)
        return sum(
            len(scope.get("spans", []))
            for rs in data.get("resourceSpans", [])
            for scope in rs.get("scopeSpans", [])
        )
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError:  # the collector extra is not installed: count requests only
        return 0
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def make_app(status: int = 200) -> web.Application:
    """The stub application; ``status`` other than 200 makes every POST fail with it."""
    counts = {"events": 0, "spans": 0, "requests": 0}

    async def catch_all(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "GET" and request.path == "/_counts":
            return web.json_response(counts)
        counts["requests"] += 1
        if status != 200:
            return web.json_response({"error": "stub outage"}, status=status)
        path = request.path
        if path.endswith("/v1/traces"):
            # aiohttp has already undone any Content-Encoding (gzip) of the body.
            counts["spans"] += _count_otlp_spans(body, request.content_type)
            return web.Response(body=b"", content_type="application/x-protobuf")
        if path == "/v2/create_session":
            session_id = msgspec.json.decode(body)["session"]["session_id"]
            return web.json_response({"jwt": f"stub-{session_id}", "session_url": None})
        if path == "/v2/create_events":
            counts["events"] += len(msgspec.json.decode(body)["events"])
        if path == "/v2/update_session":
            return web.json_response({"token_cost": "0"})
        return web.json_response({})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", catch_all)
    app["counts"] = counts
    return app


async def _start(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, int(runner.addresses[0][1])


class ThreadStub:
    """The stub served by its own event loop in a daemon thread. ``stop()`` when done."""

    def __init__(self, status: int = 200) -> None:
        self.app = make_app(status)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._serve, name="bench-stub", daemon=True)
        self._thread.start()
        self._ready.wait(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.app["counts"])

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner, self.port = self._loop.run_until_complete(_start(self.app, 0))
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def serve_in_thread(status: int = 200) -> ThreadStub:
    """Start the stub in a thread of this process; returns the handle (``url``, ``counts``)."""
    return ThreadStub(status)


def fetch_counts(url: str) -> dict[str, Any]:
    """``GET /_counts`` of a stub (blocking; for the runner between measurements)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/_counts", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result
