"""The Overview page in a real browser: sessions recorded through our SDK into a real collector,
and what a person sees after signing in (the totals, the charts, the tables, the links)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _overview_sample import record_overview_sample
from _servers import CollectorHandle
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from ._chrome import WAIT

pytestmark = pytest.mark.parametrize("collector_backend", ["sqlite"])


def _open_overview(browser: Any, url: str, query: str = "") -> None:
    browser.get(f"{url}/overview{query}")
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "costliest")))


def _text(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def _table(browser: Any, table_id: str) -> list[list[str]]:
    return [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    ]


def test_overview_shows_the_recorded_sessions_numbers_and_links_the_costliest(
    collector: CollectorHandle,
    browser: Any,
    sign_in: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    sample = asyncio.run(record_overview_sample(collector.url, collector.api_key))
    sign_in(collector.url, collector.api_key)
    browser.find_element(By.CSS_SELECTOR, 'nav a[href="/overview"]').click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "costliest")))

    assert _text(browser, "total-sessions") == "3"
    assert [_text(browser, f"total-{s}") for s in ("SUCCEEDED", "FAILED", "INDETERMINATE")] == [
        "1",
        "1",
        "1",
    ]
    assert _text(browser, "total-failure-rate") == "33.3%"
    assert _text(browser, "total-cost") == f"${sample.cost}"
    assert _table(browser, "models") == [
        ["house-model", "1", "5", "0", "$0.25"],
        ["gpt-4o", "1", "2000", "1000", "$0.015"],
        ["gpt-4o-mini", "2", "2000", "1000", "$0.0009"],
    ]
    # A tool named like markup is shown as its text: no element made of it, nothing ran.
    assert _table(browser, "tools") == [
        ["<img src=x onerror=alert(1)>", "1", "4.000 s", "4.000 s"],
        ["search", "2", "1.500 s", "2.000 s"],
    ]
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    costliest = _table(browser, "costliest")
    assert [(row[0], row[4]) for row in costliest] == [
        ("SUCCEEDED", f"${sample.succeeded_cost}"),
        ("FAILED", f"${sample.failed_cost}"),
    ]
    assert "<script>alert(1)</script>" in costliest[0][2]
    # One stacked bar per state on today's column, titled with the day and the count.
    titles = [
        rect.get_attribute("textContent")
        for rect in browser.find_elements(By.CSS_SELECTOR, "#chart-sessions rect")
    ]
    assert sorted(t.split(": ")[1] for t in titles) == [
        "1 FAILED",
        "1 INDETERMINATE",
        "1 SUCCEEDED",
    ]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-cost rect")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-models rect")) == 3
    browser.save_screenshot(str(tmp_path / "overview.png"))

    # The range is in the URL: 7 days keeps today's sessions; the link opens the session page.
    Select(browser.find_element(By.ID, "range-days")).select_by_value("7")
    browser.find_element(By.ID, "range-apply-days").click()
    WebDriverWait(browser, WAIT).until(lambda b: "days=7" in b.current_url)
    assert _text(browser, "total-sessions") == "3"
    browser.find_element(By.CSS_SELECTOR, f'#costliest tr[data-id="{sample.succeeded}"] a').click()
    WebDriverWait(browser, WAIT).until(
        lambda b: b.current_url.endswith(f"/sessions/{sample.succeeded}")
    )


def test_overview_of_dates_without_sessions_is_empty_and_a_bad_range_is_explained(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    asyncio.run(record_overview_sample(collector.url, collector.api_key))
    sign_in(collector.url, collector.api_key)
    _open_overview(browser, collector.url, "?since=2020-01-01&until=2020-01-07")
    assert _text(browser, "total-sessions") == "0"
    assert "2020-01-01 to 2020-01-07" in _text(browser, "range-text")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-sessions .axis-label")) > 2
    browser.get(f"{collector.url}/overview?since=2020-01-07&until=2020-01-01")
    assert "until: must be a time after since" in browser.find_element(By.TAG_NAME, "main").text


def test_a_second_projects_key_sees_nothing_of_the_first_in_the_overview(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    asyncio.run(record_overview_sample(collector.url, collector.api_key))
    other_key = collector.process.create_project("second")[1]
    sign_in(collector.url, other_key)
    _open_overview(browser, collector.url)
    assert _text(browser, "total-sessions") == "0"
    assert _text(browser, "total-cost") == "$0"
    assert _table(browser, "models") == _table(browser, "tools") == []
    assert _table(browser, "costliest") == []
    assert "No session with a cost in this range." in browser.find_element(By.TAG_NAME, "main").text
