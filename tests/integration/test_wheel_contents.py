"""The wheel carries what the collector serves: the dashboard's templates and static files, and
``py.typed``. An editable install (as in the tests) would hide a file missing from the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "agentops_async" / "collector" / "_dashboard"


@pytest.mark.timeout(300)
def test_the_wheel_holds_every_dashboard_file_and_py_typed(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("agentops_async-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        path.relative_to(REPO).as_posix()
        for folder in ("templates", "static")
        for path in (DASHBOARD / folder).rglob("*")
        if path.is_file()
    }
    assert len(wanted) >= 10  # base, sessions, session, overview pages; their scripts and styles
    assert wanted <= names, sorted(wanted - names)
    assert "agentops_async/py.typed" in names
