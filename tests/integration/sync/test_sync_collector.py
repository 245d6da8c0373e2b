"""The sync facade against the real collector over loopback (SQLite and PostgreSQL).

Every check reads back what the collector stored.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _servers import REPO_ROOT, CollectorHandle

import agentops_async as ao
from agentops_async import sync

MakeClient = Callable[..., ao.Client]


def _params(event: dict[str, Any]) -> Any:
    return event.get("params")


def test_seed_api_roundtrip(collector: CollectorHandle, make_sync_client: MakeClient) -> None:
    client = make_sync_client()
    session = client.start_session(tags=["test"])
    for i in range(10):
        session.record(ao.ActionEvent(action_type="search", params={"i": i}))
    session.record(ao.LLMEvent(model="gpt-4o-mini", prompt="hi", completion="hello"))
    session.add_tags(["new_tag"])
    assert session.flush(timeout=10)
    running = session.stats
    assert running.state is ao.SessionState.RUNNING
    assert running.delivered == 11
    assert len(collector.get_events_sync(session.session_id)) == 11  # stored before the end
    stats = session.end_session(end_state="Success")

    assert stats.state is ao.SessionState.SUCCEEDED
    assert stats.recorded == 11
    assert stats.delivered == 11  # end_session returned after acknowledgement
    assert stats.dropped == 0
    stored = collector.get_session_sync(session.session_id)
    assert stored is not None
    assert stored["end_state"] == "Success"
    assert stored["tags"] == ["test", "new_tag"]
    events = collector.get_events_sync(session.session_id)
    assert len(events) == 11
    assert sorted(_params(e)["i"] for e in events if e["event_type"] == "actions") == list(
        range(10)
    )


@ao.record_tool("shout")
def shout(text: str) -> str:
    return text.upper()


def test_script_helpers_fall_back_to_the_only_sync_session_never_an_async_one(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    request_open, release = threading.Event(), threading.Event()
    request_ids: list[str] = []

    def service() -> None:  # an async service in another thread, one request's session open
        async def main() -> None:
            api = ao.AsyncClient(
                api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
            )
            try:
                async with api.session(tags=["request"]) as request:
                    request_ids.append(request.session_id)
                    request_open.set()
                    await asyncio.to_thread(release.wait, 30)
            finally:
                await api.close()

        asyncio.run(main())

    thread = threading.Thread(target=service)
    thread.start()
    try:
        assert request_open.wait(30)
        with ThreadPoolExecutor(1) as pool:  # started in another thread: not current here
            script = pool.submit(client.start_session, ["script"]).result()
        assert sync.get_current_session() is None
        assert sync.record(ao.ActionEvent(action_type="fallback"))
        assert shout("x") == "X"  # decorators in sync code use the same fallback
        sync.add_tags(["more"])
        stats = sync.end_session("Success")
    finally:
        release.set()
        thread.join(30)
    assert stats.session_id == script.session_id
    events = collector.get_events_sync(script.session_id)
    assert sorted(e.get("action_type") or e.get("name") for e in events) == ["fallback", "shout"]
    assert collector.get_session_sync(script.session_id)["tags"] == ["script", "more"]
    assert collector.get_events_sync(request_ids[0]) == []


def test_with_session_exception_stores_fail_and_an_error_event(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    session = client.session(tags=["boom"])

    def work() -> None:
        with session:
            session.record(ao.ToolEvent(name="lookup"))
            raise KeyError("missing")

    with pytest.raises(KeyError):
        work()
    stored = collector.get_session_sync(session.session_id)
    assert stored is not None
    assert stored["end_state"] == "Fail"
    assert "KeyError" in stored["end_state_reason"]
    errors = collector.get_events_sync(session.session_id, event_type="errors")
    assert len(errors) == 1
    assert errors[0]["error_type"] == "KeyError"


def test_eight_threads_record_into_their_own_sessions(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    client = make_sync_client(max_queue_size=20_000)
    threads_n, per_thread = 8, 1_000
    session_ids: dict[int, str] = {}
    failures: list[BaseException] = []
    all_started = threading.Barrier(threads_n, timeout=30)

    def work(index: int) -> None:
        try:
            session = client.start_session(tags=[f"thread-{index}"])
            session_ids[index] = session.session_id
            all_started.wait()  # every session is running: only "current" tells them apart
            for i in range(per_thread):
                sync.record(ao.ActionEvent(action_type="work", params={"t": index, "i": i}))
            stats = sync.end_session("Success", timeout=30)
            assert stats.delivered == per_thread, stats
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(set(session_ids.values())) == threads_n

    total = 0
    for index, session_id in session_ids.items():
        events = collector.get_events_sync(session_id)
        total += len(events)
        assert len(events) == per_thread
        assert {_params(e)["t"] for e in events} == {index}  # each in the right session
        assert sorted(_params(e)["i"] for e in events) == list(range(per_thread))
        stored = collector.get_session_sync(session_id)
        assert stored is not None
        assert stored["tags"] == [f"thread-{index}"]
    assert total == threads_n * per_thread


_EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import agentops_async as ao
    from agentops_async import sync

    ao.init(api_key=sys.argv[2], endpoint=sys.argv[1], log_session_stats=False)
    session = ao.start_session(tags=["exits-without-end"])
    for i in range(int(sys.argv[3])):
        sync.record(ao.ActionEvent(action_type="step", params={"i": i}))
    print(session.session_id, flush=True)
    # no end_session(): the exit hook must deliver everything and end it INDETERMINATE
    """
)


def test_script_exiting_without_ending_stores_all_events_and_indeterminate(
    collector: CollectorHandle, tmp_path: Path
) -> None:
    script = tmp_path / "script.py"
    script.write_text(_EXIT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("AGENTOPS_API_KEY", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script), collector.url, collector.api_key, "2000"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5.0, f"the script took {elapsed:.1f}s to exit"
    for noise in ("Task was destroyed", "dropping span", "Traceback", "Unclosed"):
        assert noise not in result.stderr, result.stderr
    session_id = result.stdout.split()[0]
    stored = collector.get_session_sync(session_id)
    assert stored is not None
    assert stored["end_state"] == "Indeterminate"
    assert stored["end_state_reason"] == "the process exited without ending the session"
    events = collector.get_events_sync(session_id)
    assert sorted(_params(e)["i"] for e in events) == list(range(2000))


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child did not finish in time")
        # A short poll of the child's state (a condition with a deadline, not a sleep to sync).
        select.select([], [], [], 0.02)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_records_its_own_session_without_resending_the_parents_events(
    collector: CollectorHandle, make_sync_client: MakeClient
) -> None:
    # A long flush interval keeps the parent's events buffered at the moment of the fork.
    client = make_sync_client(flush_interval=30)
    parent = client.start_session(tags=["parent"])
    for i in range(50):
        parent.record(ao.ActionEvent(action_type="parent", params={"i": i}))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read_end)
            assert sync.get_current_session() is None
            assert sync.get_active_sessions() == []
            with pytest.raises(ao.SessionNotRunning, match="parent process"):
                parent.record(ao.ActionEvent())
            with client.session(tags=["child"]) as child:
                for i in range(20):
                    child.record(ao.ActionEvent(action_type="child", params={"i": i}))
            assert child.stats.delivered == 20
            os.write(write_end, child.session_id.encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, f"ERROR {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        assert _wait_child(pid, 30) == 0
        answer = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
    assert not answer.startswith("ERROR"), answer
    child_id = answer
    parent.record(ao.ActionEvent(action_type="parent", params={"i": 50}))
    assert parent.end().delivered == 51

    parent_events = collector.get_events_sync(parent.session_id)
    child_events = collector.get_events_sync(child_id)
    assert sorted(_params(e)["i"] for e in parent_events) == list(range(51))
    assert sorted(_params(e)["i"] for e in child_events) == list(range(20))
    assert {e["action_type"] for e in child_events} == {"child"}
    assert not {e["id"] for e in parent_events} & {e["id"] for e in child_events}
    stored_child = collector.get_session_sync(child_id)
    assert stored_child is not None
    assert stored_child["end_state"] == "Success"
    assert stored_child["tags"] == ["child"]


_WORKER_OUTLIVES_MAIN = textwrap.dedent(
    """
    import sys, threading
    import agentops_async as ao

    client = ao.Client(api_key=sys.argv[2], endpoint=sys.argv[1], log_session_stats=False)
    started = threading.Event()

    def worker():
        with client.session(tags=["worker"]) as session:
            print(session.session_id, flush=True)
            started.set()
            threading.main_thread().join(30)  # record only once the main thread has ended
            for i in range(300):
                session.record(ao.ActionEvent(action_type="late", params={"i": i}))

    thread = threading.Thread(target=worker)  # non-daemon: Python waits for it at exit
    thread.start()
    started.wait(30)
    # the main thread ends here; the worker records after that, then ends its session
    """
)


def test_session_of_a_thread_outliving_the_main_thread_is_not_cut_short(
    collector: CollectorHandle, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER_OUTLIVES_MAIN)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, str(script), collector.url, collector.api_key],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    session_id = result.stdout.split()[0]
    stored = collector.get_session_sync(session_id)
    assert stored is not None
    assert stored["end_state"] == "Success"
    assert len(collector.get_events_sync(session_id)) == 300


_UNREACHABLE = textwrap.dedent(
    """
    import sys
    import agentops_async as ao
    from agentops_async import sync

    ao.init(api_key="k", endpoint=sys.argv[1], shutdown_timeout=1.0, log_session_stats=False)
    ao.start_session()
    for i in range(100):
        sync.record(ao.ActionEvent(action_type="lost"))
    """
)


def test_exit_is_bounded_when_the_api_is_unreachable(tmp_path: Path) -> None:
    from _servers import free_port

    script = tmp_path / "unreachable.py"
    script.write_text(_UNREACHABLE)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script), f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 5.0, f"exit took {elapsed:.1f}s with shutdown_timeout=1"
    assert "Task was destroyed" not in result.stderr, result.stderr
