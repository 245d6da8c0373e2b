"""The dashboard in a real browser: a real collector, sessions recorded through our SDK, and what
a person sees after signing in with a project key."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _servers import CollectorHandle
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

import agentops_async as ao

from ._chrome import WAIT

pytestmark = pytest.mark.parametrize("collector_backend", ["sqlite"])

XSS_PROMPT = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def _rows(browser: Any) -> dict[str, str]:
    """``{session id: state}`` of the sessions list's rows."""
    return {
        row.get_attribute("data-id"): row.find_element(By.CSS_SELECTOR, ".state").text
        for row in browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
    }


def _client(collector: CollectorHandle) -> ao.AsyncClient:
    return ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        flush_interval=0.01,
        log_session_stats=False,
    )


async def _record_three(collector: CollectorHandle) -> dict[str, str]:
    """One SUCCEEDED (alpha), one FAILED (beta) and one INDETERMINATE (gamma) session."""
    client = _client(collector)
    ids: dict[str, str] = {}
    try:
        async with client.session(tags=["alpha"]) as ok:
            await ok.record(ao.ActionEvent(action_type="plan"))
        ids["alpha"] = ok.session_id
        try:
            async with client.session(tags=["beta"]) as bad:
                ids["beta"] = bad.session_id
                raise RuntimeError("the agent gave up")
        except RuntimeError:
            pass
        async with client.session(tags=["gamma"]) as third:
            await third.record(ao.ToolEvent(name="search"))
            await third.end("Indeterminate", "stopped by the user")
        ids["gamma"] = third.session_id
    finally:
        await client.close()
    return ids


def test_sessions_list_shows_states_and_a_state_filter_changes_the_rows(
    collector: CollectorHandle,
    browser: Any,
    sign_in: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    ids = asyncio.run(_record_three(collector))
    sign_in(collector.url, collector.api_key)
    assert _rows(browser) == {
        ids["gamma"]: "INDETERMINATE",
        ids["beta"]: "FAILED",
        ids["alpha"]: "SUCCEEDED",
    }
    # newest first
    order = [
        r.get_attribute("data-id")
        for r in browser.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
    ]
    assert order == [ids["gamma"], ids["beta"], ids["alpha"]]
    browser.save_screenshot(str(tmp_path / "sessions.png"))

    Select(browser.find_element(By.ID, "filter-state")).select_by_value("failed")
    browser.find_element(By.ID, "filter-apply").click()
    WebDriverWait(browser, WAIT).until(lambda b: "state=failed" in b.current_url)
    assert _rows(browser) == {ids["beta"]: "FAILED"}

    browser.get(f"{collector.url}/sessions?tag=alpha")
    assert _rows(browser) == {ids["alpha"]: "SUCCEEDED"}
    assert browser.find_element(By.ID, "filter-tag").get_attribute("value") == "alpha"
    # the time range: all three started in the last hour, none after 2100 or before 2000
    browser.get(f"{collector.url}/sessions?range=1h")
    assert len(_rows(browser)) == 3
    browser.get(f"{collector.url}/sessions?since=2100-01-01T00:00")
    assert _rows(browser) == {}
    browser.get(f"{collector.url}/sessions?until=2000-01-01T00:00")
    assert _rows(browser) == {}

    # keyboard: a row takes the focus and opens with Enter
    browser.get(f"{collector.url}/sessions")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{ids["beta"]}"]')
    row.send_keys(Keys.ENTER)
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "waterfall")))
    assert browser.current_url == f"{collector.url}/sessions/{ids['beta']}"


def test_a_running_session_turns_succeeded_without_a_reload(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    client = ao.Client(
        api_key=collector.api_key, endpoint=collector.url, flush_interval=0.01,
        log_session_stats=False,
    )  # fmt: skip
    try:
        session = client.start_session(tags=["live"])
        session.record(ao.ActionEvent(action_type="think"))
        assert session.flush(timeout=10)
        sign_in(collector.url, collector.api_key)
        assert _rows(browser) == {session.session_id: "RUNNING"}
        browser.execute_script("window.__same_page = true")
        session.end_session("Success")
        WebDriverWait(browser, WAIT).until(
            ec.text_to_be_present_in_element(
                (By.CSS_SELECTOR, f'tr[data-id="{session.session_id}"] .state'), "SUCCEEDED"
            )
        )
        assert browser.execute_script("return window.__same_page") is True  # no reload
        WebDriverWait(browser, WAIT).until(
            lambda b: b.find_element(By.ID, "live-status").text == ""
        )  # polling stopped: nothing runs any more
    finally:
        client.close()


def test_a_running_sessions_page_follows_new_events_and_its_end_without_a_reload(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    client = ao.Client(
        api_key=collector.api_key, endpoint=collector.url, flush_interval=0.01,
        log_session_stats=False,
    )  # fmt: skip
    try:
        session = client.start_session(tags=["live"])
        session.record(ao.ActionEvent(action_type="first"))
        assert session.flush(timeout=10)
        sign_in(collector.url, collector.api_key)
        browser.get(f"{collector.url}/sessions/{session.session_id}")
        WebDriverWait(browser, WAIT).until(
            lambda b: [r[0] for r in _waterfall_rows(b)] == ["first"]
        )
        assert browser.find_element(By.ID, "session-state").text == "RUNNING"
        browser.execute_script("window.__same_page = true")
        session.record(ao.ToolEvent(name="second"))
        assert session.flush(timeout=10)
        WebDriverWait(browser, WAIT).until(
            lambda b: [r[0] for r in _waterfall_rows(b)] == ["first", "tool second"]
        )
        session.end_session("Success")
        WebDriverWait(browser, WAIT).until(
            ec.text_to_be_present_in_element((By.ID, "session-state"), "SUCCEEDED")
        )
        assert browser.execute_script("return window.__same_page") is True  # no reload
        assert browser.find_element(By.ID, "wf-status").text == "2 events"
    finally:
        client.close()


def _record_nested(collector: CollectorHandle) -> str:
    """A session with spans plan > search > fetch, an LLM event whose prompt is markup, and an
    error, recorded through our SDK in a process of its own (see _record_spans.py)."""
    script = Path(__file__).with_name("_record_spans.py")
    done = subprocess.run(
        [sys.executable, str(script), collector.url, collector.api_key, XSS_PROMPT],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _waterfall_rows(browser: Any) -> list[tuple[str, int, str]]:
    return [
        (
            row.find_element(By.CSS_SELECTOR, ".wf-label").text.lstrip("!"),
            int(row.get_attribute("data-depth")),
            row.get_attribute("data-kind"),
        )
        for row in browser.find_elements(By.CSS_SELECTOR, "#wf-spacer .wf-row")
    ]


def test_the_session_page_nests_spans_and_shows_an_llm_events_messages_and_cost_as_text(
    collector: CollectorHandle,
    browser: Any,
    sign_in: Callable[[str, str], None],
    tmp_path: Path,
) -> None:
    session_id = _record_nested(collector)
    sign_in(collector.url, collector.api_key)
    browser.get(f"{collector.url}/sessions/{session_id}")
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_element(By.ID, "waterfall").get_attribute("data-loaded") == "true"
    )
    rows = _waterfall_rows(browser)
    depth = {label: d for label, d, _ in rows}
    assert depth["plan"] == 0
    assert depth["search"] == 1
    assert depth["fetch"] == 2
    labels = [label for label, _, _ in rows]
    assert labels.index("plan") < labels.index("search") < labels.index("fetch")
    kinds = {label: kind for label, _, kind in rows}
    assert kinds["LLM gpt-4o-mini"] == "llms"
    error_row = browser.find_element(By.CSS_SELECTOR, '#wf-spacer .wf-row[data-kind="errors"]')
    assert "wf-err" in error_row.get_attribute("class")

    llm_row = browser.find_element(By.CSS_SELECTOR, '#wf-spacer .wf-row[data-kind="llms"]')
    llm_row.send_keys(Keys.ENTER)  # keyboard: focus the row, Enter opens its detail
    detail = browser.find_element(By.ID, "detail")
    WebDriverWait(browser, WAIT).until(lambda b: "Prompt" in detail.text)
    messages = detail.find_elements(By.CSS_SELECTOR, ".msg")
    texts = [m.text for m in messages]
    assert texts[0].splitlines() == ["SYSTEM", "You are terse."]
    assert texts[1].splitlines() == ["USER", XSS_PROMPT]  # the markup as text
    assert texts[2].splitlines() == ["ASSISTANT", "Forty-two."]
    # gpt-4o-mini: 1000 x $0.15/M + 500 x $0.60/M
    assert "$0.00045" in detail.text
    assert "gpt-4o-mini" in detail.text
    assert browser.execute_script("return window.__xss") is None  # nothing ran
    assert detail.find_elements(By.TAG_NAME, "img") == []
    browser.save_screenshot(str(tmp_path / "session.png"))
    # the time axis' labels (common.js duration())
    labels = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "import('/static/common.js').then((m) => done("
        "[0, 0.0004567, 0.14, 0.1, 2.5, 125, 7260].map(m.duration)))"
    )
    assert labels == ["0 ms", "0.457 ms", "140 ms", "100 ms", "2.50 s", "2 min 5 s", "2 h 1 min"]


def test_a_second_projects_key_sees_none_of_the_first_projects_sessions(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    ids = asyncio.run(_record_three(collector))
    other_key = collector.process.create_project("second")[1]
    sign_in(collector.url, other_key)
    assert _rows(browser) == {}
    assert "No sessions" in browser.find_element(By.TAG_NAME, "main").text
    browser.get(f"{collector.url}/sessions/{ids['alpha']}")
    assert "No such session in this project." in browser.find_element(By.TAG_NAME, "main").text
    browser.get(f"{collector.url}/sessions?find={ids['alpha']}")
    assert _rows(browser) == {}


def test_a_wrong_key_gets_one_message_and_a_deep_link_returns_after_sign_in(
    collector: CollectorHandle, browser: Any
) -> None:
    ids = asyncio.run(_record_three(collector))
    browser.get(f"{collector.url}/sessions/{ids['beta']}")
    assert "/signin" in browser.current_url
    browser.find_element(By.ID, "key").send_keys("00000000-0000-4000-8000-000000000000")
    browser.find_element(By.CSS_SELECTOR, ".signin button[type=submit]").click()
    message = WebDriverWait(browser, WAIT).until(
        ec.presence_of_element_located((By.ID, "signin-error"))
    )
    assert message.text == "That key is not a valid API key of any project here."
    browser.find_element(By.ID, "key").send_keys(collector.api_key)
    browser.find_element(By.CSS_SELECTOR, ".signin button[type=submit]").click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "waterfall")))
    assert browser.current_url == f"{collector.url}/sessions/{ids['beta']}"
    assert browser.find_element(By.ID, "session-state").text == "FAILED"


async def _record_many(collector: CollectorHandle, count: int) -> str:
    """A session of ``count`` tool events over the raw v2 API (batches of 5,000)."""
    session_id, jwt = await collector.v2_create_session(tags=["big"])
    for start in range(0, count, 5000):
        events = [
            {"id": str(uuid.uuid4()), "event_type": "tools", "session_id": session_id,
             "name": f"t{i}", "init_timestamp": f"2026-01-01T00:{i // 6000:02d}:"
             f"{i % 6000 / 100:05.2f}Z"}
            for i in range(start, min(count, start + 5000))
        ]  # fmt: skip
        answer = await collector.v2_post("create_events", {"events": events}, jwt=jwt)
        assert answer.status == 200
    return session_id


def test_a_session_of_20000_events_renders_only_the_rows_in_view(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    session_id = asyncio.run(_record_many(collector, 20_000))
    sign_in(collector.url, collector.api_key)
    browser.get(f"{collector.url}/sessions/{session_id}")
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_element(By.ID, "waterfall").get_attribute("data-loaded") == "true"
    )
    assert browser.find_element(By.ID, "wf-status").text == "20000 events"
    rows = browser.find_elements(By.CSS_SELECTOR, "#wf-spacer .wf-row")
    assert 10 < len(rows) < 100  # windowed: only what is in view (and a margin)
    assert rows[0].find_element(By.CSS_SELECTOR, ".wf-label").text == "tool t0"
    rows[0].send_keys(Keys.END)  # the keyboard reaches the last one
    WebDriverWait(browser, WAIT).until(
        lambda b: "tool t19999" in b.find_element(By.ID, "detail").text
    )
    selected = browser.find_element(By.CSS_SELECTOR, '#wf-spacer .wf-row[aria-selected="true"]')
    assert selected.get_attribute("data-index") == "19999"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#wf-spacer .wf-row")) < 100


def test_pages_fit_a_1024_pixel_wide_window(
    collector: CollectorHandle, browser: Any, sign_in: Callable[[str, str], None]
) -> None:
    session_id = _record_nested(collector)
    browser.set_window_size(1024, 768)
    sign_in(collector.url, collector.api_key)
    overflow = "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert browser.execute_script(overflow) <= 0
    browser.get(f"{collector.url}/sessions/{session_id}")
    WebDriverWait(browser, WAIT).until(
        lambda b: b.find_element(By.ID, "waterfall").get_attribute("data-loaded") == "true"
    )
    assert browser.execute_script(overflow) <= 0
    bar = browser.find_element(By.CSS_SELECTOR, ".wf-bar")
    assert bar.size["width"] >= 3
    assert bar.location["x"] + bar.size["width"] <= 1024
