"""Fixtures of the dashboard's browser tests: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, and a signed-in helper.

Skipped with a reason when the browser, its driver or selenium is missing; in CI (``CI=true``),
where ``.ci/run`` installs them, a missing one fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("AGENTOPS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AGENTOPS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT = 15.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install agentops-async[test])"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} not found (apt-get install chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium WebDriver (1280x900), quit when the test ends."""
    problem = _missing()
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sign_in(browser: Any) -> Callable[[str, str], None]:
    """``sign_in(url, api_key)``: sign the browser in to the dashboard at ``url``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    def run(url: str, api_key: str) -> None:
        browser.get(f"{url}/signin")
        browser.find_element(By.ID, "key").send_keys(api_key)
        browser.find_element(By.CSS_SELECTOR, ".signin button[type=submit]").click()
        WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.ID, "sessions")))

    return run
