"""Encoding safety: whatever an event holds, the exporter sends it (made sendable) or drops only
that event, counted; it never dies, and nothing raises into the caller (issue 10, items 1, 9
and the SDK side of the nesting-depth limit)."""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from _values import depth, nested

import agentops_async as ao
from agentops_async import events as events_module
from agentops_async._limits import MAX_NESTING_DEPTH
from agentops_async.events import _CYCLE_MARKER, _DEEP_MARKER
from agentops_async.telemetry import _exporter

from .fake_api import FakeApi

SURROGATE = b"caf\xe9".decode("utf-8", "surrogateescape")  # what os.listdir gives
REPLACED = "caf\ufffd"
CLOSED = "recorded after the client was closed"
UNSENDABLE = "event could not be prepared for sending (internal error)"


@pytest.fixture(autouse=True)
def fresh_notes() -> Iterator[None]:
    """The once-per-process warnings about changed values start afresh in each test."""
    saved = set(events_module._noted)
    events_module._noted.clear()
    yield
    events_module._noted.clear()
    events_module._noted.update(saved)


class _SurrogateRepr:
    def __repr__(self) -> str:
        return f"<file {SURROGATE}>"


class Name(str):
    """A str subclass, as some libraries use for identifiers."""


class Kind(enum.StrEnum):
    SEARCH = "search"


def surrogate_events() -> list[ao.Event]:
    return [
        ao.ActionEvent(params={"p": SURROGATE}),  # a value
        ao.ActionEvent(params={SURROGATE: 1}),  # a dict key
        ao.ToolEvent(name="t", returns=[1, SURROGATE]),  # a list
        ao.ToolEvent(name="t", params={"deep": {"er": [{"x": SURROGATE}]}}),  # nested
        ao.LLMEvent(prompt=SURROGATE, model="m"),  # a str field
        ao.ToolEvent(name=SURROGATE),  # a typed field
        ao.ActionEvent(params={"o": _SurrogateRepr()}),  # a __repr__ used as fallback
    ]


def surrogate_events_as_sent() -> list[tuple[str, Any]]:
    """(field, value) of each event of surrogate_events() as the API must receive it."""
    return [
        ("params", {"p": REPLACED}),
        ("params", {REPLACED: 1}),
        ("returns", [1, REPLACED]),
        ("params", {"deep": {"er": [{"x": REPLACED}]}}),
        ("prompt", REPLACED),
        ("name", REPLACED),
        ("params", {"o": f"<file {REPLACED}>"}),
    ]


@pytest.mark.asyncio
async def test_surrogates_anywhere_are_sent_replaced_and_the_exporter_keeps_running(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    client = make_client(max_batch_size=5)
    sessions = []
    for index in range(3):
        async with client.session() as session:
            await session.record(ao.ActionEvent(params={"before": index}))
            for event in surrogate_events():
                await session.record(event)
            await session.record(ao.ActionEvent(params={"after": index}))
        sessions.append(session)
    # The exporter is still alive: a later session's events arrive too.
    async with client.session() as later:
        await later.record(ao.ActionEvent(params={"later": True}))
    assert await client.close() is True  # and close() does not raise
    for index, session in enumerate(sessions):
        sent = api.events[session.session_id]
        assert len(sent) == 9
        assert sent[0]["params"] == {"before": index}
        assert sent[-1]["params"] == {"after": index}
        for event, (field, value) in zip(sent[1:-1], surrogate_events_as_sent(), strict=True):
            assert event[field] == value
        assert session.stats.delivered == 9
        assert session.stats.dropped == 0
    assert [e["params"] for e in api.events[later.session_id]] == [{"later": True}]
    assert client.stats.dropped == 0
    assert client.stats.pending == 0
    assert any("U+FFFD" in r.getMessage() for r in caplog.records)


def test_sync_record_sends_surrogates_replaced_and_does_not_raise() -> None:
    for event, (field, value) in zip(surrogate_events(), surrogate_events_as_sent(), strict=True):
        sent = msgspec.json.decode(event.prepare("s", "t" * 32))  # what Session.record runs
        assert sent[field] == value


@pytest.mark.asyncio
async def test_record_threadsafe_with_surrogates_is_delivered(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    results: list[bool] = []
    async with client.session() as session:

        def produce() -> None:
            results.extend(session.record_threadsafe(e) for e in surrogate_events())

        thread = threading.Thread(target=produce)
        thread.start()
        await asyncio.to_thread(thread.join)
    await client.close()
    assert results == [True] * 7
    sent = api.events[session.session_id]
    assert [e[f] for e, (f, _) in zip(sent, surrogate_events_as_sent(), strict=True)] == [
        v for _, v in surrogate_events_as_sent()
    ]


@pytest.mark.asyncio
async def test_surrogates_in_tags_do_not_break_the_session(api: FakeApi, make_client: Any) -> None:
    client = make_client()
    async with client.session(tags=["ok"]) as session:
        session.add_tags([SURROGATE])
        await session.record(ao.ActionEvent(params={"i": 1}))
    assert await client.close() is True
    assert api.sessions[session.session_id]["tags"] == ["ok", REPLACED]
    assert len(api.events[session.session_id]) == 1


@pytest.mark.asyncio
async def test_an_event_that_cannot_be_prepared_is_dropped_alone_and_logged_once(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    client = make_client(max_batch_size=20)
    async with client.session() as session:
        for i in range(10):
            await session.record(ao.ActionEvent(params={"i": i}))
            if i in (3, 7):
                # A malformed id (not a str) used to kill the exporter while preparing the batch.
                await session.record(ao.ActionEvent(id=1234, params={"bad": i}))  # type: ignore[arg-type]
    async with client.session() as other:
        await other.record(ao.ActionEvent(params={"other": 1}))
    await client.close()
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(10))
    assert [e["params"] for e in api.events[other.session_id]] == [{"other": 1}]
    assert client.stats.dropped_by_reason == {UNSENDABLE: 2}
    assert session.stats.dropped == 2
    assert session.stats.delivered == 10
    assert client.stats.pending == 0
    warnings = [r for r in caplog.records if UNSENDABLE in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "ActionEvent 1234: TypeError" in warnings[0].getMessage()


@pytest.mark.asyncio
async def test_an_event_that_cannot_be_encoded_is_dropped_alone(
    api: FakeApi,
    make_client: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any failure while encoding (here: a simulated bug) drops only the event it happened on."""
    real = _exporter._encode_event

    def failing(event: ao.Event) -> bytes:
        if event.params == {"bug": True}:
            raise RuntimeError("simulated encoder bug")
        return real(event)

    monkeypatch.setattr(_exporter, "_encode_event", failing)
    caplog.set_level(logging.WARNING, logger="agentops_async")
    client = make_client(max_batch_size=100)
    async with client.session() as session:
        for i in range(100):
            await session.record(ao.ActionEvent(params={"i": i}))
            if i == 50:
                await session.record(ao.ActionEvent(params={"bug": True}))
                await session.record(ao.ActionEvent(params={"s": SURROGATE}))  # a slow-path slice
    await client.close()
    sent = api.events[session.session_id]
    assert [e["params"].get("i") for e in sent if "i" in e["params"]] == list(range(100))
    assert [e["params"] for e in sent if "i" not in e["params"]] == [{"s": REPLACED}]
    assert client.stats.dropped_by_reason == {UNSENDABLE: 1}
    assert session.stats.delivered == 101
    message = next(r.getMessage() for r in caplog.records if UNSENDABLE in r.getMessage())
    assert "RuntimeError: simulated encoder bug" in message


@pytest.mark.asyncio
async def test_an_exporter_error_while_sending_drops_that_batch_only(
    api: FakeApi, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch prepared meanwhile (and everything after) is still delivered."""
    client = make_client(max_batch_size=10)
    failed = asyncio.Event()
    next_prepared = asyncio.Event()
    async with client.session() as session:
        exporter = client._exporter
        real_send, real_prepare = exporter.target._send_events, exporter._prepare
        prepared = 0

        async def prepare_and_tell(*args: Any) -> Any:
            nonlocal prepared
            steps = await real_prepare(*args)
            prepared += 1
            if prepared == 2:  # the batch after the first one
                next_prepared.set()
            return steps

        async def send_once_failing(*args: Any, **kwargs: Any) -> None:
            if not failed.is_set():
                failed.set()
                # Fail once the next batch is taken and prepared (the case that lost it too).
                await asyncio.wait_for(next_prepared.wait(), 5)
                raise RuntimeError("simulated sender bug")
            await real_send(*args, **kwargs)

        monkeypatch.setattr(exporter, "_prepare", prepare_and_tell)
        monkeypatch.setattr(exporter.target, "_send_events", send_once_failing)
        for i in range(30):  # three full batches, buffered before the exporter runs
            await session.record(ao.ActionEvent(params={"i": i}))
        await session.flush(10)
    await client.close()
    assert failed.is_set()
    assert [e["params"]["i"] for e in api.events[session.session_id]] == list(range(10, 30))
    assert client.stats.dropped_by_reason == {"internal exporter error": 10}
    assert session.stats.delivered == 20
    assert client.stats.pending == 0


# -- nesting depth ------------------------------------------------------------------------
def test_values_nested_deeper_than_the_limit_are_cut_at_the_documented_depth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    # The event object is depth 1, so a field may hold MAX_NESTING_DEPTH - 1 levels.
    fits = ao.ActionEvent(params=nested(MAX_NESTING_DEPTH - 1))
    sent = msgspec.json.decode(fits.prepare("s", "t"))
    assert sent["params"] == nested(MAX_NESTING_DEPTH - 1)
    assert depth(sent) == MAX_NESTING_DEPTH
    assert not caplog.records

    for too_deep in (
        ao.ActionEvent(params=nested(MAX_NESTING_DEPTH)),
        ao.ActionEvent(params={"a": {"b": nested(1_000)}}),
        ao.LLMEvent(prompt=[{"role": "user", "content": nested(5_000)}]),
    ):
        sent = msgspec.json.decode(too_deep.prepare("s", "t"))
        assert depth(sent) == MAX_NESTING_DEPTH
        assert _DEEP_MARKER in msgspec.json.encode(sent).decode()
    assert sent["prompt"][0]["role"] == "user"  # what is not too deep is kept
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and f"deeper than {MAX_NESTING_DEPTH} levels" in notes[0]


def test_a_container_inside_itself_is_cut_not_expanded() -> None:
    cyclic: dict[str, Any] = {"name": "loop"}
    cyclic["self"] = cyclic
    cyclic["again"] = cyclic  # two references: expanding to the depth limit would be 2**64 nodes
    shared = {"k": 1}
    event = ao.ToolEvent(name="t", params={"c": cyclic, "x": shared, "y": shared})
    sent = msgspec.json.decode(event.prepare("s", "t"))
    assert sent["params"] == {
        "c": {"name": "loop", "self": _CYCLE_MARKER, "again": _CYCLE_MARKER},
        "x": {"k": 1},  # the same object twice is not a cycle
        "y": {"k": 1},
    }


@pytest.mark.asyncio
async def test_the_exporter_sends_deep_and_cyclic_values_cut(
    api: FakeApi, make_client: Any
) -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    client = make_client()
    async with client.session() as session:
        await session.record(ao.ActionEvent(params={"deep": nested(500)}))
        await session.record(ao.ActionEvent(params={"cycle": cyclic}))
        await session.record(ao.ActionEvent(params={"i": 1}))
    assert await client.close() is True
    sent = api.events[session.session_id]
    assert [depth(e) for e in sent] == [MAX_NESTING_DEPTH, 3, 2]
    assert sent[1]["params"] == {"cycle": [_CYCLE_MARKER]}
    assert client.stats.dropped == 0


# -- item 9 ---------------------------------------------------------------------------------
def test_keys_that_become_the_same_json_text_are_all_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentops_async")
    event = ao.ActionEvent(params={1: "a", "1": "b", "x": {2: "c", "2": "d", "2 (2)": "e"}})
    sent = msgspec.json.decode(event.prepare("s", "t"))
    assert sent["params"] == {
        "1": "a",
        "1 (2)": "b",
        "x": {"2": "c", "2 (2)": "d", "2 (2) (2)": "e"},
    }
    assert any("both are kept" in r.getMessage() for r in caplog.records)


def test_str_subclasses_are_sent_as_their_text() -> None:
    event = ao.ActionEvent(
        action_type=Kind.SEARCH,
        params={"who": Name("alice"), "kind": Kind.SEARCH, Name("key"): [Name("v")]},
        returns=Name("done"),
    )
    sent = msgspec.json.decode(event.prepare("s", "t"))
    assert sent["action_type"] == "search"
    assert sent["params"] == {"who": "alice", "kind": "search", "key": ["v"]}
    assert sent["returns"] == "done"
    tool = msgspec.json.decode(ao.ToolEvent(name=Name("grep")).prepare("s", "t"))
    assert tool["name"] == "grep"


@pytest.mark.asyncio
async def test_record_nowait_after_close_is_counted_as_closed_not_queue_full(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    session = await client.start_session()
    await session.record(ao.ActionEvent(params={"i": 0}))
    assert await client.close() is True
    assert session.record_nowait(ao.ActionEvent(params={"i": 1})) is False
    assert session.record_threadsafe(ao.ActionEvent(params={"i": 2})) is False

    def from_a_thread() -> bool:
        return session.record_threadsafe(ao.ActionEvent(params={"i": 3}))

    # The other thread's drop is counted on the loop, by a callback queued before to_thread's.
    assert await asyncio.to_thread(from_a_thread) is False
    assert client.stats.dropped_by_reason == {CLOSED: 3}
    assert session.stats.dropped == 3
    await session.end(wait=False)
