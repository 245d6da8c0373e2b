"""The unmodified ``agentops`` 0.3.26 client (the AgentOps v2 API) against the collector.

The client lives in its own virtualenv (it pins other versions of our dependencies), created once
and cached in ``$AGENTOPS_TEST_LEGACY_VENV``
(default ``~/.cache/agentops_async-tests/agentops-0.3.26``).
Creating it needs PyPI (about 20 s, once); without it the test is skipped.
``AGENTOPS_TEST_SKIP_LEGACY=1`` skips it outright.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from _servers import CollectorHandle
from _venvs import client_venv

LEGACY_VERSION = "0.3.26"

_SCRIPT = textwrap.dedent(
    """
    import sys
    import agentops
    from agentops import ActionEvent, ErrorEvent, LLMEvent, ToolEvent

    agentops.check_agentops_update = lambda: None  # no PyPI call from the test
    key, url = sys.argv[1], sys.argv[2]
    agentops.init(api_key=key, endpoint=url, auto_start_session=False,
                  instrument_llm_calls=False, max_wait_time=100)
    session = agentops.start_session(tags=["legacy"])
    assert session is not None, "create_session failed"
    session.record(LLMEvent(model="gpt-4o-mini", prompt="hi", completion="hello",
                            prompt_tokens=1000, completion_tokens=500))
    session.record(ActionEvent(action_type="plan", params={"steps": 2}))
    session.record(ToolEvent(name="search", params={"q": "collector"}, returns="3 hits"))
    try:
        raise ValueError("boom")
    except ValueError as exc:
        session.record(ErrorEvent(exception=exc))
    session.create_agent(name="helper", agent_id=None)
    session.add_tags(["more"])
    cost = session.end_session(end_state="Fail", end_state_reason="tool failed")
    print(f"SESSION {session.session_id} {cost}")
    """
)


@pytest.fixture(scope="session")
def legacy_python() -> Path:
    """The python of a venv holding the unmodified agentops 0.3.26 client (skip if unavailable)."""
    return client_venv(
        f"agentops-{LEGACY_VERSION}", [f"agentops=={LEGACY_VERSION}"], "AGENTOPS_TEST_LEGACY_VENV"
    )


def test_unmodified_agentops_client_round_trip(
    legacy_python: Path, collector: CollectorHandle
) -> None:
    result = subprocess.run(
        [str(legacy_python), "-c", _SCRIPT, collector.api_key, collector.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("SESSION "))
    _, session_id, cost = line.split()

    stored = collector.get_session_sync(session_id)
    assert stored is not None
    assert stored["state"] == "FAILED"
    assert stored["end_state_reason"] == "tool failed"
    assert stored["tags"] == ["legacy", "more"]
    assert stored["event_counts"] == {"actions": 1, "errors": 1, "llms": 1, "tools": 1}
    assert stored["token_cost"] == cost == "0.00045"
    assert stored["host_env"] is not None
    events = {e["event_type"]: e for e in collector.get_events_sync(session_id)}
    assert events["llms"]["prompt"] == "hi"
    assert events["tools"]["returns"] == "3 hits"
    assert events["errors"]["error_type"] == "ValueError"
