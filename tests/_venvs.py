"""Cached virtualenvs for peer clients (agentops 0.3 and 0.4, a plain OpenTelemetry app).

Each runs unmodified in its own venv under ``~/.cache/agentops_async-tests``, built from the
package index on first use and reused while its pinned versions match. A venv that cannot be
built skips the test locally and fails it in CI (``CI=true``), where the index is reachable.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def client_venv(name: str, requirements: list[str], env_var: str) -> Path:
    """The python of a cached venv ``name`` holding ``requirements`` (pinned ``==`` versions are
    checked on reuse); the test is skipped when it cannot be built (no PyPI)."""
    if os.environ.get("AGENTOPS_TEST_SKIP_LEGACY", "") not in ("", "0"):
        pytest.skip("AGENTOPS_TEST_SKIP_LEGACY is set")
    explicit = os.environ.get(env_var)
    venv = Path(explicit) if explicit else Path.home() / ".cache" / "agentops_async-tests" / name
    python = venv / "bin" / "python"
    pins = dict(r.split("==") for r in requirements if "==" in r)
    probe = [str(python), "-c", "import importlib.metadata as m, sys;"
             " print(*[m.version(n) for n in sys.argv[1:]])", *pins]  # fmt: skip
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        if found.stdout.split() == list(pins.values()):
            return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--timeout", "15", "--retries", "1", *requirements],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        problem = f"cannot build a venv with {' '.join(requirements)}: {exc}"
        if os.environ.get("CI", "").lower() in ("1", "true"):  # CI reaches the index: this is real
            pytest.fail(problem)
        pytest.skip(problem)
    return python


def require_test_package(module: str) -> Any:
    """Import ``module``, a package of the ``test`` extra; skip the test locally when it is not
    installed, fail it in CI (``CI=true``), where ``.[dev]`` installs it."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        return importlib.import_module(module)
    reason = f"{module} is not installed (the test extra: pip install -e '.[test]')"
    return pytest.importorskip(module, reason=reason)
