"""The FastAPI service of ``bench_service.py``, one variant per process (``BENCH_VARIANT``).

``GET /work?q=...`` does a little work (a SHA-256 over ~1 KB, a JSON answer) and, when traced,
records three things about it, like ``examples/fastapi_service.py``: an LLM call, a tool call and
an action. The variants record the same three things:

- ``untraced``: nothing.
- ``agentops``: ``SessionMiddleware`` (one session per request) and three ``record()`` calls
  (an LLMEvent, a ToolEvent, an ActionEvent), sent to the collector by the client of
  ``integrations.fastapi.lifespan`` (settings from ``AGENTOPS_*``; ``AGENTOPS_PROTOCOL`` picks the
  export target where the SDK has more than one).
- ``agentops-gcfreeze``: ``agentops`` with ``gc.freeze()`` once the app has started (the
  documented option for services, docs/web.md): the garbage collector's full
  collections then skip everything the app had made by then.
- ``otel``: ``FastAPIInstrumentor`` (a server span per request and its ASGI send/receive spans)
  and three child spans carrying the same data as attributes, on a ``BatchSpanProcessor`` with
  the OTLP/HTTP (protobuf) span exporter posting to ``BENCH_OTLP_URL``.
- ``otel-bare``: the same without the three child spans (the instrumentation's own spans only:
  less than the other variants record).

Before serving, the process runs one full garbage collection (``BENCH_SETTLED_GC=0`` skips it),
as a service that has been up for a while has had them: see ``main()``.

``POST /_flush`` (not traced) returns when everything recorded so far is delivered: the benchmark
calls it before it reads the CPU counters, so export work is inside the measured window.
``GET /health`` (not traced) answers once the server is up. ``GET /_cpu`` (not traced) answers
the CPU time of this process so far (``time.process_time()``: every thread, nanosecond clock)
and its garbage collections by generation, which the benchmark reads before and after a round.

    BENCH_VARIANT=agentops python benchmarks/_service_app.py --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

VARIANT = os.environ.get("BENCH_VARIANT", "untraced")
_flushers: list[Callable[[], Any]] = []


def _build() -> FastAPI:
    if VARIANT == "untraced":
        return _untraced_app()
    if VARIANT.startswith("agentops"):
        return _agentops_app()
    if VARIANT in ("otel", "otel-bare"):
        return _otel_app(handler_spans=VARIANT == "otel")
    raise SystemExit(f"unknown BENCH_VARIANT={VARIANT!r}: untraced, agentops*, otel, otel-bare")


def _work(q: str) -> tuple[str, dict[str, Any]]:
    digest = hashlib.sha256((q * 64).encode()).hexdigest()
    return digest, {"q": q, "digest": digest, "length": len(q) * 64}


def _untraced_app() -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    async def work(q: str = "hello world") -> dict[str, Any]:
        return _work(q)[1]

    return app


def _agentops_app() -> FastAPI:
    import agentops_async as agentops
    from agentops_async.integrations.fastapi import SessionMiddleware, lifespan

    @contextlib.asynccontextmanager
    async def flusher(app: FastAPI) -> AsyncIterator[None]:
        _flushers.append(lambda: app.state.agentops_client.flush(60.0))
        if VARIANT == "agentops-gcfreeze":
            gc.collect()
            gc.freeze()
        yield

    app = FastAPI(lifespan=lifespan(flusher, log_session_stats=False))
    app.add_middleware(SessionMiddleware, exclude_paths=["/health", "/_flush", "/_cpu"])

    @app.get("/work")
    async def work(q: str = "hello world") -> dict[str, Any]:
        digest, answer = _work(q)
        prompt = [{"role": "user", "content": q}]
        await agentops.record(
            agentops.LLMEvent(
                model="bench-model",
                prompt=prompt,
                completion=digest[:32],
                prompt_tokens=12,
                completion_tokens=8,
            )
        )
        await agentops.record(
            agentops.ToolEvent(name="sha256", params={"chars": len(q)}, returns=digest[:16])
        )
        await agentops.record(agentops.ActionEvent(action_type="answer", params={"q": q}))
        return answer

    _add_flush_route(app)
    return app


def _otel_app(handler_spans: bool) -> FastAPI:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench-service"}))
    exporter = OTLPSpanExporter(
        endpoint=os.environ["BENCH_OTLP_URL"],
        headers={"Authorization": f"Bearer {os.environ['AGENTOPS_API_KEY']}"},
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("bench-service")
    _flushers.append(provider.force_flush)

    @contextlib.asynccontextmanager
    async def shutdown(app: FastAPI) -> AsyncIterator[None]:
        yield
        provider.shutdown()

    app = FastAPI(lifespan=shutdown)

    @app.get("/work")
    async def work(q: str = "hello world") -> dict[str, Any]:
        digest, answer = _work(q)
        if not handler_spans:
            return answer
        with tracer.start_as_current_span(
            "chat bench-model",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "bench-model",
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": q,
                "gen_ai.completion.0.content": digest[:32],
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 8,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "sha256",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "sha256"},
        ):
            pass
        with tracer.start_as_current_span("answer", attributes={"agentops.action.type": "answer"}):
            pass
        return answer

    _add_flush_route(app)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="health,_flush,_cpu"
    )
    return app


def _add_flush_route(app: FastAPI) -> None:
    @app.post("/_flush")
    async def flush() -> dict[str, bool]:
        done = True
        for flush in _flushers:
            result = flush()
            if hasattr(result, "__await__"):
                result = await result
            done = done and bool(result)
        return {"flushed": done}


app = _build()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "variant": VARIANT}


@app.get("/_cpu")
async def cpu() -> dict[str, Any]:
    # CLOCK_PROCESS_CPUTIME_ID: user + system time of every thread, exited ones included, in ns
    # (the /proc/<pid>/stat figures it replaces come in 10 ms ticks); and the garbage
    # collector's collections so far, by generation.
    collections = [generation["collections"] for generation in gc.get_stats()]
    return {"process_time": time.process_time(), "gc_collections": collections}


if "/_flush" not in {getattr(route, "path", None) for route in app.routes}:
    _add_flush_route(app)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench_service.py's FastAPI service")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get("BENCH_SETTLED_GC", "1") == "1":
        # A service that has been up a while has had full collections: its start-up objects
        # sit in the oldest generation, and the next full collection comes when a quarter as
        # many again have been carried there. A fresh process has had none, so its first one
        # comes after a fixed number of young collections, whatever the requests keep alive;
        # one collection now starts every variant in the steady state instead.
        gc.collect()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
