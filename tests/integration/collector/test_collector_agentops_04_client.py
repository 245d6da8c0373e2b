"""The unmodified ``agentops`` 0.4.21 SDK (OpenTelemetry based) against the collector.

The SDK lives in its own virtualenv with ``opentelemetry-exporter-otlp-proto-http==1.36.0`` and
the matching ``opentelemetry-sdk`` (with 1.45 the SDK's exporter subclass fails before sending:
its own bug), created once and cached in ``$AGENTOPS_TEST_V4_VENV`` (default
``~/.cache/agentops_async-tests/agentops-0.4.21``), the way the 0.3.26 client test caches its
venv. Creating it needs PyPI; without it the test is skipped (``AGENTOPS_TEST_SKIP_LEGACY=1``
skips it outright). The script runs with the benchmarks' loopback-only socket guard, so the SDK
can reach nothing but the collector and a local OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _servers import REPO_ROOT, CollectorHandle, fake_chat_completions, free_port
from _venvs import client_venv

pytestmark = pytest.mark.asyncio

V4_VERSION = "0.4.21"
REQUIREMENTS = [
    f"agentops=={V4_VERSION}",
    "opentelemetry-exporter-otlp-proto-http==1.36.0",
    "opentelemetry-sdk==1.36.0",
    "opentelemetry-api==1.36.0",
    "openai",
]

OTEL_APP_REQUIREMENTS = [
    # a consistent set: newer instrumentation releases on the index need newer opentelemetry
    # packages than the ones it resolves (opentelemetry.util.genai.instruments, _events)
    "opentelemetry-sdk==1.36.0",
    "opentelemetry-api==1.36.0",
    "opentelemetry-exporter-otlp-proto-http==1.36.0",
    "opentelemetry-instrumentation-openai-v2==2.1b0",
    "openai",
    "httpx",
]

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, sys.argv[4])
    import _guard
    _guard.install()

    key, url, llm_url = sys.argv[1:4]
    import agentops
    from agentops.sdk.decorators import agent, operation, tool, trace
    from opentelemetry import trace as otel

    agentops.init(api_key=key, endpoint=url, exporter_endpoint=url + "/v1/traces", app_url=url,
                  auto_start_session=False)
    deadline = time.monotonic() + 20  # the SDK fetches its token in the background
    while agentops.get_client().get_current_jwt() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    assert agentops.get_client().get_current_jwt(), "no token from /v3/auth/token"

    def trace_id_of(span):
        return format(span.get_span_context().trace_id, "032x")

    @tool(cost=0.25)
    def search(query):
        return f"3 hits for {query}"

    @operation
    def plan(goal):
        return ["search", "answer"]

    @agent
    class Researcher:
        def run(self, goal):
            plan(goal)
            found = search(goal)
            from openai import OpenAI
            client = OpenAI(base_url=llm_url, api_key="not-a-key")
            answer = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": found}])
            return answer.choices[0].message.content

    print("researching")  # captured print() output: uploaded to /v4/logs/upload/
    main = agentops.start_trace("main", tags=["v4", "main"])
    Researcher().run("collectors")
    agentops.end_trace(main, end_state="Success")

    failing_trace = {}

    @trace(name="failing")
    def failing():
        failing_trace["id"] = trace_id_of(otel.get_current_span())
        raise ValueError("boom")

    try:
        failing()
    except ValueError:
        pass

    legacy = agentops.start_session(tags=["legacy"])
    legacy_trace = trace_id_of(legacy.span)
    agentops.end_session("Fail")
    otel.get_tracer_provider().force_flush()
    print("RESULT " + json.dumps({"main": trace_id_of(main.span),
                                  "failing": failing_trace["id"], "legacy": legacy_trace,
                                  "blocked": _guard.BLOCKED}))
    """
)


@pytest.fixture(scope="session")
def v4_python() -> Path:
    """The python of a venv holding the unmodified agentops 0.4.21 (skip if unavailable)."""
    return client_venv(f"agentops-{V4_VERSION}", REQUIREMENTS, "AGENTOPS_TEST_V4_VENV")


@pytest.fixture(scope="session")
def otel_app_python() -> Path:
    """The python of a venv with the OpenTelemetry SDK, the OTLP/HTTP exporter and the official
    OpenAI instrumentation, and no agentops (skip if unavailable)."""
    return client_venv("otel-openai-app", OTEL_APP_REQUIREMENTS, "AGENTOPS_TEST_OTEL_APP_VENV")


@pytest_asyncio.fixture
async def fake_openai() -> AsyncIterator[str]:
    """An OpenAI-compatible chat completions endpoint on 127.0.0.1 (a fixed answer)."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "an answer"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
        }  # fmt: skip

    async with fake_chat_completions(answer) as url:
        yield url


_OTEL_APP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[4])
    import _guard
    _guard.install()

    key, url, llm_url = sys.argv[1:4]
    from openai import OpenAI
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "plain-app"}))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"X-Agentops-Api-Key": key})
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()

    client = OpenAI(base_url=llm_url, api_key="not-a-key")
    with trace.get_tracer("plain-app").start_as_current_span("handle-request") as root:
        for question in ("one", "two"):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()  # exports what is left
    print("RESULT " + json.dumps({"trace": trace_id, "blocked": _guard.BLOCKED}))
    """
)


async def test_a_plain_opentelemetry_app_trace_becomes_a_session_with_priced_llms(
    otel_app_python: Path, collector: CollectorHandle, fake_openai: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(otel_app_python), "-c", _OTEL_APP_SCRIPT, collector.api_key, collector.url,
        fake_openai, str(REPO_ROOT / "benchmarks" / "peers"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_scrubbed_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    stderr = err.decode()
    assert process.returncode == 0, stderr[-3000:]
    line = next(ln for ln in out.decode().splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["blocked"] == []
    assert "Failed to export" not in stderr, stderr[-3000:]

    session = collector.get_session_sync(str(uuid.UUID(hex=result["trace"])))
    assert session is not None
    assert session["trace_id"] == result["trace"]
    assert session["state"] == "INDETERMINATE"  # its root's status is UNSET
    assert session["end_timestamp"] is not None
    assert session["event_counts"] == {"llms": 2, "actions": 1}
    assert float(session["token_cost"]) > 0
    llms = collector.get_events_sync(session["id"], event_type="llms")
    assert [(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in llms] == [
        ("gpt-4o-mini", 1000, 500), ("gpt-4o-mini", 1000, 500),
    ]  # fmt: skip


def _scrubbed_env() -> dict[str, str]:
    closed = f"http://127.0.0.1:{free_port()}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AGENTOPS_LOGGING_TO_FILE": "False",
    }  # fmt: skip


async def test_unmodified_agentops_04_sdk_stores_one_session_per_trace(
    v4_python: Path, collector: CollectorHandle, fake_openai: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(v4_python), "-c", _SCRIPT, collector.api_key, collector.url, fake_openai,
        str(REPO_ROOT / "benchmarks" / "peers"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_scrubbed_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 180)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, stderr[-3000:]
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    assert result["blocked"] == []
    assert "Failed to export" not in stderr and "Upload failed" not in stderr, stderr[-3000:]

    def session_of(trace_id: str) -> dict[str, Any]:
        # the link agentops 0.4 prints redirects to the dashboard's session page; the read API
        # gives that session's JSON
        location = _redirect_of(f"{collector.url}/sessions?trace_id={trace_id}")
        assert location.startswith("/sessions/"), location
        answer = collector.request_sync(
            "GET",
            "/api" + location,
            headers={"X-Agentops-Api-Key": collector.api_key},
        )
        assert answer.status == 200, answer.body
        return dict(answer.body)

    main = session_of(result["main"])
    assert (main["state"], main["end_state"]) == ("SUCCEEDED", "Success")
    assert main["tags"] == ["v4", "main"]
    assert main["end_timestamp"] is not None
    # gpt-4o-mini, 1000 + 500 tokens (0.00045 dollars), plus the @tool(cost=0.25) of `search`
    assert main["token_cost"] == "0.25045"
    events = collector.get_events_sync(main["id"])
    llms = [e for e in events if e["event_type"] == "llms"]
    assert [(e["model"], e["prompt_tokens"], e["completion_tokens"]) for e in llms] == [
        ("gpt-4o-mini", 1000, 500)
    ]
    tools = [e for e in events if e["event_type"] == "tools"]
    assert [t["name"] for t in tools] == ["search"]
    assert tools[0]["params"]["attributes"]["gen_ai.usage.total_cost"] == 0.25
    # in agentops 0.4.21 @operation is @task (agentops.span.kind = "task")
    actions = {
        (e["action_type"], e["params"]["name"]) for e in events if e["event_type"] == "actions"
    }
    assert {("agent", "Researcher.agent"), ("task", "plan.task")} <= actions

    # agentops 0.4.21 ends a @trace that raised with end state "Indeterminate" (its choice)
    failing = session_of(result["failing"])
    assert (failing["state"], failing["end_state"]) == ("INDETERMINATE", "Indeterminate")
    assert failing["end_timestamp"] is not None
    legacy = session_of(result["legacy"])
    assert (legacy["state"], legacy["end_state"], legacy["tags"]) == ("FAILED", "Fail", ["legacy"])

    logs = []
    for trace_id in result.values():
        if isinstance(trace_id, str):
            session_id = session_of(trace_id)["id"]
            answer = collector.request_sync(
                "GET", f"/api/sessions/{session_id}/logs",
                headers={"X-Agentops-Api-Key": collector.api_key},
            )  # fmt: skip
            logs += [entry["body"] for entry in answer.body["logs"]]
    assert any("researching" in body for body in logs), logs


def _redirect_of(url: str) -> str:
    """The ``Location`` of a redirect answer to GET ``url`` (not followed)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 302, response.status
    return str(response.headers["Location"])
