"""The overview of a project: sessions per day by state, failure rate, cost per day and by model,
the slowest tools and the most expensive sessions, for a time range.

Shared by the read API (``GET /api/overview``), the dashboard's Overview page and the CLI
(``agentops-async sessions overview``). The storage answers unpriced aggregates
(:class:`~agentops_async.collector._storage.OverviewData`, read from per-session rollups that
ingest keeps); this module prices them with the collector's :class:`PriceTable`.

Days are UTC days. A session belongs to the day in which it started (its ``init_timestamp``), and
all its cost counts on that day, even for events recorded after midnight: the same rule as the
session list's time filter, so a day's sessions and its cost always go together.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import msgspec

from ._prices import PriceTable, format_cost
from ._storage import SECONDS_PER_DAY, SessionReader, overview_day

__all__ = [
    "DEFAULT_OVERVIEW_DAYS",
    "MAX_OVERVIEW_DAYS",
    "OVERVIEW_STATES",
    "CostlySession",
    "DayOverview",
    "InvalidRange",
    "ModelCost",
    "Overview",
    "ToolTiming",
    "build_overview",
    "overview_range",
]

DEFAULT_OVERVIEW_DAYS = 30
"""The range of an overview when none is given: the last 30 UTC days, today included."""
MAX_OVERVIEW_DAYS = 366
"""The longest range one overview covers."""
TOP_ROWS = 10
"""Rows in the slowest tools and the most expensive sessions."""
OVERVIEW_STATES = ("SUCCEEDED", "FAILED", "INDETERMINATE", "RUNNING")
"""The states counted per day, in the order the charts stack them."""
_ENDED = ("SUCCEEDED", "FAILED", "INDETERMINATE")


class InvalidRange(ValueError):
    """A time range the overview cannot cover; the message names the parameter and the fix."""


class DayOverview(msgspec.Struct, kw_only=True):
    """One UTC day: its sessions by state, their failure rate and their cost."""

    date: str
    """``YYYY-MM-DD`` (UTC)."""
    sessions: int
    by_state: dict[str, int]
    failure_rate: float | None
    """FAILED / (SUCCEEDED + FAILED + INDETERMINATE); None when no session of the day ended."""
    cost: str
    """Dollars, as a decimal string (like a session's ``token_cost``)."""


class ModelCost(msgspec.Struct, kw_only=True):
    """The LLM calls of one model in the range (``model`` is None when the events named none)."""

    model: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: str


class ToolTiming(msgspec.Struct, kw_only=True):
    """How long the calls of one tool took (``name`` is None when the events named none).

    ``mean_s`` and ``max_s`` are over the ``timed_calls``: those with both timestamps, the end
    not before the start; None when there are none.
    """

    name: str | None
    calls: int
    timed_calls: int
    mean_s: float | None
    max_s: float | None


class CostlySession(msgspec.Struct, kw_only=True):
    """One of the most expensive sessions of the range."""

    id: str
    state: str
    tags: list[str]
    init_timestamp: str | None
    cost: str


class Overview(msgspec.Struct, kw_only=True):
    """A project's overview for the sessions that started in ``[since, until)``."""

    since: str
    until: str
    """ISO 8601 UTC; the range ends before it."""
    days: list[DayOverview]
    """Every UTC day the range touches, oldest first (days without sessions too)."""
    sessions: int
    by_state: dict[str, int]
    failure_rate: float | None
    cost: str
    """All the range's cost: LLM events (by model below) and the ``cost`` of tools events."""
    cost_by_model: list[ModelCost]
    """Most expensive first."""
    slowest_tools: list[ToolTiming]
    """Slowest mean first, at most ten."""
    costliest_sessions: list[CostlySession]
    """Most expensive first, at most ten (sessions that cost nothing are left out)."""


def overview_range(since: float | None, until: float | None, now: float) -> tuple[float, float]:
    """The ``[since, until)`` an overview covers, in Unix seconds.

    Without ``until``, the range ends at the end of today (UTC); without ``since``, it starts
    :data:`DEFAULT_OVERVIEW_DAYS` days before its end.

    Raises:
        InvalidRange: ``until`` is not after ``since``, or the range is longer than
            :data:`MAX_OVERVIEW_DAYS` days.
    """
    if until is None:
        until = (overview_day(now) + 1) * SECONDS_PER_DAY
    if since is None:
        since = until - DEFAULT_OVERVIEW_DAYS * SECONDS_PER_DAY
    since = max(since, 0.0)
    if not (math.isfinite(since) and math.isfinite(until)) or until <= since:
        raise InvalidRange("until: must be a time after since")
    if until - since > MAX_OVERVIEW_DAYS * SECONDS_PER_DAY:
        raise InvalidRange(
            f"since, until: at most {MAX_OVERVIEW_DAYS} days in one overview; narrow the range"
        )
    return since, until


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _date(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def _failure_rate(by_state: dict[str, int]) -> float | None:
    ended = sum(by_state.get(state, 0) for state in _ENDED)
    return None if ended == 0 else round(by_state.get("FAILED", 0) / ended, 4)


async def build_overview(
    reader: SessionReader, prices: PriceTable, project_id: str, since: float, until: float
) -> Overview:
    """The overview of ``project_id`` for the sessions that started in ``[since, until)``
    (a range from :func:`overview_range`)."""
    data = await reader.overview(project_id, since, until)
    first, last = overview_day(since), math.ceil(until / SECONDS_PER_DAY) - 1
    states_by_day: dict[int, dict[str, int]] = {}
    for day, state, count in data.states:
        states_by_day.setdefault(day, dict.fromkeys(OVERVIEW_STATES, 0))[state] = count
    # Pricing is linear in the tokens, so a day's sums of one model price exactly as its
    # sessions' calls would one by one.
    cost_by_day: dict[int, Decimal] = {}
    models: dict[str, list[int]] = {}
    model_costs: dict[str, Decimal] = {}
    for day, model, _has_cost, calls, prompt, completion, explicit in data.llm_usage:
        cost = prices.usage_cost(model, prompt, completion, explicit)
        cost_by_day[day] = cost_by_day.get(day, Decimal(0)) + cost
        model_costs[model] = model_costs.get(model, Decimal(0)) + cost
        totals = models.setdefault(model, [0, 0, 0])
        totals[0] += calls
        totals[1] += prompt
        totals[2] += completion
    for day, explicit in data.tool_costs:
        cost = prices.usage_cost(None, 0, 0, explicit)
        cost_by_day[day] = cost_by_day.get(day, Decimal(0)) + cost

    days = []
    overall = dict.fromkeys(OVERVIEW_STATES, 0)
    for day in range(first, last + 1):
        by_state = states_by_day.get(day, dict.fromkeys(OVERVIEW_STATES, 0))
        for state, count in by_state.items():
            overall[state] = overall.get(state, 0) + count
        days.append(
            DayOverview(
                date=_date(day),
                sessions=sum(by_state.values()),
                by_state=by_state,
                failure_rate=_failure_rate(by_state),
                cost=format_cost(cost_by_day.get(day, Decimal(0))),
            )
        )
    by_model = [
        ModelCost(
            model=model or None,
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=format_cost(model_costs[model]),
        )
        for model, (calls, prompt, completion) in sorted(
            models.items(), key=lambda item: (-model_costs[item[0]], item[0])
        )
    ]
    return Overview(
        since=_iso(since),
        until=_iso(until),
        days=days,
        sessions=sum(overall.values()),
        by_state=overall,
        failure_rate=_failure_rate(overall),
        cost=format_cost(sum(cost_by_day.values(), Decimal(0))),
        cost_by_model=by_model,
        slowest_tools=_slowest_tools(data.tools),
        costliest_sessions=await _costliest_sessions(
            reader, prices, project_id, since, until, list(models)
        ),
    )


def _slowest_tools(rows: list[tuple[str, int, int, float, float | None]]) -> list[ToolTiming]:
    timings = [
        ToolTiming(
            name=name or None,
            calls=calls,
            timed_calls=timed,
            mean_s=round(total / timed, 3) if timed else None,
            max_s=None if longest is None else round(longest, 3),
        )
        for name, calls, timed, total, longest in rows
    ]
    timings.sort(key=lambda t: (t.mean_s is None, -(t.mean_s or 0.0), t.name or ""))
    return timings[:TOP_ROWS]


async def _costliest_sessions(
    reader: SessionReader,
    prices: PriceTable,
    project_id: str,
    since: float,
    until: float,
    models: list[str],
) -> list[CostlySession]:
    """The most expensive sessions: ranked by the database with the models' prices as floats,
    then priced exactly here (and ranked again by that)."""
    per_token = []
    for model in models:
        price = prices.lookup(model)
        if price is not None:
            per_token.append(
                (model, float(price.prompt) / 1_000_000, float(price.completion) / 1_000_000)
            )
    usage = await reader.costliest_sessions(project_id, since, until, per_token, TOP_ROWS)
    costs = prices.session_costs(usage)
    ranked = sorted(
        ((cost, sid) for sid, cost in costs.items() if cost > 0), key=lambda c: (-c[0], c[1])
    )
    sessions = []
    for cost, sid in ranked:
        row = await reader.get_session(sid)
        if row is None:  # deleted (a prune) since the aggregates were read
            continue
        sessions.append(
            CostlySession(
                id=row.id,
                state=row.state,
                tags=row.tags,
                init_timestamp=row.init_timestamp,
                cost=format_cost(cost),
            )
        )
    return sessions
