"""@record_tool / @record_action on generator functions: one event over the whole iteration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import pytest

import agentops_async as ao
from agentops_async._decorators import MAX_ITEMS

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


@ao.record_tool("stream")
def stream(words: list[str]) -> Iterator[str]:
    for word in words:
        yield word + " "


@ao.record_action("numbers")
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@ao.record_tool("flaky")
def flaky(fail_after: int) -> Iterator[int]:
    for i in range(10):
        if i == fail_after:
            raise ValueError(f"broke at {i}")
        yield i


@ao.record_tool("echo")
def echo() -> Generator[str, str, str]:
    received = yield "ready"
    while received != "stop":
        received = yield received.upper()
    return "done"


@ao.record_tool("astream")
async def astream(words: list[str]) -> AsyncIterator[str]:
    for word in words:
        await asyncio.sleep(0)
        yield word


async def _sent(api: FakeApi, client: ao.AsyncClient, session: ao.AsyncSession) -> list[Any]:
    await client.flush(5)
    return api.events[session.session_id]


async def test_a_generator_is_recorded_once_over_its_iteration_with_its_output_joined(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        assert list(stream(["to", "be"])) == ["to ", "be "]
        assert list(numbers(3)) == [0, 1, 2]
    sent = await _sent(api, client, session)
    assert [(e["event_type"], e.get("name") or e.get("action_type")) for e in sent] == [
        ("tools", "stream"),
        ("actions", "numbers"),
    ]
    assert sent[0]["returns"] == "to be "
    assert sent[0]["params"] == {"words": ["to", "be"]}
    assert sent[1]["returns"] == [0, 1, 2]
    assert sent[0]["init_timestamp"] <= sent[0]["end_timestamp"]


async def test_a_generator_closed_early_records_what_it_yielded_and_no_error(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        for word in stream(["a", "b", "c"]):
            if word == "b ":
                break
    sent = await _sent(api, client, session)
    assert [e["event_type"] for e in sent] == ["tools"]
    assert sent[0]["returns"] == "a b "


async def test_a_generator_that_raises_records_an_error_linked_to_its_event(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        gen = flaky(2)
        assert [next(gen), next(gen)] == [0, 1]
        with pytest.raises(ValueError, match="broke at 2"):
            next(gen)
    sent = await _sent(api, client, session)
    tool, error = sent
    assert tool["event_type"] == "tools" and tool["returns"] == [0, 1]  # yielded before
    assert error["event_type"] == "errors" and error["error_type"] == "ValueError"
    assert error["trigger_event_id"] == tool["id"]


async def test_send_and_the_return_value_reach_the_generator_unchanged(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        gen = echo()
        assert next(gen) == "ready"
        assert gen.send("hi") == "HI"
        with pytest.raises(StopIteration) as stop:
            gen.send("stop")
        assert stop.value.value == "done"
    sent = await _sent(api, client, session)
    assert sent[0]["returns"] == "readyHI"


async def test_an_async_generator_is_recorded_over_its_iteration(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        assert [w async for w in astream(["x", "y"])] == ["x", "y"]
        partial = astream(["p", "q", "r"])
        assert await partial.__anext__() == "p"
        await partial.aclose()
    sent = await _sent(api, client, session)
    assert [e["returns"] for e in sent] == ["xy", "p"]


async def test_a_long_output_is_bounded(api: FakeApi, client: ao.AsyncClient) -> None:
    async with client.session() as session:
        assert sum(1 for _ in numbers(MAX_ITEMS + 5)) == MAX_ITEMS + 5
    returns = (await _sent(api, client, session))[0]["returns"]
    assert len(returns) == MAX_ITEMS + 1
    assert returns[-1] == "...<5 more items>"


async def test_without_a_session_generators_run_unrecorded(api: FakeApi) -> None:
    assert list(stream(["solo"])) == ["solo "]
    assert [w async for w in astream(["a"])] == ["a"]
    assert api.requests == []
