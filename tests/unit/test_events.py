from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

import agentops_async as ao
from agentops_async.events import _CYCLE_MARKER, _new_event_id, _to_json_safe

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_event_ids_are_unique_uuid4_strings() -> None:
    ids = {_new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for event_id in list(ids)[:50]:
        assert UUID_RE.match(event_id)
        assert uuid.UUID(event_id).version == 4


@pytest.mark.parametrize(
    ("cls", "event_type"),
    [
        (ao.LLMEvent, "llms"),
        (ao.ActionEvent, "actions"),
        (ao.ToolEvent, "tools"),
        (ao.ErrorEvent, "errors"),
        (ao.ApiEvent, "apis"),
    ],
)
def test_each_event_class_has_its_wire_event_type(cls: type[ao.Event], event_type: str) -> None:
    event = cls()
    wire = msgspec.json.decode(event.prepare("s-1", "0" * 32))
    assert event.event_type == event_type
    assert wire["event_type"] == event_type
    assert wire["id"] == event.id
    assert UUID_RE.match(wire["id"])
    assert wire["init_timestamp"].endswith("Z")
    assert wire["end_timestamp"].endswith("Z")


def test_llm_event_wire_fields_follow_agentops_names() -> None:
    event = ao.LLMEvent(
        prompt="hi", completion="hello", prompt_tokens=3, completion_tokens=5, model="gpt-4o"
    )
    wire = msgspec.json.decode(msgspec.json.encode(event))
    for field in (
        "prompt",
        "completion",
        "prompt_tokens",
        "completion_tokens",
        "model",
        "cost",
        "thread_id",
        "params",
        "returns",
        "init_timestamp",
        "end_timestamp",
        "agent_id",
        "session_id",
    ):
        assert field in wire


def test_error_event_from_exception_keeps_type_details_traceback_and_trigger() -> None:
    trigger = ao.ToolEvent(name="search")
    try:
        raise KeyError("missing")
    except KeyError as exc:
        event = ao.ErrorEvent.from_exception(exc, trigger_event=trigger, code="E1")
    assert event.error_type == "KeyError"
    assert event.details == "'missing'"
    assert event.code == "E1"
    assert event.logs is not None and "Traceback" in event.logs and "KeyError" in event.logs
    assert event.trigger_event_id == trigger.id
    assert event.trigger_event_type == "tools"


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque thing>"


@dataclasses.dataclass
class _Point:
    x: int
    y: int


class _Color(enum.Enum):
    RED = "red"


class _Model:
    def model_dump(self) -> dict[str, Any]:
        return {"field": 1}


def test_to_json_safe_converts_what_json_cannot_hold() -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert _to_json_safe({"o": _Opaque()}) == {"o": "<opaque thing>"}
    assert _to_json_safe(_Point(1, 2)) == {"x": 1, "y": 2}
    assert _to_json_safe({"c": _Color.RED, "when": moment}) == {
        "c": "red",
        "when": "2026-01-02T03:04:05Z",
    }
    assert _to_json_safe({"m": _Model()}) == {"m": {"field": 1}}
    assert _to_json_safe({1: "int key"}) == {"1": "int key"}
    assert isinstance(_to_json_safe(cyclic), str)  # a cycle becomes its repr, not an exception
    assert _to_json_safe({(1, 2): "tuple key"}) == "{(1, 2): 'tuple key'}"
    assert sorted(_to_json_safe({"s": {3, 1, 2}})["s"]) == [1, 2, 3]


def test_to_json_safe_bounds_huge_reprs() -> None:
    class Huge:
        def __repr__(self) -> str:
            return "x" * 100_000

    text = _to_json_safe(Huge())
    assert isinstance(text, str) and len(text) < 3_000 and text.endswith("<truncated>")


def test_to_json_safe_survives_a_raising_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert _to_json_safe(Broken()) == "<unrepresentable Broken: RuntimeError>"


def test_prepare_encodes_at_record_time_so_later_mutation_is_not_sent() -> None:
    params = {"q": "weather", "nested": {"k": [1, 2]}}
    event = ao.ActionEvent(action_type="search", params=params)
    data = event.prepare("s-1", "0" * 32)
    params["q"] = "changed"
    params["nested"]["k"].append(3)
    sent = msgspec.json.decode(data)
    assert sent["params"] == {"q": "weather", "nested": {"k": [1, 2]}}
    assert sent["session_id"] == "s-1"
    assert sent["trace_id"] == "0" * 32
    assert len(sent["span_id"]) == 16
    assert sent["end_timestamp"] is not None


def test_prepare_keeps_the_structure_around_values_json_cannot_hold() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    event = ao.ToolEvent(
        name="t", params={"o": _Opaque(), (1, 2): "tuple key"}, returns=cyclic, logs={1: "x"}
    )
    sent = msgspec.json.decode(event.prepare("s", "t" * 32))
    # Only what JSON cannot hold is converted: the object to its repr, the tuple key to its text.
    assert sent["params"] == {"o": "<opaque thing>", "(1, 2)": "tuple key"}
    assert sent["returns"] == [1, _CYCLE_MARKER]
    assert sent["logs"] == {"1": "x"}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (ao.LLMEvent(prompt_tokens="12"), "LLMEvent.prompt_tokens"),  # type: ignore[arg-type]
        (ao.LLMEvent(completion_tokens=True), "LLMEvent.completion_tokens"),
        (ao.LLMEvent(model=4), "LLMEvent.model"),  # type: ignore[arg-type]
        (ao.LLMEvent(cost="1"), "LLMEvent.cost"),  # type: ignore[arg-type]
        (ao.ToolEvent(name=["x"]), "ToolEvent.name"),  # type: ignore[arg-type]
        (ao.ActionEvent(action_type=1), "ActionEvent.action_type"),  # type: ignore[arg-type]
        (ao.ApiEvent(status_code="200"), "ApiEvent.status_code"),  # type: ignore[arg-type]
    ],
)
def test_wrong_field_types_raise_an_error_naming_the_field(event: ao.Event, field: str) -> None:
    with pytest.raises(ao.InvalidEvent, match=re.escape(field)):
        event.prepare("s", "t")


def test_int_subclasses_are_accepted_for_int_fields() -> None:
    class Count(int):
        pass

    event = ao.LLMEvent(prompt_tokens=Count(3), cost=0.5)
    event.prepare("s", "t")
    assert event.prompt_tokens == 3
