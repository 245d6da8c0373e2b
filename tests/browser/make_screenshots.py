"""Make the dashboard screenshots of the docs from the demo's data.

    .venv/bin/python -m tests.browser.make_screenshots [docs/images]

Runs ``agentops-async demo`` into a temporary SQLite file, serves it with a collector on a free
port, signs in with headless Chromium (as tests/browser do) and saves ``dashboard-sessions.png``
(the list), ``dashboard-session.png`` (a session with an error, an LLM call selected) and
``overview.png`` (the last 7 days).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from agentops_async._demo import run_demo
from agentops_async.collector import Collector

from ._chrome import WAIT, sign_in, start_chrome


def _serve(database: str, ready: threading.Event, stop: threading.Event, url: list[str]) -> None:
    async def main() -> None:
        async with Collector(database=database, port=0) as collector:
            url.append(collector.url)
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    asyncio.run(main())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="agentops-shots-"))
    database = str(folder / "demo.db")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        asyncio.run(run_demo(database))
    api_key = re.findall(r"^  ([0-9a-f-]{36})$", printed.getvalue(), re.M)[-1]
    ready, stop, url = threading.Event(), threading.Event(), []
    server = threading.Thread(target=_serve, args=(database, ready, stop, url))
    server.start()
    if not ready.wait(30):
        raise SystemExit("the collector did not start")
    try:
        _list_and_session(url[0], api_key, folder, out)
        _overview(url[0], api_key, folder, out)
    finally:
        stop.set()
        server.join()
        shutil.rmtree(folder, ignore_errors=True)


def _list_and_session(url: str, api_key: str, folder: Path, out: Path) -> None:
    driver = start_chrome(folder / "profile-sessions", "1280,860", "--hide-scrollbars")
    try:
        wait = WebDriverWait(driver, WAIT)
        sign_in(driver, url, api_key)
        driver.save_screenshot(str(out / "dashboard-sessions.png"))
        failed = driver.find_element(By.CSS_SELECTOR, 'tr[data-state="SUCCEEDED"] .types')
        rows = driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
        target = next(
            (
                r
                for r in rows
                if "errors" in r.text and r.get_attribute("data-state") == "SUCCEEDED"
            ),
            failed.find_element(By.XPATH, "./ancestor::tr"),
        )
        driver.get(url + "/sessions/" + target.get_attribute("data-id"))
        wait.until(lambda d: d.find_element(By.ID, "waterfall").get_attribute("data-loaded"))
        driver.find_element(By.CSS_SELECTOR, '.wf-row[data-kind="llms"]').send_keys(Keys.ENTER)
        wait.until(lambda d: "Prompt" in d.find_element(By.ID, "detail").text)
        driver.save_screenshot(str(out / "dashboard-session.png"))
    finally:
        driver.quit()


def _overview(url: str, api_key: str, folder: Path, out: Path) -> None:
    driver = start_chrome(folder / "profile-overview", "1280,1500", "--hide-scrollbars")
    try:
        sign_in(driver, url, api_key)
        driver.get(url + "/overview?days=7")
        WebDriverWait(driver, WAIT).until(ec.presence_of_element_located((By.ID, "costliest")))
        driver.save_screenshot(str(out / "overview.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
