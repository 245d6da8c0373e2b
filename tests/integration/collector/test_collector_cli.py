"""The command line (keys, sessions, serve) and the sync test helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _servers import REPO_ROOT, CollectorHandle, CollectorProcess, http_request


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "agentops_async", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd=REPO_ROOT,
    )


def _create_session(url: str, api_key: str, **fields: Any) -> str:
    session_id = str(uuid.uuid4())
    answer = http_request(
        "POST",
        f"{url}/v2/create_session",
        json_body={"session": {"session_id": session_id, **fields}},
        headers={"X-Agentops-Api-Key": api_key},
    )
    assert answer.status == 200, answer.body
    return session_id


def test_keys_create_then_serve_and_list_sessions(tmp_path: Path) -> None:
    database = str(tmp_path / "cli.db")
    created = _cli("keys", "create", "my-project", "--database", database)
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip()
    assert str(uuid.UUID(api_key)) == api_key
    assert "my-project" in created.stderr

    process = CollectorProcess(database, "sqlite", tmp_path / "serve.log").start()
    try:
        session_id = _create_session(process.url, api_key, tags=["cli-test"])
        listed = _cli("sessions", "list", "--database", database)
        assert listed.returncode == 0, listed.stderr
        assert session_id in listed.stdout
        assert "RUNNING" in listed.stdout
        assert "cli-test" in listed.stdout

        as_json = _cli(
            "sessions", "list", "--json", "--endpoint", process.url, "--api-key", api_key
        )
        assert as_json.returncode == 0, as_json.stderr
        assert [s["id"] for s in json.loads(as_json.stdout)] == [session_id]

        shown = _cli("sessions", "show", session_id, "--json", "--database", database)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["tags"] == ["cli-test"]

        other_key = _cli("keys", "create", "other", "--database", database).stdout.strip()
        hidden = _cli("sessions", "show", session_id, "--endpoint", process.url,
                      "--api-key", other_key)  # fmt: skip
        assert hidden.returncode == 2
        assert "404" in hidden.stderr
    finally:
        process.stop()


def test_a_revoked_key_is_refused_by_a_running_collector_and_a_new_key_takes_over(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "keys.db")
    old_key = _cli("keys", "create", "rotating", "--database", database).stdout.strip()
    process = CollectorProcess(database, "sqlite", tmp_path / "serve.log").start()
    try:
        session_id = _create_session(process.url, old_key)  # the collector now caches this key
        (listed,) = _cli("keys", "list", "--database", database).stdout.splitlines()
        project_id = listed.split()[0]
        assert listed.endswith("keys: 1 live, 0 revoked")
        added = _cli("keys", "add", project_id, "--database", database)
        assert added.returncode == 0, added.stderr
        new_key = added.stdout.strip()

        revoked = _cli("keys", "revoke", old_key, "--database", database)
        assert revoked.returncode == 0, revoked.stderr
        again = _cli("keys", "revoke", old_key, "--database", database)
        assert again.returncode == 2 and "revoked already" in again.stderr

        deadline = time.monotonic() + 15  # the collector trusts its key cache a few seconds
        while True:
            answer = http_request(
                "POST",
                f"{process.url}/v2/create_session",
                json_body={"session": {"session_id": str(uuid.uuid4())}},
                headers={"X-Agentops-Api-Key": old_key},
            )
            if answer.status == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling a condition, bounded by the deadline
        assert answer.status == 401
        assert "revoked" in answer.body["message"]

        shown = _cli("sessions", "show", session_id, "--endpoint", process.url,
                     "--api-key", new_key)  # fmt: skip
        assert shown.returncode == 0, shown.stderr  # the project's sessions, under the new key
        assert (
            _cli("keys", "list", "--database", database)
            .stdout.strip()
            .endswith("keys: 1 live, 1 revoked")
        )
    finally:
        process.stop()


def test_sessions_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    result = _cli("sessions", "list", "--database", str(tmp_path / "nope.db"))
    assert result.returncode == 2
    assert "no database" in result.stderr


def test_serve_rejects_a_bad_price_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"m": {"prompt": "cheap"}}))
    result = _cli("serve", "--port", "0", "--database", str(tmp_path / "x.db"),
                  "--prices", str(prices))  # fmt: skip
    assert result.returncode != 0
    assert "prices" in result.stderr


def test_sync_read_helpers(collector: CollectorHandle) -> None:
    session_id = _create_session(collector.url, collector.api_key, tags=["sync"])
    (session,) = collector.list_sessions_sync(tag="sync")
    assert session["id"] == session_id
    assert collector.get_session_sync(session_id) == session
    assert collector.get_events_sync(session_id) == []
    assert collector.get_session_sync(session_id, api_key=collector.new_api_key()) is None


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["sessions", "list", "--help"]])
def test_help_works(args: list[str]) -> None:
    result = _cli(*args)
    assert result.returncode == 0
    assert "usage" in result.stdout


def test_demo_stores_what_it_prints(tmp_path: Path) -> None:

    database = str(tmp_path / "demo.db")
    result = _cli("demo", "--database", database)
    assert result.returncode == 0, result.stderr
    assert "20 sessions" in result.stdout
    for state in ("SUCCEEDED", "FAILED", "INDETERMINATE"):
        assert state in result.stdout
    assert f"sessions list --database {database}" in result.stdout
    # it ends with how to open the dashboard on its database, and the key to sign in with
    assert f"agentops-async serve --port 8000 --database {database}" in result.stdout
    assert "open http://127.0.0.1:8000/ and sign in" in result.stdout
    lines = result.stdout.splitlines()
    key = lines[
        lines.index(
            "  then open http://127.0.0.1:8000/ and sign in with the demo project's API key"
        )
        + 1
    ]
    assert str(uuid.UUID(key.strip())) == key.strip()

    listed = _cli("sessions", "list", "--json", "--database", database)
    sessions = json.loads(listed.stdout)
    assert len(sessions) == 20
    assert all(s["state"] != "RUNNING" for s in sessions)
    assert all(s["event_counts"].get("llms", 0) > 0 for s in sessions)
    assert sum(float(s["token_cost"]) for s in sessions) > 0
    # the LLM and tool calls are spans nested in each step's span (a waterfall to look at)
    shown = _cli(
        "sessions", "show", sessions[0]["id"], "--events", "--json", "--database", database
    )
    events = json.loads(shown.stdout)["events"]
    steps = {
        e["span_id"] for e in events if e["event_type"] == "actions" and e["action_type"] == "span"
    }
    llms = [e for e in events if e["event_type"] == "llms"]
    assert llms
    assert all(e["params"]["parent_span_id"] in steps for e in llms)


_FREEZE_PROBE = """
import gc, sys
from agentops_async import cli

class Out:
    def write(self, text):
        if "listening on" in text:
            text = f"frozen={gc.get_freeze_count()} {text}"
        return sys.__stdout__.write(text)

    def flush(self):
        sys.__stdout__.flush()

sys.stdout = Out()
sys.exit(cli.main(sys.argv[1:]))
"""


def test_serve_moves_what_it_made_at_start_out_of_the_garbage_collectors_way(
    tmp_path: Path,
) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = ["serve", "--port", "0", "--database", str(tmp_path / "c.db")]
    with subprocess.Popen(
        [sys.executable, "-c", _FREEZE_PROBE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
        finally:
            process.terminate()
            process.wait(timeout=30)
    frozen, _, rest = line.partition(" ")
    assert rest.startswith("agentops-async collector listening on"), line
    # The modules, the app and the storage (tens of thousands of objects) are frozen: full
    # collections during ingest no longer walk them.
    assert int(frozen.removeprefix("frozen=")) > 10_000, line
