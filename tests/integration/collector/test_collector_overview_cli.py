"""``agentops-async sessions overview``: through a running collector's read API and straight
from its database, the numbers of sessions recorded through our SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable

from _overview_sample import record_overview_sample
from _servers import REPO_ROOT, CollectorHandle


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentops_async", "sessions", "overview", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), AGENTOPS_API_KEY=""),
        cwd=REPO_ROOT,
    )


def test_sessions_overview_prints_the_same_numbers_from_the_api_and_the_database(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    collector = collector_factory("sqlite")
    sample = asyncio.run(record_overview_sample(collector.url, collector.api_key))
    key = ("--api-key", collector.api_key)
    through_api = _cli("--endpoint", collector.url, *key, "--json")
    from_database = _cli("--database", collector.process.database, *key, "--json")
    for answer in (through_api, from_database):
        assert answer.returncode == 0, answer.stderr
    data = json.loads(through_api.stdout)
    assert data == json.loads(from_database.stdout)
    assert (data["sessions"], data["cost"], len(data["days"])) == (3, sample.cost, 30)
    assert data["costliest_sessions"][0]["id"] == sample.succeeded

    text = _cli("--database", collector.process.database, "--days", "7").stdout  # one project
    assert "3 sessions, 1 succeeded, 1 failed, 1 indeterminate, 0 running" in text
    assert f"failure rate 33.3%; cost ${sample.cost}" in text
    assert "house-model" in text and "<img src=x onerror=alert(1)>" in text
    assert sample.succeeded in text


def test_sessions_overview_explains_a_bad_range_and_an_ambiguous_database(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    collector = collector_factory("sqlite")
    collector.new_api_key()  # a second project: which one to sum up must be said
    database = ("--database", collector.process.database)
    ambiguous = _cli(*database)
    assert ambiguous.returncode != 0
    assert "--api-key: this database has 2 projects" in ambiguous.stderr
    backwards = _cli(
        *database, "--api-key", collector.api_key, "--since", "2026-02-01", "--until", "2026-01-01"
    )
    assert backwards.returncode != 0
    assert "until: must be a time after since" in backwards.stderr
