"""Record a session with nested OpenTelemetry spans through our SDK, in a process of its own.

    python tests/browser/_record_spans.py URL API_KEY PROMPT   -> prints the session id

A process of its own because it sets the global SDK TracerProvider (what an application does to
have its spans captured), which would change how every later test of the run behaves.
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import agentops_async as ao


async def main(url: str, api_key: str, prompt: str) -> str:
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("browser-test")
    client = ao.AsyncClient(
        api_key=api_key, endpoint=url, flush_interval=0.01, log_session_stats=False
    )
    try:
        async with client.session(tags=["nested"]) as session:
            with tracer.start_as_current_span("plan"):  # noqa: SIM117 - the nesting is the point
                with tracer.start_as_current_span("search"):
                    with tracer.start_as_current_span("fetch"):
                        pass
            await session.record(
                ao.LLMEvent(
                    model="gpt-4o-mini",
                    prompt=[
                        {"role": "system", "content": "You are terse."},
                        {"role": "user", "content": prompt},
                    ],
                    completion={"role": "assistant", "content": "Forty-two."},
                    prompt_tokens=1000,
                    completion_tokens=500,
                )
            )
            await session.record(
                ao.ErrorEvent(error_type="ValueError", details="bad input", logs="Traceback ...")
            )
    finally:
        await client.close()
    return session.session_id


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:4])))
