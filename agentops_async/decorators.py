"""Decorators with the AgentOps 0.4 names, to move from ``agentops`` without rewriting.

::

    from agentops_async.decorators import agent, operation, session, task, tool, trace, workflow

    @session(tags=["nightly"])          # or @trace: opens a session around each call
    async def run(goal: str) -> str:
        return await plan(goal)

    @agent
    async def plan(goal: str) -> str:
        return search(goal)

    @tool(cost=0.01)
    def search(query: str) -> list[str]:
        ...

Each call of an ``@agent``, ``@operation``/``@task``, ``@workflow`` or ``@tool`` function is a span
of the current session's trace, recorded as one event (an ActionEvent; a ToolEvent for tools) with
its own span id and its parent's (``params["parent_span_id"]``), so that calls nest in the
waterfall as they nested in the code; OpenTelemetry spans started inside (instrumented LLM calls)
nest under it too. Inputs and output are recorded, each cut to :data:`MAX_IO_BYTES`. See
docs/hooks.md ("Decorators") for what each field holds.

``session`` lives here and not on the package: ``agentops_async.session`` is the subpackage of
the session machinery, which a decorator of that name would shadow. ``agentops_async.trace`` is
the same decorator, on the package.
"""

from __future__ import annotations

from ._decorators import (
    MAX_IO_BYTES,
    agent,
    operation,
    record_action,
    record_tool,
    session,
    task,
    tool,
    workflow,
)
from ._decorators import trace_session as trace

__all__ = [
    "MAX_IO_BYTES",
    "agent",
    "operation",
    "record_action",
    "record_tool",
    "session",
    "task",
    "tool",
    "trace",
    "workflow",
]
