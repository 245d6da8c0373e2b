"""A small FastAPI service tracked by agentops_async: one session per request, an LLM call.

Each ``POST /ask`` runs in a session of its own (SessionMiddleware): the handler calls an
OpenAI-compatible chat completions API and records the call as an LLMEvent; a BackgroundTask
records a ToolEvent after the response went out, in the same session. ``/health`` is not tracked.
No request waits on the collector, even when it is down.

Run it against a local collector (``agentops-async serve``) and any OpenAI-compatible server::

    AGENTOPS_API_KEY=<project key> AGENTOPS_API_ENDPOINT=http://127.0.0.1:8000 \\
    LLM_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2 LLM_API_KEY=... \\
    python examples/fastapi_service.py --port 8080

    curl -s localhost:8080/ask -H 'content-type: application/json' -d '{"question": "Hi?"}'

Needs ``pip install fastapi uvicorn`` besides agentops_async.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from pydantic import BaseModel

import agentops_async as agentops
from agentops_async.integrations.fastapi import SessionMiddleware, lifespan

LLM_BASE_URL = os.environ.get("LLM_BASE_URL", "http://127.0.0.1:11434/v1").rstrip("/")
LLM_MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
LLM_API_KEY = os.environ.get("LLM_API_KEY", "unused")


@contextlib.asynccontextmanager
async def http_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """The service's own lifespan: one HTTP session for the LLM calls."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield {"http": http}


# The agentops client starts with the service and is closed (bounded flush) at shutdown; the
# service's own lifespan runs inside it. Settings come from AGENTOPS_* environment variables.
app = FastAPI(lifespan=lifespan(http_lifespan, close_timeout=5.0))
app.add_middleware(SessionMiddleware, exclude_paths=["/health"], tags=["example-service"])


class Question(BaseModel):
    question: str


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/ask")
async def ask(question: Question, request: Request, background: BackgroundTasks) -> dict[str, Any]:
    http: aiohttp.ClientSession = request.state.http
    messages = [{"role": "user", "content": question.question}]
    event = agentops.LLMEvent(model=LLM_MODEL, prompt=messages)
    async with http.post(
        f"{LLM_BASE_URL}/chat/completions",
        json={"model": LLM_MODEL, "messages": messages},
        headers={"Authorization": f"Bearer {LLM_API_KEY}"},
    ) as response:
        if response.status != 200:
            # A 502 ends the request's session FAILED, with an ErrorEvent.
            raise HTTPException(502, f"the LLM answered HTTP {response.status}")
        answer = await response.json()
    completion = answer["choices"][0]["message"]["content"]
    usage = answer.get("usage") or {}
    event.completion = completion
    event.prompt_tokens = usage.get("prompt_tokens")
    event.completion_tokens = usage.get("completion_tokens")
    await agentops.record(event)  # into this request's session; never waits on the network
    background.add_task(audit, question.question)
    session = agentops.get_current_session()
    return {"answer": completion, "session_id": session.session_id if session else None}


async def audit(question: str) -> None:
    """Runs after the response was sent, still in the request's session."""
    await agentops.record(agentops.ToolEvent(name="audit", params={"chars": len(question)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
