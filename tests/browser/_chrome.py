"""Headless Chromium for the dashboard's browser tests and the docs' screenshots: one place for
the options these machines need (see ../shared/BROWSER.md) and for signing in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("AGENTOPS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AGENTOPS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT = 15.0


def start_chrome(profile: Path, window: str = "1280,900", *extra: str) -> Any:
    """A headless Chromium WebDriver with a fresh profile under ``profile``: root needs
    ``--no-sandbox``; the background-networking flags keep it off this closed network."""
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
        f"--window-size={window}",
        f"--user-data-dir={profile}",
        *extra,
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(WAIT)
    return driver


def sign_in(driver: Any, url: str, api_key: str) -> None:
    """Sign ``driver`` in to the dashboard at ``url`` with ``api_key`` (the form, as a person
    does) and wait for the sessions list."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/signin")
    driver.find_element(By.ID, "key").send_keys(api_key)
    driver.find_element(By.CSS_SELECTOR, ".signin button[type=submit]").click()
    WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "sessions")))
