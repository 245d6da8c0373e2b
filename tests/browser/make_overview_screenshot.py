"""Make the Overview screenshot of the docs from the demo's data.

    .venv/bin/python -m tests.browser.make_overview_screenshot [docs/images]

Runs ``agentops-async demo`` into a temporary SQLite file, serves it on a free port, signs in
with headless Chromium and saves ``overview.png`` (the last 7 days).
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

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from agentops_async._demo import run_demo
from agentops_async.collector import Collector


def _serve(database: str, ready: threading.Event, stop: threading.Event, url: list[str]) -> None:
    async def main() -> None:
        async with Collector(database=database, port=0) as collector:
            url.append(collector.url)
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    asyncio.run(main())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="agentops-overview-shot-"))
    database = str(folder / "demo.db")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        asyncio.run(run_demo(database))
    api_key = re.findall(r"^  ([0-9a-f-]{36})$", printed.getvalue(), re.M)[-1]
    ready, stop, url = threading.Event(), threading.Event(), []
    server = threading.Thread(target=_serve, args=(database, ready, stop, url))
    server.start()
    ready.wait(30)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--window-size=1280,1500",
        f"--user-data-dir={folder / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(url[0] + "/signin")
        driver.find_element(By.ID, "key").send_keys(api_key)
        driver.find_element(By.CSS_SELECTOR, ".signin button").click()
        WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.ID, "sessions")))
        driver.get(url[0] + "/overview?days=7")
        WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.ID, "costliest")))
        driver.save_screenshot(str(out / "overview.png"))
    finally:
        driver.quit()
        stop.set()
        server.join()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
