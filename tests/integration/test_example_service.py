"""examples/fastapi_service.py, started as a process: its requests arrive in the collector."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from _servers import REPO_ROOT, fake_chat_completions, free_port, http_request, wait_until

pytestmark = pytest.mark.asyncio


@pytest.fixture
def collector_backend() -> str:
    return "sqlite"


@pytest_asyncio.fixture
async def fake_llm() -> AsyncIterator[str]:
    """An OpenAI-compatible chat completions endpoint on 127.0.0.1 (a fixed answer)."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        text = body["messages"][-1]["content"]
        return {
            "choices": [{"message": {"role": "assistant", "content": f"echo: {text}"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        }

    async with fake_chat_completions(answer) as url:
        yield url


async def test_example_service_records_one_session_per_request(
    collector: Any, fake_llm: str, tmp_path: Any
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "AGENTOPS_API_KEY": collector.api_key,
        "AGENTOPS_API_ENDPOINT": collector.url,
        "LLM_BASE_URL": fake_llm,
        "LLM_MODEL": "test-model",
    }
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO_ROOT / "examples" / "fastapi_service.py"),
            "--port",
            str(port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if service.returncode is not None:
                raise RuntimeError(f"the example exited: {log_path.read_text()}")
            try:
                return http_request("GET", f"{url}/health", timeout=2).status == 200
            except OSError:
                return False

        await asyncio.to_thread(wait_until, ready, 60, "the example service")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = [
                (await http.post("/ask", json={"question": f"q{i}"})).json() for i in range(3)
            ]
    finally:
        service.send_signal(signal.SIGTERM)  # uvicorn shuts down; the lifespan closes the client
        code = await asyncio.wait_for(service.wait(), 30)
    # uvicorn re-raises the signal after its graceful shutdown (lifespan included).
    assert code in (0, -signal.SIGTERM), log_path.read_text()

    assert [a["answer"] for a in answers] == ["echo: q0", "echo: q1", "echo: q2"]
    stored = await collector.list_sessions()
    assert sorted(s["id"] for s in stored) == sorted(a["session_id"] for a in answers)
    for answer in answers:
        session = await collector.get_session(answer["session_id"])
        assert session is not None
        assert session["end_state"] == "Success"
        assert {"example-service", "http.route:/ask", "http.status:200"} <= set(session["tags"])
        events = await collector.get_events(answer["session_id"])
        assert sorted(e["event_type"] for e in events) == ["llms", "tools"]
        llm = next(e for e in events if e["event_type"] == "llms")
        assert llm["model"] == "test-model"
        assert (llm["prompt_tokens"], llm["completion_tokens"]) == (7, 3)
        assert llm["completion"] == answer["answer"]
