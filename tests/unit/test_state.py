from __future__ import annotations

import pytest

from agentops_async import InvalidStateTransition, SessionState
from agentops_async.session._state import SessionStateProperty


class Holder:
    state = SessionStateProperty()


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("Success", SessionState.SUCCEEDED),
        ("Fail", SessionState.FAILED),
        ("Indeterminate", SessionState.INDETERMINATE),
        ("succeeded", SessionState.SUCCEEDED),
        ("FAILED", SessionState.FAILED),
        (SessionState.RUNNING, SessionState.RUNNING),
    ],
)
def test_agentops_end_state_strings_map_onto_the_enum(
    text: str | SessionState, state: SessionState
) -> None:
    assert SessionState.parse(text) is state


def test_unknown_state_string_names_the_valid_ones() -> None:
    with pytest.raises(InvalidStateTransition, match="'Success', 'Fail', 'Indeterminate'"):
        SessionState.parse("Done")


def test_legal_path_through_the_states() -> None:
    holder = Holder()
    assert holder.state is SessionState.INITIALIZING
    holder.state = SessionState.RUNNING
    holder.state = "Success"
    assert holder.state is SessionState.SUCCEEDED
    assert holder.state.wire_name == "Success"


@pytest.mark.parametrize(
    "terminal", [SessionState.SUCCEEDED, SessionState.FAILED, SessionState.INDETERMINATE]
)
def test_terminal_states_are_final(terminal: SessionState) -> None:
    holder = Holder()
    holder.state = SessionState.RUNNING
    holder.state = terminal
    for target in SessionState:
        with pytest.raises(InvalidStateTransition, match="ends once"):
            holder.state = target
    assert holder.state is terminal


def test_running_cannot_go_back_to_initializing() -> None:
    holder = Holder()
    holder.state = SessionState.RUNNING
    with pytest.raises(InvalidStateTransition, match="RUNNING to INITIALIZING"):
        holder.state = SessionState.INITIALIZING
