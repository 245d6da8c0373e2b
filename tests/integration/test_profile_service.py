"""benchmarks/profile_service.py, run as a process: the in-process service profile measures
and checks what the collector stored."""

from __future__ import annotations

import re
import subprocess
import sys

from _servers import REPO_ROOT


def test_profile_service_measures_each_variant_and_checks_delivery() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "profile_service.py"),
            "--rounds",
            "2",
            "--requests",
            "60",
            "--warmup",
            "20",
            "--concurrency",
            "8",
            "--variants",
            "untraced",
            "agentops",
            "agentops-1lane",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # Every request of every round (warm-up included) stored as a session with its 3 events,
    # each variant in a project of its own.
    assert "stored: agentops 160 sessions, 480 events (sent 160 requests)" in out
    assert "stored: agentops-1lane 160 sessions, 480 events (sent 160 requests)" in out
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| (untraced|agentops|agentops-1lane) \| (.*)$", out, re.M)
    }
    assert set(rows) == {"untraced", "agentops", "agentops-1lane"}
    cpu = {name: float(cells.split(" ", 1)[0]) for name, cells in rows.items()}
    assert all(value > 0 for value in cpu.values()), rows
    # The overhead column: a number for the traced variants, n/a for the reference.
    assert rows["untraced"].split(" | ")[3] == "n/a"
    assert re.match(r"-?\d+\.\d", rows["agentops"].split(" | ")[3])
    assert "agentops overhead" not in out  # no otel variant: no ratio to print
