"""Peer SDKs in their own virtualenvs, run as subprocesses that print JSON (loopback only).

Each peer gets a virtualenv under ``benchmarks/.peers/<name>`` (created on first use, reused
after) with exactly its package installed, so its dependencies never meet ours. Its script in
``benchmarks/peers/`` runs with a scrubbed environment: proxies pointed at a closed loopback port,
telemetry switches off, and a socket guard (``peers/_guard.py``) that refuses any connection
that is not to 127.0.0.1 and reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER_SCRIPTS = Path(__file__).resolve().parent / "peers"

#: name -> pip requirement
PEERS: dict[str, str] = {
    "agentops-0.3.26": "agentops==0.3.26",
    "langfuse": "langfuse",
}

_CLOSED_PORT = "http://127.0.0.1:9"  # discard port: nothing listens there


class PeerUnavailable(Exception):
    """The peer could not be installed or run; the message says why (shown in the table)."""


@dataclass(frozen=True)
class PeerEnv:
    """An installed peer: its virtualenv's interpreter."""

    name: str
    python: Path


def ensure_peer(name: str, peers_dir: Path, log: Path) -> PeerEnv:
    """The peer's virtualenv, created and installed if missing (pip output goes to ``log``).

    Raises:
        PeerUnavailable: venv creation or ``pip install`` failed.
    """
    requirement = PEERS[name]
    venv = peers_dir / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == requirement and python.exists():
        return PeerEnv(name, python)
    peers_dir.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             requirement],
        ]  # fmt: skip
        for step in steps:
            try:
                done = subprocess.run(step, stdout=out, stderr=out, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PeerUnavailable(f"`{' '.join(step[-3:])}` failed: {exc}") from None
            if done.returncode != 0:
                raise PeerUnavailable(
                    f"`pip install {requirement}` failed (exit {done.returncode}; see {log.name})"
                )
    marker.write_text(requirement)
    return PeerEnv(name, python)


def peer_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A scrubbed environment for a peer process: loopback only, no telemetry, no API keys."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Anything that honours proxies goes to a closed loopback port instead of the internet.
        "HTTP_PROXY": _CLOSED_PORT,
        "HTTPS_PROXY": _CLOSED_PORT,
        "ALL_PROXY": _CLOSED_PORT,
        "http_proxy": _CLOSED_PORT,
        "https_proxy": _CLOSED_PORT,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        # Telemetry and default cloud endpoints off / local.
        "DO_NOT_TRACK": "1",
        "ANONYMIZED_TELEMETRY": "false",
        "POSTHOG_DISABLED": "1",
        "AGENTOPS_LOGGING_TO_FILE": "False",
        "AGENTOPS_API_ENDPOINT": _CLOSED_PORT,
        "LANGFUSE_BASE_URL": _CLOSED_PORT,
        "LANGFUSE_HOST": _CLOSED_PORT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": _CLOSED_PORT,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    env.update(extra or {})
    return env


def run_peer(
    peer: PeerEnv,
    script: str,
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run ``peers/<script>`` in the peer's venv with ``config``; returns its JSON line.

    Raises:
        PeerUnavailable: it failed, timed out or printed no JSON.
    """
    cmd = [str(peer.python), str(PEER_SCRIPTS / script), json.dumps(config)]
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as cwd:
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
            )
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"{script} timed out after {timeout:.0f}s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"{script} exited {done.returncode}: {tail[0][:200]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("error"):
        raise PeerUnavailable(str(result["error"]))
    return result  # result["blocked"]: non-loopback connections the guard refused (reported)
