"""Servers for the tests: free ports, a throwaway PostgreSQL, collector subprocesses.

Nothing here sleeps to synchronise: readiness is polled against a deadline. Used by
``tests/conftest.py`` (fixtures) and ``benchmarks/bench_ingest.py``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN_ENV = "AGENTOPS_COLLECTOR_ADMIN_TOKEN"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def fake_chat_completions(
    answer: Callable[[dict[str, Any]], dict[str, Any]],
) -> AsyncIterator[str]:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 answering ``answer(request
    body)``; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    from aiohttp import web

    async def completions(request: web.Request) -> web.Response:
        return web.json_response(answer(await request.json()))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate()`` until it returns something truthy; TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- PostgreSQL ----------------------------------------------------------------------------


def find_postgres_bin() -> Path | None:
    """The directory holding initdb/pg_ctl: $AGENTOPS_TEST_PG_BIN, PATH, or Debian's layout."""
    explicit = os.environ.get("AGENTOPS_TEST_PG_BIN")
    if explicit:
        return Path(explicit) if (Path(explicit) / "initdb").exists() else None
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, on a free loopback port, trust auth.

    Start with :meth:`start`, stop with :meth:`stop`. As root, the server runs as the ``postgres``
    system user (initdb refuses root).
    """

    bin_dir: Path
    base_dir: Path
    port: int
    user: str = "postgres"
    run_as: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A ``postgresql://`` DSN for ``database`` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    @classmethod
    def start(
        cls, bin_dir: Path | None = None, settings: Mapping[str, str] | None = None
    ) -> PostgresServer:
        """initdb + pg_ctl start; ``settings`` are extra ``-c name=value`` server options.

        By default durability is off (fsync, synchronous_commit): this is a test server.
        """
        bin_dir = bin_dir or find_postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        run_as = "postgres" if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="agentops-pg-"))
        if run_as:
            shutil.chown(base, user=run_as)
        options = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(base),
            "max_connections": "200",
        }
        options.update(settings or {})
        last_error = ""
        for _ in range(3):  # a free port can be taken between picking and binding
            server = cls(
                bin_dir=bin_dir, base_dir=base, port=free_port(), run_as=run_as, options=options
            )
            if not server.data_dir.exists():
                server._run(
                    str(bin_dir / "initdb"),
                    "-D",
                    str(server.data_dir),
                    "-U",
                    server.user,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                )
            result = server._pg_ctl_start()
            if result.returncode == 0:
                server._start_watchdog()
                return server
            last_error = result.stderr + _tail(base / "server.log")
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {last_error}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        opts = " ".join(f"-c {k}={v}" for k, v in self.options.items())
        return self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.base_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} {opts}",
            "start",
            check=False,
        )

    def halt(self, mode: str = "fast") -> None:
        """Stop the server process, keeping its data (``pg_ctl stop -m mode``); see :meth:`resume`.

        ``fast`` disconnects every client (they get "terminating connection due to administrator
        command") and shuts down cleanly, as a restart or an upgrade does.
        """
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start the server again on the same data directory and port, after :meth:`halt`."""
        result = self._pg_ctl_start()
        if result.returncode != 0:
            log = _tail(self.base_dir / "server.log")
            raise RuntimeError(f"could not restart PostgreSQL: {result.stderr}{log}")

    def _start_watchdog(self) -> None:
        """A detached shell that stops the server if this process dies without :meth:`stop`."""
        prefix = f"runuser -u {self.run_as} -- " if self.run_as else ""
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{prefix}{shlex.quote(str(self.bin_dir / 'pg_ctl'))} -D "
            f"{shlex.quote(str(self.data_dir))} -m immediate -w stop; "
            f"rm -rf {shlex.quote(str(self.base_dir))}"
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(
            str(self.bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            name,
        )
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by :meth:`create_database` (benchmarks free the disk)."""
        name = dsn.rsplit("/", 1)[-1]
        self._run(
            str(self.bin_dir / "dropdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "--if-exists",
            name,
        )

    def stop(self) -> None:
        """Stop the server and delete its files."""
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        with contextlib.suppress(Exception):
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "immediate",
                "-w",
                "stop",
                check=False,
            )
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies (Linux), so no server outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# --- HTTP helpers (stdlib, for sync code) ---------------------------------------------------


@dataclass
class HttpAnswer:
    """Status and decoded JSON body (None if the body was not JSON)."""

    status: int
    body: Any
    raw: bytes = b""


def http_request(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpAnswer:
    """A blocking HTTP request with urllib; never raises for HTTP error statuses."""
    all_headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return HttpAnswer(status, body, raw)


# --- collector subprocess ------------------------------------------------------------------


@dataclass
class CollectorProcess:
    """``python -m agentops_async serve`` in a subprocess, on a free loopback port.

    Args:
        database: SQLite path or PostgreSQL DSN.
        backend: ``"sqlite"`` or ``"postgres"`` (informational).
        log_path: Where the server's stdout/stderr go.
        jwt_expiry: ``--jwt-expiry`` in seconds (None: the server default).
        prices: ``--prices`` file.
        max_body_size: ``--max-body-size`` in bytes.
        extra_args: More ``serve`` arguments.
        env: More environment variables of the server process.
        code_dir: The checkout whose ``agentops_async`` runs (default: this one); benchmarks
            compare an older commit's collector, checked out elsewhere, with this one.
    """

    database: str
    backend: str
    log_path: Path
    jwt_expiry: float | None = None
    prices: str | Path | None = None
    max_body_size: int | None = None
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    code_dir: Path = REPO_ROOT
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "agentops_async", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--database", self.database, "--log-level", "WARNING"]
        if self.jwt_expiry is not None:
            cmd += ["--jwt-expiry", str(self.jwt_expiry)]
        if self.prices is not None:
            cmd += ["--prices", str(self.prices)]
        if self.max_body_size is not None:
            cmd += ["--max-body-size", str(self.max_body_size)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 30.0) -> CollectorProcess:
        """Start and wait until ``GET /health`` answers; retries on a port clash."""
        for attempt in range(3):
            self.launch()
            try:
                return self.wait_ready(timeout)
            except RuntimeError:
                if attempt == 2 or self.process is None:
                    raise
        return self

    def launch(self) -> CollectorProcess:
        """Start the process on a free port without waiting for it (see :meth:`wait_ready`)."""
        env = dict(os.environ)
        code = str(self.code_dir)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code, env.get("PYTHONPATH")]))
        env[ADMIN_TOKEN_ENV] = self.admin_token
        env.update(self.env)
        self.port = free_port()
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=code,  # ``python -m`` imports from the working directory first
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        return self

    def wait_ready(self, timeout: float = 30.0) -> CollectorProcess:
        """Wait until ``GET /health`` answers.

        Raises:
            RuntimeError: The process exited (its log tail is in the message), or did not
                answer within ``timeout`` seconds (then it is stopped, and ``process`` is None).
        """
        try:
            wait_until(self._ready, timeout, f"the collector on port {self.port}")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"collector did not start:\n{_tail(self.log_path)}") from None
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"collector exited early:\n{_tail(self.log_path)}")
        try:
            return http_request("GET", f"{self.url}/health", timeout=2).status == 200
        except OSError:
            return False

    def create_project(self, name: str = "test") -> tuple[str, str]:
        """A new project through the admin API; returns ``(project_id, api_key)``."""
        answer = http_request(
            "POST",
            f"{self.url}/admin/projects",
            json_body={"name": name},
            headers={"X-Agentops-Admin-Token": self.admin_token},
        )
        if answer.status != 200:
            raise RuntimeError(f"create project failed: {answer.status} {answer.body}")
        return answer.body["project_id"], answer.body["api_key"]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def start_collectors(
    processes: Sequence[CollectorProcess], timeout: float = 60.0
) -> list[CollectorProcess]:
    """Launch every process at once, then wait until each answers ``/health``.

    All of them open the database at about the same moment (what a rolling deploy or a
    scaled-out service does); a process that exits instead raises ``RuntimeError`` with its log.
    """
    for process in processes:
        process.launch()
    try:
        return [process.wait_ready(timeout) for process in processes]
    except BaseException:
        for process in processes:
            process.stop()
        raise


class CollectorHandle:
    """What a test gets from the ``collector`` fixture: one collector, one fresh project.

    Attributes:
        url: Base URL (the SDK ``endpoint``).
        api_key: A key of a project made for this test only.
        project_id: That project's id.
        backend: ``"sqlite"`` or ``"postgres"``.
        database: The SQLite path or PostgreSQL DSN the collector uses.
        process: The :class:`CollectorProcess`.

    Read helpers default to this handle's key; pass ``api_key=`` to read as another project.
    Async helpers use aiohttp; the ``*_sync`` ones use urllib (for sync tests and threads).
    """

    def __init__(self, process: CollectorProcess, project_id: str, api_key: str) -> None:
        self.process = process
        self.url = process.url
        self.backend = process.backend
        self.database = process.database
        self.project_id = project_id
        self.api_key = api_key

    def __repr__(self) -> str:
        return f"CollectorHandle(url={self.url!r}, backend={self.backend!r})"

    def new_api_key(self, name: str = "other") -> str:
        """The key of another new project on the same collector."""
        return self.process.create_project(name)[1]

    # --- raw requests ------------------------------------------------------------------------

    def _headers(self, api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = {"X-Agentops-Api-Key": api_key or self.api_key}
        merged.update(headers or {})
        return merged

    def request_sync(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Any request to the collector (no default auth header: pass your own)."""
        return http_request(
            method, self.url + path, json_body=json_body, data=data, headers=headers
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Async version of :meth:`request_sync` (aiohttp)."""
        import aiohttp

        all_headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, data=data, headers=all_headers) as response,
        ):
            raw = await response.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            return HttpAnswer(response.status, body, raw)

    # --- raw v2 API --------------------------------------------------------------------------

    async def v2_post(
        self, call: str, body: Any, *, jwt: str | None = None, api_key: str | None = None
    ) -> HttpAnswer:
        """POST ``/v2/<call>`` with a JSON body (or raw bytes) and a JWT and/or an API key."""
        headers = {"Content-Type": "application/json"}
        if jwt is not None:
            headers["Authorization"] = f"Bearer {jwt}"
        if api_key is not None:
            headers["X-Agentops-Api-Key"] = api_key
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.request("POST", f"/v2/{call}", data=data, headers=headers)

    async def v2_create_session(
        self, session_id: str | None = None, *, api_key: str | None = None, **fields: Any
    ) -> tuple[str, str]:
        """create_session over the raw API; returns ``(session_id, jwt)``."""
        session_id = session_id or str(uuid.uuid4())
        session = {"session_id": session_id, "init_timestamp": _now_iso(), "tags": [], **fields}
        answer = await self.v2_post(
            "create_session", {"session": session}, api_key=api_key or self.api_key
        )
        body = _expect_ok(answer)
        return session_id, str(body["jwt"])

    # --- read API ----------------------------------------------------------------------------

    def get_session_sync(
        self, session_id: str, api_key: str | None = None
    ) -> dict[str, Any] | None:
        """The stored session (read API view), or None if this project cannot see it."""
        answer = self.request_sync(
            "GET", f"/api/sessions/{session_id}", headers=self._headers(api_key, None)
        )
        return _session_or_none(answer)

    async def get_session(
        self, session_id: str, api_key: str | None = None
    ) -> dict[str, Any] | None:
        """Async :meth:`get_session_sync`."""
        answer = await self.request(
            "GET", f"/api/sessions/{session_id}", headers=self._headers(api_key, None)
        )
        return _session_or_none(answer)

    def get_events_sync(
        self, session_id: str, api_key: str | None = None, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        """All stored events of a session in arrival order (follows pagination)."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            answer = self.request_sync(
                "GET",
                _events_path(session_id, cursor, event_type),
                headers=self._headers(api_key, None),
            )
            page = _expect_ok(answer)
            events += page["events"]
            cursor = page["next_cursor"]
            if cursor is None:
                return events

    async def get_events(
        self, session_id: str, api_key: str | None = None, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Async :meth:`get_events_sync`."""
        events: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            answer = await self.request(
                "GET",
                _events_path(session_id, cursor, event_type),
                headers=self._headers(api_key, None),
            )
            page = _expect_ok(answer)
            events += page["events"]
            cursor = page["next_cursor"]
            if cursor is None:
                return events

    def list_sessions_sync(
        self, api_key: str | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """All sessions of the project matching ``filters`` (tag, state, since, until)."""
        sessions: list[dict[str, Any]] = []
        params = {k: str(v) for k, v in filters.items() if v is not None}
        while True:
            answer = self.request_sync(
                "GET",
                "/api/sessions?" + urllib.parse.urlencode(params),
                headers=self._headers(api_key, None),
            )
            page = _expect_ok(answer)
            sessions += page["sessions"]
            if page["next_cursor"] is None:
                return sessions
            params["cursor"] = page["next_cursor"]

    async def list_sessions(
        self, api_key: str | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Async :meth:`list_sessions_sync`."""
        sessions: list[dict[str, Any]] = []
        params = {k: str(v) for k, v in filters.items() if v is not None}
        while True:
            answer = await self.request(
                "GET",
                "/api/sessions?" + urllib.parse.urlencode(params),
                headers=self._headers(api_key, None),
            )
            page = _expect_ok(answer)
            sessions += page["sessions"]
            if page["next_cursor"] is None:
                return sessions
            params["cursor"] = page["next_cursor"]


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat()


def _events_path(session_id: str, cursor: str | None, event_type: str | None) -> str:
    params = {"limit": "1000"}
    if cursor:
        params["cursor"] = cursor
    if event_type:
        params["event_type"] = event_type
    return f"/api/sessions/{session_id}/events?" + urllib.parse.urlencode(params)


def _session_or_none(answer: HttpAnswer) -> dict[str, Any] | None:
    if answer.status == 404:
        return None
    result: dict[str, Any] = _expect_ok(answer)
    return result


def _expect_ok(answer: HttpAnswer) -> Any:
    if answer.status != 200:
        raise AssertionError(f"collector answered {answer.status}: {answer.body or answer.raw!r}")
    return answer.body
