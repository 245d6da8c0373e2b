"""The demo ends with a command to serve its database: one that runs where the user is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentops_async._demo import _cli_command


def _script(folder: Path) -> Path:
    folder.mkdir(parents=True)
    script = folder / "agentops-async"
    script.write_text("#!/bin/sh\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_started_from_a_virtualenv_not_on_path_the_demo_names_that_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / ".venv" / "bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert _cli_command() == os.path.join(".venv", "bin", "agentops-async")


def test_started_by_its_name_on_path_the_demo_names_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "bin")
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", str(script.parent))
    assert _cli_command() == "agentops-async"


def test_started_outside_the_current_folder_the_demo_gives_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "venv" / "bin")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "")
    assert _cli_command() == str(script)
