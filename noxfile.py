"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck``, ``nox -s bench``.

``nox --no-venv -s ...`` runs a session in the current environment (what ``.ci/run`` does after
installing ``.[dev]`` once), skipping the per-session installs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]


def _install(session: nox.Session, *extras: str) -> None:
    if session.venv_backend != "none":
        spec = f".[{','.join(extras)}]" if extras else "."
        session.install("-e", spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (unit, integration on SQLite and PostgreSQL, faults)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    if session.venv_backend != "none":
        session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "dev")
    session.run("mypy", "--strict", "agentops_async")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmark suite: every figure of issue 5, peers in their own venvs (~5 min).

    Writes benchmarks/results/latest.{md,json,png}; e.g. ``nox -s bench -- --only hotpath``.
    """
    _install(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(name="bench_smoke", python=PYTHON)
def bench_smoke(session: nox.Session) -> None:
    """Every figure at tiny sizes, no peers (~20 s): keeps the suite from rotting; never gates."""
    _install(session, "bench")
    session.run("python", "benchmarks/run.py", "--smoke", *session.posargs)
