"""The trace-to-session rules (collector/_traces.py): root first, root last, no root, two roots."""

from __future__ import annotations

import dataclasses
import json

from agentops_async._spans import FinishedSpan
from agentops_async.collector._storage import SessionRow, SessionWrite
from agentops_async.collector._traces import (
    end_state_of,
    session_for_trace,
    session_id_of,
    trace_session_id,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC


def _span(span_id: str, parent: str | None, start: int, end: int, **kw: object) -> FinishedSpan:
    return FinishedSpan(
        trace_id=TRACE, span_id=span_id, parent_span_id=parent, name=span_id,
        start_ns=start, end_ns=end, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _stored(write: SessionWrite, before: SessionRow | None = None) -> SessionRow:
    """What the storage holds after ``write`` (None fields leave ``before`` as it is)."""
    row = before or SessionRow(
        seq=1, id=write.session_id, project_id=write.project_id, trace_id=write.trace_id,
        init_timestamp=None, init_ts=None, end_timestamp=None, end_ts=None, state="RUNNING",
        end_state=None, end_state_reason=None, tags=[], video=None, host_env=None,
    )  # fmt: skip
    columns = {g.name for g in dataclasses.fields(row)} - {"id", "project_id"}
    changes = {
        f.name: getattr(write, f.name)
        for f in dataclasses.fields(write)
        if f.name in columns and getattr(write, f.name) is not None
    }
    return dataclasses.replace(row, **changes)


ROOT = _span(
    "00000000000000a1", None, T0, T0 + 10 * SEC,
    attributes={"agentops.tags": ["x", "y"], "agentops.session.end_state": "Success",
                "host.name": "box"},
    resource={"cpu.count": 4, "service.name": "svc"},
)  # fmt: skip
CHILD = _span("00000000000000a2", "00000000000000a1", T0 + 2 * SEC, T0 + 3 * SEC)
EARLY_CHILD = _span("00000000000000a3", "00000000000000a1", T0 + SEC, T0 + 2 * SEC)


def test_the_session_id_is_the_trace_id_as_a_uuid() -> None:
    assert trace_session_id(TRACE) == "0af76519-16cd-43dd-8448-eb211c80319c"


def test_root_first_completes_the_session_and_later_children_change_nothing() -> None:
    write = session_for_trace("p", TRACE, [ROOT], None)
    assert write is not None
    assert write.session_id == trace_session_id(TRACE)
    assert (write.state, write.end_state, write.tags) == ("SUCCEEDED", "Success", ["x", "y"])
    assert (write.init_ts, write.end_ts) == (T0 / 1e9, T0 / 1e9 + 10)
    assert json.loads(write.host_env or "") == {"host.name": "box", "cpu.count": 4}
    assert session_for_trace("p", TRACE, [CHILD], _stored(write)) is None


def test_root_last_the_session_runs_from_the_earliest_child_until_the_root_ends() -> None:
    first = session_for_trace("p", TRACE, [CHILD], None)
    assert first is not None
    assert (first.state, first.init_ts, first.end_ts) == (None, T0 / 1e9 + 2, None)
    row = _stored(first)
    assert row.state == "RUNNING"
    earlier = session_for_trace("p", TRACE, [EARLY_CHILD], row)
    assert earlier is not None and earlier.init_ts == T0 / 1e9 + 1 and earlier.state is None
    row = _stored(earlier, row)
    done = session_for_trace("p", TRACE, [ROOT], row)
    assert done is not None
    assert (done.state, done.init_ts, done.end_ts) == ("SUCCEEDED", T0 / 1e9, T0 / 1e9 + 10)


def test_root_never_arrives_the_session_stays_running() -> None:
    row = _stored(session_for_trace("p", TRACE, [CHILD, EARLY_CHILD], None))  # type: ignore[arg-type]
    assert (row.state, row.init_ts, row.end_ts) == ("RUNNING", T0 / 1e9 + 1, None)
    assert session_for_trace("p", TRACE, [CHILD], row) is None


def test_two_roots_the_one_that_ends_last_decides_in_any_order() -> None:
    late_fail = _span("00000000000000b1", None, T0 + SEC, T0 + 20 * SEC, status_code="ERROR")
    for order in ([ROOT, late_fail], [late_fail, ROOT]):
        row: SessionRow | None = None
        for root in order:
            write = session_for_trace("p", TRACE, [root], row)
            if write is not None:
                row = _stored(write, row)
        assert row is not None
        assert (row.state, row.end_state, row.end_ts) == ("FAILED", "Fail", T0 / 1e9 + 20)
        assert row.init_ts == T0 / 1e9
    together = session_for_trace("p", TRACE, [ROOT, late_fail], None)
    assert together is not None and together.state == "FAILED"


def test_end_state_attribute_strings_win_over_the_status() -> None:
    def state(attributes: dict[str, object], status: str = "UNSET") -> tuple[str, str]:
        return end_state_of(_span("00000000000000c1", None, T0, T0, attributes=attributes,
                                  status_code=status))  # fmt: skip

    assert state({"agentops.session.end_state": "Fail"}, "OK") == ("FAILED", "Fail")
    assert state({"agentops.session.end_state": "Indeterminate"}, "OK") == (
        "INDETERMINATE", "Indeterminate",
    )  # fmt: skip
    assert state({"agentops.session.end_state": "weird"}, "OK") == ("SUCCEEDED", "Success")
    assert state({}, "ERROR") == ("FAILED", "Fail")
    assert state({}) == ("INDETERMINATE", "Indeterminate")


# --- this SDK's OTLP target: its session id, markers for a running session ----------------------
SDK_SESSION = "3f0c0b8e-1d2a-4c5e-9f00-0000000000a1"


def _marker(span_id: str, end: int, tags: list[str]) -> FinishedSpan:
    return _span(
        span_id, "00000000000000a1", T0, end,
        attributes={"agentops.marker": "session", "agentops.session.id": SDK_SESSION,
                    "agentops.tags": tags, "agentops.session.host_env": '{"OS": {"OS": "Linux"}}'},
    )  # fmt: skip


def test_spans_naming_their_session_make_that_session_not_the_trace_id() -> None:
    child = _span("00000000000000a2", "00000000000000a1", T0, T0 + SEC,
                  attributes={"agentops.session.id": SDK_SESSION.upper()})  # fmt: skip
    assert session_id_of(TRACE, [CHILD, child]) == SDK_SESSION
    write = session_for_trace("p", TRACE, [child], None)
    assert write is not None and write.session_id == SDK_SESSION and write.trace_id == TRACE


def test_a_session_id_attribute_that_is_not_a_uuid_is_ignored() -> None:
    child = _span("00000000000000a2", None, T0, T0 + SEC,
                  attributes={"agentops.session.id": "../etc"})  # fmt: skip
    assert session_id_of(TRACE, [child]) == trace_session_id(TRACE)


def test_markers_show_the_running_session_with_its_latest_tags_until_the_root_arrives() -> None:
    first = session_for_trace("p", TRACE, [_marker("00000000000000b1", T0, ["a"])], None)
    assert first is not None and first.state is None  # created RUNNING
    assert first.tags == ["a"] and json.loads(first.host_env or "") == {"OS": {"OS": "Linux"}}
    stored = _stored(first)
    later = [_marker("00000000000000b3", T0 + 3 * SEC, ["a", "c"]),
             _marker("00000000000000b2", T0 + 2 * SEC, ["a", "b"])]  # fmt: skip
    update = session_for_trace("p", TRACE, later, stored)
    assert update is not None and update.tags == ["a", "c"]
    stored = _stored(update, stored)
    assert stored.state == "RUNNING" and stored.end_ts is None

    root = _span("00000000000000a1", None, T0, T0 + 9 * SEC,
                 attributes={"agentops.marker": "session", "agentops.session.id": SDK_SESSION,
                             "agentops.tags": ["final"], "agentops.session.end_state": "Fail",
                             "agentops.session.end_reason": "boom",
                             "agentops.session.video": "https://v/1"})  # fmt: skip
    end = session_for_trace("p", TRACE, [root], stored)
    assert end is not None
    stored = _stored(end, stored)
    assert (stored.state, stored.end_state, stored.end_state_reason) == ("FAILED", "Fail", "boom")
    assert stored.tags == ["final"] and stored.video == "https://v/1"
    # A marker delivered after the end (a retry) changes nothing.
    assert session_for_trace("p", TRACE, [_marker("00000000000000b4", T0, ["x"])], stored) is None


def test_tags_given_as_an_array_are_kept_exactly_as_given() -> None:
    root = _span("00000000000000a1", None, T0, T0 + SEC,
                 attributes={"agentops.tags": [" padded ", "a,b", "a,b", 3]})  # fmt: skip
    write = session_for_trace("p", TRACE, [root], None)
    assert write is not None and write.tags == [" padded ", "a,b"]
