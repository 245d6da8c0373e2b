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

from ._chrome import CHROMEDRIVER, CHROMIUM, start_chrome
from ._chrome import sign_in as _sign_in


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
    driver = start_chrome(tmp_path / "profile")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sign_in(browser: Any) -> Callable[[str, str], None]:
    """``sign_in(url, api_key)``: sign the browser in to the dashboard at ``url``."""

    def run(url: str, api_key: str) -> None:
        _sign_in(browser, url, api_key)

    return run
