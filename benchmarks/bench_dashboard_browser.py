"""The first view of a 100,000-event session in a real browser: time to the first waterfall rows.

Fills a database with ``_fill.py`` (a few hundred sessions and one of ``--big-events`` events),
serves it with a collector subprocess, signs headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium with the browser tests' options from
tests/browser/_chrome.py) in through the sign-in form and opens the big session's page
``--runs`` times. The times are the browser's own (``performance.now()``, milliseconds from
the start of the navigation), noted by a MutationObserver installed before the page's scripts
run:

- first rows: the first ``.wf-row`` of the waterfall is in the document (what a person sees
  first: the header, and the first 500 events drawn on the time axis);
- all loaded: every event is loaded (``data-loaded="true"``: the script fetched all its pages).

    python benchmarks/bench_dashboard_browser.py                      # SQLite, 5 runs
    python benchmarks/bench_dashboard_browser.py --backend postgres --runs 9
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(Path(__file__).resolve().parent)]

from _fill import fill_database  # noqa: E402
from _servers import CollectorProcess, PostgresServer  # noqa: E402

from tests.browser._chrome import sign_in, start_chrome  # noqa: E402

WAIT = 60.0

# Runs in every document before its own scripts: notes when the first waterfall row appears and
# when the waterfall says every event is loaded.
_OBSERVE = """
window.__firstRow = null; window.__allLoaded = null;
new MutationObserver(() => {
  if (window.__firstRow === null && document.querySelector('.wf-row')) {
    window.__firstRow = performance.now();
  }
  const wf = document.getElementById('waterfall');
  if (window.__allLoaded === null && wf && wf.dataset.loaded === 'true') {
    window.__allLoaded = performance.now();
  }
}).observe(document, {subtree: true, childList: true, attributes: true});
"""


def measure(
    url: str, api_key: str, session_id: str, runs: int, profile: Path
) -> list[dict[str, float]]:
    """``runs`` first views of the session's page: ``{"first_rows": ms, "all_loaded": ms}``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = start_chrome(profile)  # the options of the browser tests (tests/browser/_chrome.py)
    driver.set_page_load_timeout(WAIT)
    try:
        sign_in(driver, url, api_key)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _OBSERVE})
        results = []
        for _ in range(runs + 1):  # the first view warms the browser's cache of the static files
            driver.get("about:blank")
            driver.get(f"{url}/sessions/{session_id}")
            WebDriverWait(driver, WAIT, poll_frequency=0.05).until(
                lambda d: d.execute_script("return window.__allLoaded !== null")
            )
            first, loaded = driver.execute_script("return [window.__firstRow, window.__allLoaded]")
            rows = driver.find_elements(By.CSS_SELECTOR, ".wf-row")
            status = driver.find_element(By.ID, "wf-status").text
            if not rows or first is None:
                raise AssertionError(f"no waterfall rows: {status!r}")
            results.append({"first_rows": float(first), "all_loaded": float(loaded)})
        driver.save_screenshot(str(profile.parent / "big-session.png"))
        print(f"last view: {len(rows)} rows drawn, status {status!r}", file=sys.stderr)
        return results[1:]
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--big-events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="agentops-browser-"))
    pg = PostgresServer.start() if args.backend == "postgres" else None
    try:
        database = pg.create_database() if pg else str(work / "big.db")
        fill = asyncio.run(
            fill_database(
                database,
                sessions=args.sessions,
                events=args.events,
                big=1,
                big_events=args.big_events,
            )
        )
        process = CollectorProcess(database, args.backend, work / "collector.log").start()
        try:
            results = measure(
                process.url, fill.api_key, fill.big_session_ids[0], args.runs, work / "profile"
            )
        finally:
            process.stop()
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n{args.backend}: the page of a session of {args.big_events:,} events,"
        f" {args.runs} first views in headless Chromium (ms from navigation start)\n"
    )
    print("| | median ms | min | max |")
    print("|---|---:|---:|---:|")
    for key, label in (("first_rows", "first waterfall rows"), ("all_loaded", "all events loaded")):
        values = [r[key] for r in results]
        print(
            f"| {label} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
