"""``agentops-async demo``: an embedded collector, a burst of agent sessions, and what was stored.

Twenty simulated agents run concurrently with the async SDK: they call an "LLM", use tools, take
actions and sometimes meet errors. Some fail with an exception, some are cancelled. The collector
stores everything in a SQLite file; the demo then reads the sessions back through the read API and
prints them, with the commands to look at them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Any

import aiohttp

__all__ = ["run_demo"]

_ROLES = ("planner", "researcher", "coder", "reviewer")
_MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "claude-3-haiku")
_TOOLS = ("web_search", "read_file", "run_tests", "sql_query")


class ToolFailure(RuntimeError):
    """A simulated tool error that the agent handles and records."""


class AgentGaveUp(RuntimeError):
    """A simulated unhandled agent error: the session ends FAILED."""


def _tracer() -> Any:
    """An OpenTelemetry tracer whose spans the sessions capture (the demo's own SDK provider,
    set globally unless the process already has one)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider(resource=Resource({"service.name": "demo"})))
    return trace.get_tracer("agentops_async.demo")


async def _agent(client: Any, index: int, rng: random.Random) -> None:
    """One agent: each step is a span holding an LLM call (a GenAI span, as an instrumented
    client makes) and a tool call; actions and handled errors are recorded as events."""
    import agentops_async as ao

    tracer = _tracer()
    role = _ROLES[index % len(_ROLES)]
    steps = rng.randint(3, 7)
    fails_at = rng.randint(1, steps - 1) if index % 7 == 3 else None
    async with client.session(tags=[role, f"agent-{index:02d}"]) as session:
        for step in range(steps):
            with tracer.start_as_current_span(f"{role} step {step}"):
                model = rng.choice(_MODELS)
                tool = _TOOLS[(index + step) % len(_TOOLS)]
                with tracer.start_as_current_span(f"chat {model}") as llm:
                    await asyncio.sleep(rng.uniform(0.005, 0.03))  # "thinking"
                    llm.set_attributes(
                        {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.request.model": model,
                            "gen_ai.prompt": f"[{role}] step {step}: what next?",
                            "gen_ai.completion": f"use {tool}",
                            "gen_ai.usage.input_tokens": rng.randint(200, 2000),
                            "gen_ai.usage.output_tokens": rng.randint(20, 400),
                        }
                    )
                # A tool failure ends its span with an ERROR status: the session stores it as an
                # error event linked to the tool call; the agent goes on.
                with (
                    contextlib.suppress(ToolFailure),
                    tracer.start_as_current_span(f"execute_tool {tool}") as call,
                ):
                    call.set_attributes(
                        {
                            "gen_ai.operation.name": "execute_tool",
                            "gen_ai.tool.name": tool,
                            "gen_ai.tool.call.arguments": f'{{"step": {step}}}',
                        }
                    )
                    await asyncio.sleep(rng.uniform(0.001, 0.01))
                    if rng.random() < 0.12:
                        raise ToolFailure(f"{tool} timed out")
                    call.set_attribute("gen_ai.tool.call.result", '{"ok": true}')
                await session.record(ao.ActionEvent(action_type="decide", params={"step": step}))
            if step == fails_at:
                raise AgentGaveUp(f"agent {index} gave up at step {step}")


async def _run_agents(client: Any, count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    tasks = [
        asyncio.create_task(_agent(client, i, random.Random(rng.random()))) for i in range(count)
    ]
    cancelled = [t for i, t in enumerate(tasks) if i % 9 == 5]  # slow agents we stop
    await asyncio.sleep(0.06)
    for task in cancelled:
        task.cancel()
    outcomes = {"ok": 0, "failed": 0, "cancelled": 0}
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, asyncio.CancelledError):
            outcomes["cancelled"] += 1
        elif isinstance(result, AgentGaveUp):
            outcomes["failed"] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes["ok"] += 1
    return outcomes


async def _stored_sessions(url: str, api_key: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/api/sessions", params={"limit": "500"}, headers={"X-Agentops-Api-Key": api_key}
        ) as response,
    ):
        response.raise_for_status()
        data = await response.json()
    sessions: list[dict[str, Any]] = data["sessions"]
    return sorted(sessions, key=lambda s: s["tags"][-1] if s["tags"] else "")


async def run_demo(database: str | None = None, sessions: int = 20, seed: int = 7) -> int:
    """Run the demo and print what the collector stored; returns the exit status."""
    import agentops_async as ao

    from .cli import render_sessions_table
    from .collector import Collector

    if database is None:
        database = os.path.join(tempfile.mkdtemp(prefix="agentops-demo-"), "agentops-demo.db")
    started = time.perf_counter()
    async with Collector(database=database, port=0) as collector:
        api_key = await collector.create_project("demo")
        print(f"collector: {collector.url}  (SQLite database: {database})")
        print(f"running {sessions} concurrent agent sessions ...")
        client = ao.AsyncClient(
            api_key=api_key, endpoint=collector.url, flush_interval=0.05, log_session_stats=False
        )
        try:
            outcomes = await _run_agents(client, sessions, seed)
        finally:
            await client.close()
        stored = await _stored_sessions(collector.url, api_key)

    print(
        f"agents: {outcomes['ok']} succeeded, {outcomes['failed']} failed, "
        f"{outcomes['cancelled']} cancelled\n"
    )
    print(render_sessions_table(stored))
    total_events = sum(s["events_total"] for s in stored)
    total_cost = sum(float(s["token_cost"]) for s in stored)
    by_state: dict[str, int] = {}
    for s in stored:
        by_state[s["state"]] = by_state.get(s["state"], 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
    print(
        f"\n{len(stored)} sessions ({states}), {total_events} events, "
        f"${total_cost:.6f} in {time.perf_counter() - started:.1f}s"
    )
    cli = _cli_command()
    print(
        "\nLook at them in the dashboard:\n"
        f"  {cli} serve --port 8000 --database {database}\n"
        "  then open http://127.0.0.1:8000/ and sign in with the demo project's API key\n"
        f"  {api_key}\n"
        "\nor in the terminal:\n"
        f"  {cli} sessions list --database {database}\n"
        f"  {cli} sessions show <session-id> --events --database {database}"
    )
    return 0


def _cli_command() -> str:
    """How to call the CLI again from here: ``agentops-async`` when that name finds this very
    script on PATH, else the path it was started by (``.venv/bin/agentops-async`` when the
    virtualenv is not activated, as in the README's first command)."""
    invoked = sys.argv[0]
    if os.path.basename(invoked) != "agentops-async":
        return "agentops-async"  # run another way (python -m, a test): the installed name
    found = shutil.which("agentops-async")
    if found is not None and os.path.realpath(found) == os.path.realpath(invoked):
        return "agentops-async"
    relative = os.path.relpath(invoked)
    return relative if not relative.startswith("..") else os.path.abspath(invoked)
