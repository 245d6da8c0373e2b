"""The dashboard's Overview page (``GET /overview``): sessions per day by state, failure rate,
cost per day and by model, the slowest tools and the most expensive sessions, for a time range.

Server-rendered: the charts are SVG that this module lays out (bars, a line) and the template
draws, so the page needs no script. The range is in the URL (``?days=7|30|90``, or
``?since=YYYY-MM-DD&until=YYYY-MM-DD``, UTC days, ``until`` included), so a view can be shared
and reloaded. The numbers come from :func:`~agentops_async.collector._overview.build_overview`,
the same as ``GET /api/overview``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from aiohttp import web

from .._context import Context
from .._dashboard import Pages, pages_of
from .._http import continue_after, fail
from .._overview import (
    OVERVIEW_STATES,
    InvalidRange,
    Overview,
    build_overview,
    overview_range,
)
from .._prices import format_cost
from .._storage import SECONDS_PER_DAY

__all__ = ["add_routes"]

DAY_CHOICES = (7, 30, 90)
CHART_WIDTH = 600
CHART_HEIGHT = 160
MODEL_LABEL_WIDTH = 170
MODEL_BAR_WIDTH = 330
MODEL_ROW = 22
MODEL_ROWS = 8


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add the Overview page to ``app``."""
    pages = pages_of(ctx)
    page = _OverviewPage(ctx, pages)
    app.add_routes(
        [web.get("/overview", pages.page(page.overview), expect_handler=continue_after())]
    )


@dataclass(frozen=True)
class Bar:
    """A rectangle of a chart, with the hover text of its ``<title>``."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: bars, an optional line (``points``), axis labels."""

    bars: list[Bar]
    labels: list[Label]
    top: str
    """The value at the top of the chart."""
    points: str = ""


class _OverviewPage:
    def __init__(self, ctx: Context, pages: Pages) -> None:
        self.ctx = ctx
        self.pages = pages

    async def overview(self, request: web.Request) -> web.StreamResponse:
        project = await self.pages.require_project(request)
        query = request.query
        choice, since_text, until_text = _range_of(query)
        now = time.time()
        try:
            since, until = _parse_range(choice, since_text, until_text, now)
        except InvalidRange as exc:
            fail(400, str(exc))
        overview = await build_overview(self.ctx.reader, self.ctx.prices, project, since, until)
        last_day = dt.date.fromisoformat(overview.days[-1].date)
        return await self.pages.render(
            request,
            "overview.html",
            project,
            section="overview",
            title="Overview",
            overview=overview,
            choices=DAY_CHOICES,
            choice=choice,
            since=dt.date.fromisoformat(overview.days[0].date).isoformat(),
            until=last_day.isoformat(),
            states=OVERVIEW_STATES,
            sessions_chart=_sessions_chart(overview),
            failure_chart=_failure_chart(overview),
            cost_chart=_cost_chart(overview),
            model_rows=_model_rows(overview),
            model_label=MODEL_LABEL_WIDTH,
            model_row=MODEL_ROW,
            width=CHART_WIDTH,
            height=CHART_HEIGHT,
        )


def _range_of(query: Mapping[str, str]) -> tuple[int | None, str, str]:
    """The range the URL asks for: a number of days, or since/until dates."""
    since, until = query.get("since", "").strip(), query.get("until", "").strip()
    days = query.get("days", "").strip()
    if since or until:
        return None, since, until
    if not days:
        return 30, "", ""
    if not days.isdigit() or int(days) not in DAY_CHOICES:
        fail(400, f"days: expected one of {', '.join(map(str, DAY_CHOICES))}")
    return int(days), "", ""


def _parse_range(days: int | None, since: str, until: str, now: float) -> tuple[float, float]:
    if days is not None:
        end = (int(now // SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY
        return overview_range(end - days * SECONDS_PER_DAY, end, now)
    start = _date(since, "since") if since else None
    stop = _date(until, "until") + SECONDS_PER_DAY if until else None  # until's day included
    return overview_range(start, stop, now)


def _date(text: str, what: str) -> float:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRange(f"{what}: expected a date YYYY-MM-DD (UTC)") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def _labels(overview: Overview, slot: float) -> list[Label]:
    """Dates under the bars, about eight of them whatever the range."""
    step = max(1, round(len(overview.days) / 8))
    return [
        Label(x=i * slot + slot / 2, text=day.date[5:])
        for i, day in enumerate(overview.days)
        if i % step == 0
    ]


def _sessions_chart(overview: Overview) -> Chart:
    """Sessions per day, one bar per day stacked by state (ended states first, running on top)."""
    slot = CHART_WIDTH / len(overview.days)
    top = max([day.sessions for day in overview.days] + [1])
    bars = []
    for i, day in enumerate(overview.days):
        y = float(CHART_HEIGHT)
        for state in OVERVIEW_STATES:
            count = day.by_state.get(state, 0)
            if not count:
                continue
            height = count / top * CHART_HEIGHT
            y -= height
            bars.append(
                Bar(
                    x=round(i * slot + slot * 0.1, 2),
                    y=round(y, 2),
                    width=round(slot * 0.8, 2),
                    height=round(height, 2),
                    kind=f"state-{state}",
                    title=f"{day.date}: {count} {state}",
                )
            )
    return Chart(bars=bars, labels=_labels(overview, slot), top=str(top))


def _failure_chart(overview: Overview) -> Chart:
    """The failure rate per day as a line through the days where sessions ended."""
    slot = CHART_WIDTH / len(overview.days)
    points, bars = [], []
    for i, day in enumerate(overview.days):
        if day.failure_rate is None:
            continue
        x = round(i * slot + slot / 2, 2)
        y = round(CHART_HEIGHT - day.failure_rate * CHART_HEIGHT, 2)
        points.append(f"{x},{y}")
        title = f"{day.date}: {day.failure_rate:.0%} failed"
        bars.append(Bar(x=x - 3, y=y - 3, width=6, height=6, kind="rate-point", title=title))
    return Chart(bars=bars, labels=_labels(overview, slot), top="100%", points=" ".join(points))


def _cost_chart(overview: Overview) -> Chart:
    """Cost per day, one bar per day."""
    slot = CHART_WIDTH / len(overview.days)
    costs = [Decimal(day.cost) for day in overview.days]
    top = max([*costs, Decimal(0)])
    bars = []
    if top > 0:
        for i, (day, cost) in enumerate(zip(overview.days, costs, strict=True)):
            if cost <= 0:
                continue
            height = float(cost / top) * CHART_HEIGHT
            bars.append(
                Bar(
                    x=round(i * slot + slot * 0.1, 2),
                    y=round(CHART_HEIGHT - height, 2),
                    width=round(slot * 0.8, 2),
                    height=round(height, 2),
                    kind="cost",
                    title=f"{day.date}: ${day.cost}",
                )
            )
    return Chart(bars=bars, labels=_labels(overview, slot), top=f"${format_cost(top)}")


@dataclass(frozen=True)
class ModelRow:
    """A row of the cost-by-model chart: the name on the left, a bar, the cost after it."""

    y: float
    name: str
    width: float
    cost: str


def _model_rows(overview: Overview) -> list[ModelRow]:
    """The most expensive models (at most eight) as horizontal bars."""
    models = overview.cost_by_model[:MODEL_ROWS]
    costs = [Decimal(m.cost) for m in models]
    top = max([*costs, Decimal(0)])
    return [
        ModelRow(
            y=i * MODEL_ROW,
            name=m.model or "(no model)",
            width=round(float(cost / top) * MODEL_BAR_WIDTH, 2) if top > 0 else 0.0,
            cost=m.cost,
        )
        for i, (cost, m) in enumerate(zip(costs, models, strict=True))
    ]
