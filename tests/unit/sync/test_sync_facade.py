"""The sync facade without a server: lifecycle, current session per thread, helpers, errors."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

import agentops_async as ao
from agentops_async import sync
from agentops_async._limits import MAX_TAG_LENGTH
from agentops_async.sync import _runtime


def test_with_session_normal_exit_succeeds(offline_client: ao.Client) -> None:
    with offline_client.session(tags=["a"]) as session:
        assert session.is_running
        assert sync.get_current_session() is session
        session.record(ao.ActionEvent(action_type="step"))
    assert session.state is ao.SessionState.SUCCEEDED
    assert sync.get_current_session() is None
    assert session.stats.event_counts == {}  # disabled client: nothing is counted or sent


def test_with_session_exception_fails_and_propagates(offline_client: ao.Client) -> None:
    with pytest.raises(ValueError, match="boom"), offline_client.session() as session:
        raise ValueError("boom")
    assert session.state is ao.SessionState.FAILED
    assert session.end_state_reason == "ValueError: boom"


def test_start_end_returns_stats_and_accepts_agentops_end_states(
    offline_client: ao.Client,
) -> None:
    session = ao.Session(client=offline_client, tags=["x"]).start()
    session.add_tags(["y"])
    stats = session.end_session(end_state="Fail", end_state_reason="on purpose")
    assert isinstance(stats, ao.SessionStats)
    assert stats.state is ao.SessionState.FAILED
    assert stats.end_state_reason == "on purpose"
    assert session.tags == ["x", "y"]


def test_ending_twice_raises_invalid_state_transition(offline_client: ao.Client) -> None:
    session = offline_client.start_session()
    session.end()
    with pytest.raises(ao.InvalidStateTransition):
        session.end()


def test_record_after_end_raises_session_not_running(offline_client: ao.Client) -> None:
    session = offline_client.start_session()
    session.end()
    with pytest.raises(ao.SessionNotRunning, match="has ended"):
        session.record(ao.ActionEvent())


def test_record_rejects_a_non_event(offline_client: ao.Client) -> None:
    # A disabled client skips encoding, so use an active one whose endpoint is never reached.
    client = ao.Client(api_key="k", endpoint="http://127.0.0.1:9", log_session_stats=False)
    with client.session() as session:
        with pytest.raises(ao.InvalidEvent):
            session.record({"action_type": "x"})  # type: ignore[arg-type]
        session.end(timeout=0)
    client.close(timeout=0)


def test_sessions_in_threads_are_current_only_in_their_thread(offline_client: ao.Client) -> None:
    started = threading.Barrier(3)
    seen: dict[int, ao.Session | None] = {}

    def work(index: int) -> None:
        with offline_client.session(tags=[f"t{index}"]) as session:
            started.wait(timeout=10)  # both sessions run at once
            seen[index] = sync.get_current_session()
            assert seen[index] is session
            started.wait(timeout=10)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    assert sync.get_current_session() is None  # this thread has none
    assert len(sync.get_active_sessions()) == 2
    started.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert seen[0] is not seen[1]
    assert sync.get_active_sessions() == []


def test_module_helpers_with_several_sessions_and_none_current_are_ambiguous(
    offline_client: ao.Client,
) -> None:
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: offline_client.start_session(), range(2))
    try:
        with pytest.raises(ao.AmbiguousSession, match=r"session object"):
            sync.record(ao.ActionEvent())
        with pytest.raises(ao.AmbiguousSession, match=r"session\.end_session"):
            sync.end_session()
        with pytest.raises(ao.AmbiguousSession):
            sync.add_tags(["x"])
    finally:
        first.end()
        second.end()


def test_module_helpers_use_the_only_running_session(offline_client: ao.Client) -> None:
    with ThreadPoolExecutor(1) as pool:
        session = pool.submit(offline_client.start_session, ["only"]).result()
    assert sync.get_current_session() is None
    sync.record(ao.ActionEvent())
    sync.add_tags(["more"])
    sync.set_tags(["replaced"])
    assert session.tags == ["replaced"]
    stats = sync.end_session("Success")
    assert stats.session_id == session.session_id
    assert session.state is ao.SessionState.SUCCEEDED


def test_module_helpers_without_a_session_raise_no_active_session() -> None:
    with pytest.raises(ao.NoActiveSession, match="start_session"):
        sync.record(ao.ActionEvent())


def test_module_helper_refuses_an_async_api_session() -> None:
    async def main() -> None:
        client = ao.AsyncClient(enabled=False)
        async with client.session():
            with pytest.raises(ao.AgentOpsError, match="async"):
                sync.end_session()

    asyncio.run(main())


def test_init_configures_default_sync_and_async_clients(restore_defaults: None) -> None:
    client = ao.init(enabled=False, default_tags=["svc"], log_session_stats=False)
    assert sync.default_client() is client
    assert ao.default_client().config.default_tags == ("svc",)
    assert ao.default_client() is not client.async_client  # each world has its own exporter
    session = ao.start_session(tags=["s"])
    assert sync.get_current_session() is session
    assert session.tags == ["svc", "s"]
    ao.end_session()
    assert session.state is ao.SessionState.SUCCEEDED


def test_init_can_start_a_session(restore_defaults: None) -> None:
    ao.init(enabled=False, auto_start_session=True, tags=["auto"], log_session_stats=False)
    session = sync.get_current_session()
    assert session is not None
    assert session.tags == ["auto"]
    session.end()


def test_blocking_call_on_the_loop_thread_raises_a_clear_error(
    offline_client: ao.Client,
) -> None:
    session = offline_client.session()

    def start_on_loop_thread() -> None:
        session.start()

    with pytest.raises(ao.AgentOpsError, match="cannot block on the agentops_async loop thread"):
        _runtime.portal().call(start_on_loop_thread)
    assert session.state is ao.SessionState.INITIALIZING


def test_non_blocking_calls_work_on_the_loop_thread(offline_client: ao.Client) -> None:
    with offline_client.session() as session:

        def tag_and_record() -> None:
            session.add_tags(["from-loop"])
            session.record(ao.ActionEvent())

        _runtime.portal().call(tag_and_record)
        assert "from-loop" in session.tags


def test_sync_session_works_inside_a_running_event_loop(offline_client: ao.Client) -> None:
    """A sync callback inside an async app: no deadlock (the facade has its own loop)."""

    async def app() -> ao.SessionState:
        def callback() -> ao.SessionState:
            with offline_client.session(tags=["cb"]) as session:
                session.record(ao.ActionEvent(action_type="cb"))
            return session.state

        return await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(None, callback), 10
        )

    assert asyncio.run(app()) is ao.SessionState.SUCCEEDED

    async def app_blocking_directly() -> ao.SessionState:
        with offline_client.session() as session:  # blocks this loop briefly; still completes
            pass
        return session.state

    assert asyncio.run(app_blocking_directly()) is ao.SessionState.SUCCEEDED


def test_one_loop_thread_serves_every_sync_client(offline_client: ao.Client) -> None:
    other = ao.Client(enabled=False, log_session_stats=False)
    with offline_client.session():
        first = _runtime._rt.loop_thread_id
    with other.session():
        second = _runtime._rt.loop_thread_id
    assert first == second
    names = [t.name for t in threading.enumerate() if t.ident == first]
    assert names == [_runtime.THREAD_NAME]


def test_repr_does_not_show_the_api_key() -> None:
    client = ao.Client(api_key="secret-key-123", endpoint="http://127.0.0.1:9")
    assert "secret-key-123" not in repr(client)
    assert "secret-key-123" not in repr(client.session())


def test_sync_tags_longer_than_the_limit_are_refused_at_the_call(
    offline_client: ao.Client,
) -> None:
    too_long = "x" * (MAX_TAG_LENGTH + 1)
    limit = f"{MAX_TAG_LENGTH + 1} characters long, above the limit of {MAX_TAG_LENGTH}"
    with pytest.raises(ao.InvalidEvent, match=limit):
        offline_client.session(tags=[too_long])
    with offline_client.session(tags=["x" * MAX_TAG_LENGTH]) as session:
        with pytest.raises(ao.InvalidEvent, match=limit):
            session.add_tags([too_long])
        with pytest.raises(ao.InvalidEvent, match=limit):
            sync.set_tags(["ok", too_long])
        sync.add_tags(["ok"])
    assert session.tags == ["x" * MAX_TAG_LENGTH, "ok"]


def test_sessions_ended_in_start_order_leave_no_ended_session_current(
    offline_client: ao.Client,
) -> None:
    first = offline_client.start_session()
    second = offline_client.start_session()
    assert sync.get_current_session() is second
    first.end()
    assert sync.get_current_session() is second  # still running, still current
    second.end()
    # Restoring the context of before ``second`` would bring back ``first``, which has ended.
    assert sync.get_current_session() is None
    assert ao.get_current_session() is None
    assert not trace.get_current_span().get_span_context().is_valid  # nor its root span


def test_three_sessions_ended_out_of_order_unwind_to_the_one_still_running(
    offline_client: ao.Client,
) -> None:
    first = offline_client.start_session()
    second = offline_client.start_session()
    third = offline_client.start_session()
    second.end()
    third.end()
    assert ao.get_current_session() is first._async
    first.end()
    assert ao.get_current_session() is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_sync_session_started_inside_a_span_is_a_new_trace_linked_to_it(
    offline_client: ao.Client,
) -> None:
    tracer = TracerProvider().get_tracer("script")
    with tracer.start_as_current_span("batch job") as outer:
        session = offline_client.start_session()
        root = trace.get_current_span()
        session.end()
    assert isinstance(root, ReadableSpan)
    assert root.parent is None
    outer_ctx = outer.get_span_context()
    assert session.trace_id != trace.format_trace_id(outer_ctx.trace_id)
    assert [link.context.span_id for link in root.links] == [outer_ctx.span_id]
