"""The four OpenAI calls of the LLM-instrumentation tests, in one session (used in-process and
run as a script in a fresh interpreter: ``python tests/_llm_calls.py INCLUDE API_KEY COLLECTOR_URL
LLM_URL`` prints the session id, trace id and event counts as JSON). With ``INCLUDE`` = ``sync``,
the script makes one plain call with the sync facade and ``openai.OpenAI``, after
``agentops_async.init(..., instrument_llm_calls=True)``, as an AgentOps user writes it.

A plain completion, a streaming one (``stream_options.include_usage``), one answered with a tool
call, and one the server fails (500).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

MODEL = "gpt-4o-mini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def four_calls(api_key: str, collector_url: str, llm_url: str) -> Any:
    """Make the four calls in a session of a new client; the client is closed. The session."""
    import openai

    import agentops_async as ao

    client = ao.AsyncClient(api_key=api_key, endpoint=collector_url, log_session_stats=False)
    llm = openai.AsyncOpenAI(api_key="sk-test", base_url=llm_url, max_retries=0)
    async with client.session() as session:
        await llm.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "plain"}]
        )
        stream = await llm.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert streamed == "answer to stream", streamed
        await llm.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "tool"}], tools=[WEATHER_TOOL]
        )
        try:
            await llm.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "fail"}]
            )
        except openai.InternalServerError:
            pass
        else:
            raise AssertionError("the fake server was to fail the call")
    await llm.close()
    assert await client.close()
    return session


async def _main(include: str, api_key: str, collector_url: str, llm_url: str) -> None:
    from opentelemetry import trace

    import agentops_async as ao

    names = ao.instrument(include=[include], capture_content=True)
    session = await four_calls(api_key, collector_url, llm_url)
    print(
        json.dumps(
            {
                "instrumented": names,
                "session_id": session.session_id,
                "trace_id": session.trace_id,
                "event_counts": session.event_counts,
                # instrument() installed no global provider of its own
                "global_provider": type(trace.get_tracer_provider()).__name__,
            }
        )
    )


def _sync_main(api_key: str, collector_url: str, llm_url: str) -> None:
    import openai

    import agentops_async as ao
    from agentops_async.telemetry._instrument import instrumented

    client = ao.init(
        api_key=api_key, endpoint=collector_url, instrument_llm_calls=True, log_session_stats=False
    )
    llm = openai.OpenAI(api_key="sk-test", base_url=llm_url, max_retries=0)
    session = client.start_session(tags=["sync"])
    llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "plain"}])
    stats = session.end_session("Success")
    assert client.close(timeout=10)
    result = {
        "instrumented": instrumented(),
        "session_id": session.session_id,
        "counts": stats.event_counts,
        "token_cost": str(stats.token_cost),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "sync":
        _sync_main(*sys.argv[2:5])
    else:
        asyncio.run(_main(*sys.argv[1:5]))
