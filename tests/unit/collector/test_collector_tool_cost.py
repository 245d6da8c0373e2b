"""Which ``gen_ai.usage.total_cost`` values of a span become its tools event's cost."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agentops_async._spans import FinishedSpan
from agentops_async.collector.routes._otlp import tool_cost


def _span(cost: Any) -> FinishedSpan:
    return FinishedSpan(
        trace_id="a" * 32, span_id="b" * 16, name="search.tool", start_ns=1,
        attributes={"agentops.span.kind": "tool", "gen_ai.usage.total_cost": cost},
    )  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), [(0.25, 0.25), (0, 0.0), (3, 3.0), (1e12, 1e12)])
def test_a_finite_cost_in_range_is_the_tool_cost(value: Any, expected: float) -> None:
    assert tool_cost(_span(value)) == expected


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -0.5, 1e12 * 1.5, True, "0.25", [0.25], {"usd": 1}]
)
def test_anything_else_is_no_cost_and_says_why_at_debug(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agentops_async"):
        assert tool_cost(_span(value)) is None
    (record,) = caplog.records
    assert "gen_ai.usage.total_cost" in record.getMessage()
    assert "b" * 16 in record.getMessage()


def test_a_span_without_the_attribute_has_no_cost(caplog: pytest.LogCaptureFixture) -> None:
    span = FinishedSpan(trace_id="a" * 32, span_id="b" * 16, name="x", start_ns=1)
    with caplog.at_level(logging.DEBUG, logger="agentops_async"):
        assert tool_cost(span) is None
    assert caplog.records == []
