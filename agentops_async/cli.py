"""The ``agentops-async`` command line: run the collector, make keys, look at sessions, demo.

Examples::

    agentops-async serve --port 8000 --database agentops.db
    agentops-async keys create my-project --database agentops.db
    agentops-async keys add <project-id> / keys revoke <api-key> / keys list
    agentops-async sessions list --database agentops.db
    agentops-async sessions show <session-id> --endpoint http://127.0.0.1:8000 --api-key <key>
    agentops-async prune --older-than 30d --database agentops.db
    agentops-async serve --retention-days 30
    agentops-async demo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

__all__ = ["main", "render_sessions_table"]

_DEFAULT_DATABASE = "agentops.db"
_ADMIN_TOKEN_ENV = "AGENTOPS_COLLECTOR_ADMIN_TOKEN"


def _database_default() -> str:
    return os.environ.get("AGENTOPS_COLLECTOR_DATABASE", _DEFAULT_DATABASE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentops-async",
        description="Local AgentOps-compatible collector and tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the collector (AgentOps v2 API, OTLP, read API)")
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000, 0: any)")
    serve.add_argument(
        "--database",
        default=_database_default(),
        help="SQLite file or postgresql:// DSN (default $AGENTOPS_COLLECTOR_DATABASE, agentops.db)",
    )
    serve.add_argument(
        "--jwt-expiry", type=float, default=3600.0, help="session token lifetime in seconds"
    )
    serve.add_argument(
        "--project-token-expiry",
        type=float,
        default=30 * 86400.0,
        help="lifetime in seconds of the project tokens of /v3/auth/token (agentops 0.4 never"
        " refreshes its token; default 30 days)",
    )
    serve.add_argument("--prices", metavar="FILE", help="JSON file overriding token prices")
    serve.add_argument(
        "--max-body-size",
        type=int,
        default=32 * 1024 * 1024,
        help="largest request body in bytes, also once decompressed (default 32 MiB)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=75.0,
        help="seconds a connection may wait for a request before it is closed (default 75)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds from a request's first byte to the end of its headers (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds to receive a whole request body (default 60)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open connections at most; lowered to fit `ulimit -n` (default 1024)",
    )
    serve.add_argument(
        "--retention-days",
        type=_positive_float,
        help="delete sessions older than this many days, hourly in the background (default: keep)",
    )
    serve.add_argument(
        "--retention-interval",
        type=_positive_float,
        default=3600.0,
        help="seconds between two retention passes (default 3600)",
    )
    serve.add_argument(
        "--pool-size",
        type=_pool_size,
        help="PostgreSQL: connections this collector opens at most, on demand (default: "
        "$AGENTOPS_COLLECTOR_PG_POOL_SIZE, else 10); not for SQLite",
    )
    serve.add_argument(
        "--pg-synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="PostgreSQL: off acknowledges writes before their WAL is on disk (a crash of the"
        " database or its machine can lose the last ~0.6 s of acknowledged events, never"
        " corrupt); on (default) waits for the disk. See docs/deploy.md",
    )
    serve.add_argument(
        "--dashboard-signin-expiry",
        type=_positive_float,
        default=12 * 3600.0,
        help="seconds a dashboard sign-in lasts (default 43200: 12 hours)",
    )
    serve.add_argument(
        "--signin-attempts-per-minute",
        type=_positive_int,
        default=10,
        help="failed dashboard sign-ins allowed per client address and minute (default 10)",
    )
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")

    prune = sub.add_parser(
        "prune",
        help="delete sessions older than a given age, with all their data",
        description="Delete whole sessions (events, tags, agents, error reports) that ended, "
        "or if they never ended started, before the given age; 500 sessions per round, in "
        "short transactions, so a collector on the same database keeps serving.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=_age,
        metavar="AGE",
        help="age such as 30d, 12h, 90m or 3600s (a bare number is days)",
    )
    prune.add_argument("--database", default=_database_default())
    prune.add_argument("--chunk", type=int, default=500, help="sessions per round (default 500)")
    prune.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: rebuild the file afterwards (VACUUM), once, to make a database from an "
        "older version give space back; stop the collectors writing to it first",
    )

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a project and print its new API key")
    create.add_argument("name", help="project name")
    add = keys_sub.add_parser("add", help="print a new API key for an existing project")
    add.add_argument("project_id", help="the project's id (see `keys list`)")
    revoke = keys_sub.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("api_key", help="the key to revoke")
    keys_sub.add_parser("list", help="list projects and their key counts")
    for cmd in keys_sub.choices.values():
        cmd.add_argument("--database", default=_database_default())

    sessions = sub.add_parser("sessions", help="look at stored sessions")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    for name, help_text in (
        ("list", "list sessions, newest first"),
        ("show", "one session"),
        (
            "overview",
            "a project's sessions per day by state, failure rate, cost per day and by model, "
            "slowest tools and most expensive sessions",
        ),
    ):
        cmd = sessions_sub.add_parser(name, help=help_text)
        if name == "show":
            cmd.add_argument("session_id")
            cmd.add_argument("--events", action="store_true", help="also print its events")
        elif name == "overview":
            cmd.add_argument(
                "--days", type=int, default=30, help="the last N UTC days, today included (30)"
            )
            cmd.add_argument("--since", help="start (ISO 8601 date or time, UTC) instead of --days")
            cmd.add_argument("--until", help="end (excluded; ISO 8601, UTC; default: tomorrow)")
        else:
            cmd.add_argument("--tag")
            cmd.add_argument("--state", help="running, succeeded, failed or indeterminate")
            cmd.add_argument("--limit", type=int, default=50)
        cmd.add_argument("--json", action="store_true", help="print JSON")
        source = cmd.add_mutually_exclusive_group()
        source.add_argument("--endpoint", help="read through a running collector's read API")
        source.add_argument("--database", help="read a database directly (default)")
        cmd.add_argument(
            "--api-key",
            default=os.environ.get("AGENTOPS_API_KEY"),
            help="project key (needed with --endpoint; with --database it limits to that project)",
        )

    demo = sub.add_parser("demo", help="run an embedded collector and a sample agent workload")
    demo.add_argument("--database", help="SQLite file (default: a new file in a temp dir)")
    demo.add_argument("--sessions", type=int, default=20, help="concurrent agent sessions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "keys":
            return asyncio.run(_keys(args))
        if args.command == "sessions":
            return asyncio.run(_sessions(args))
        if args.command == "prune":
            return asyncio.run(_prune(args))
        from ._demo import run_demo

        status: int = asyncio.run(run_demo(database=args.database, sessions=args.sessions))
        return status
    except KeyboardInterrupt:
        return 130
    except _CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class _CliError(Exception):
    pass


# --- serve ---------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_serve_async(args))


async def _serve_async(args: argparse.Namespace) -> int:
    from .collector import Collector, PriceTable
    from .collector._storage import is_postgres_dsn

    try:
        prices = PriceTable.from_file(args.prices) if args.prices else None
    except (OSError, ValueError) as exc:
        raise _CliError(f"--prices {args.prices}: {exc}") from None
    if args.pool_size is not None and not is_postgres_dsn(args.database):
        raise _CliError("--pool-size: only for a PostgreSQL --database (SQLite has no pool)")
    if args.pg_synchronous_commit == "off" and not is_postgres_dsn(args.database):
        raise _CliError(
            "--pg-synchronous-commit: only for a PostgreSQL --database (SQLite runs its WAL"
            " with synchronous=NORMAL)"
        )
    collector = Collector(
        database=args.database,
        host=args.host,
        port=args.port,
        jwt_expiry=args.jwt_expiry,
        project_token_expiry=args.project_token_expiry,
        prices=prices,
        max_body_size=args.max_body_size,
        admin_token=os.environ.get(_ADMIN_TOKEN_ENV) or None,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        retention_days=args.retention_days,
        retention_interval=args.retention_interval,
        pool_size=args.pool_size,
        pg_synchronous_commit=args.pg_synchronous_commit == "on",
        dashboard_signin_expiry=args.dashboard_signin_expiry,
        signin_attempts_per_minute=args.signin_attempts_per_minute,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await collector.start()
    except Exception as exc:  # a port in use, an unreachable database, ...
        raise _CliError(f"cannot start the collector: {exc}") from None
    # Everything made so far (modules, the app, the pool) lives as long as the process: moved out
    # of the garbage collector's generations, each full collection no longer walks it. Ingest
    # makes a tuple per event, so full collections come every few dozen batches; ~0.2 µs per
    # event of the collector's CPU (benchmarks/README.md). Only here, in the process that is
    # the collector: an embedded Collector leaves its host's collector alone.
    gc.collect()
    gc.freeze()
    try:
        print(f"agentops-async collector listening on {collector.url}", flush=True)
        print(f"dashboard: {collector.url}/ (sign in with a project API key)", flush=True)
        await stop.wait()
    finally:
        await collector.stop()
    return 0


async def _open(database: str) -> Any:
    from .collector import open_storage

    storage = open_storage(database)
    try:
        await storage.open()
    except Exception as exc:
        raise _CliError(f"cannot open the database: {exc}") from None
    return storage


# --- prune ---------------------------------------------------------------------------------

_AGE_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def _age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` or a bare number of days, in seconds."""
    value = text.strip().lower()
    unit = _AGE_UNITS.get(value[-1:])
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or _AGE_UNITS["d"])
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected an age like 30d, 12h, 90m or 3600s: {text!r}")
    return seconds


def _pool_size(text: str) -> int:
    from .collector._storage import pool_size_setting

    try:
        return pool_size_setting(text.strip(), "--pool-size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--pool-size: ")) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0: {text!r}")
    return value


async def _prune(args: argparse.Namespace) -> int:
    from .collector import prune

    if args.chunk < 1:
        raise _CliError("--chunk: expected a number of sessions >= 1")
    database = args.database
    if "://" not in database and not _exists(database):
        raise _CliError(f"no database at {database!r} (use --database)")
    storage = await _open(database)
    try:
        pruned = await prune(storage, args.older_than, chunk=args.chunk)
        print(f"deleted {pruned.sessions} sessions ({pruned.events} events)")
        if args.vacuum:
            vacuum = getattr(storage, "vacuum", None)
            if vacuum is None:
                raise _CliError("--vacuum is for SQLite files (PostgreSQL: see docs/collector.md)")
            await vacuum()
            print("vacuumed: the file now gives space back after each prune", file=sys.stderr)
    finally:
        await storage.close()
    return 0


# --- keys ----------------------------------------------------------------------------------


async def _keys(args: argparse.Namespace) -> int:
    from .collector._auth import hash_key, new_key, new_project

    storage = await _open(args.database)
    try:
        if args.keys_command == "create":
            project_id, api_key = await new_project(storage, args.name)
            print(api_key)
            print(f"project {args.name!r} ({project_id}) in {args.database}", file=sys.stderr)
        elif args.keys_command == "add":
            added = await new_key(storage, args.project_id)
            if added is None:
                raise _CliError(f"no project {args.project_id!r}: see `agentops-async keys list`")
            print(added)
        elif args.keys_command == "revoke":
            project_id = await storage.revoke_key(hash_key(args.api_key.strip()))
            if project_id is None:
                raise _CliError("no live API key like that (unknown, or revoked already)")
            print(
                f"revoked (project {project_id}); running collectors refuse it within seconds",
                file=sys.stderr,
            )
        else:
            for project in await storage.list_projects():
                print(
                    f"{project.id}  {project.name}  keys: {project.live_keys} live, "
                    f"{project.revoked_keys} revoked"
                )
    finally:
        await storage.close()
    return 0


# --- sessions ------------------------------------------------------------------------------


async def _sessions(args: argparse.Namespace) -> int:
    if args.endpoint:
        if not args.api_key:
            raise _CliError("--endpoint needs --api-key (or AGENTOPS_API_KEY)")
        return await _sessions_http(args)
    return await _sessions_db(args)


async def _sessions_http(args: argparse.Namespace) -> int:
    import aiohttp

    base = args.endpoint.rstrip("/")
    headers = {"X-Agentops-Api-Key": args.api_key}
    async with aiohttp.ClientSession(headers=headers) as http:
        if args.sessions_command == "overview":
            since, until = _overview_range(args)
            data = await _get_json(
                http, f"{base}/api/overview", {"since": repr(since), "until": repr(until)}
            )
            return _print_overview(data, args.json)
        if args.sessions_command == "list":
            params = {"limit": str(args.limit)}
            if args.tag:
                params["tag"] = args.tag
            if args.state:
                params["state"] = args.state
            data = await _get_json(http, f"{base}/api/sessions", params)
            return _print_sessions(data["sessions"], args.json)
        session = await _get_json(http, f"{base}/api/sessions/{args.session_id}", {})
        events = None
        if args.events:
            events = await _get_json(
                http, f"{base}/api/sessions/{args.session_id}/events", {"limit": "1000"}
            )
        return _print_session(session, events["events"] if events else None, args.json)


async def _get_json(http: Any, url: str, params: dict[str, str]) -> Any:
    async with http.get(url, params=params) as response:
        data = await response.json(content_type=None)
        if response.status != 200:
            raise _CliError(f"{response.status}: {data.get('message', data)}")
        return data


async def _sessions_db(args: argparse.Namespace) -> int:
    from .collector import PriceTable
    from .collector._auth import hash_key
    from .collector._http import canonical_uuid
    from .collector._reads import STATE_FILTERS, list_session_views, session_views
    from .collector._storage import SessionFilter

    database = args.database or _database_default()
    if "://" not in database and not _exists(database):
        raise _CliError(f"no database at {database!r} (use --database or --endpoint)")
    storage = await _open(database)
    try:
        project = None
        if args.api_key:
            project = await storage.project_for_key(hash_key(args.api_key))
            if project is None:
                raise _CliError("unknown API key for this database")
        prices = PriceTable()
        if args.sessions_command == "overview":
            from .collector._overview import build_overview

            if project is None:
                project = await _only_project(storage)
            since, until = _overview_range(args)
            overview = await build_overview(storage, prices, project, since, until)
            return _print_overview(msgspec.to_builtins(overview), args.json)
        if args.sessions_command == "list":
            state = None
            if args.state:
                state = STATE_FILTERS.get(args.state.lower())
                if state is None:
                    raise _CliError(f"--state: one of {', '.join(sorted(STATE_FILTERS))}")
            flt = SessionFilter(project_id=project, tag=args.tag, state=state, limit=args.limit)
            views, _ = await list_session_views(storage, prices, flt)
            return _print_sessions([v.to_dict() for v in views], args.json)
        try:
            session_id = canonical_uuid(args.session_id, "session id")
        except Exception:
            raise _CliError(f"not a session id: {args.session_id!r}") from None
        row = await storage.get_session(session_id)
        if row is None or (project is not None and row.project_id != project):
            raise _CliError(f"session {session_id} not found")
        (view,) = await session_views(storage, prices, [row])
        events = None
        if args.events:
            page = await storage.list_events(session_id, None, 1000, None)
            events = [msgspec.json.decode(data) for _, data in page]
        return _print_session(view.to_dict(), events, args.json)
    finally:
        await storage.close()


async def _only_project(storage: Any) -> str:
    projects = await storage.list_projects()
    if len(projects) != 1:
        raise _CliError(
            f"--api-key: this database has {len(projects)} projects; give the key of the one "
            "to sum up"
        )
    return str(projects[0].id)


def _overview_range(args: argparse.Namespace) -> tuple[float, float]:
    from .collector._http import HttpError, time_param
    from .collector._overview import InvalidRange, overview_range

    now = time.time()
    try:
        since = time_param(args.since, "--since")
        until = time_param(args.until, "--until")
        if since is None:
            if not 1 <= args.days <= 366:
                raise _CliError("--days: expected 1..366")
            end = until if until is not None else (now // 86400 + 1) * 86400
            since = end - args.days * 86400
        return overview_range(since, until, now)
    except (HttpError, InvalidRange) as exc:
        raise _CliError(str(getattr(exc, "message", exc))) from None


def _print_overview(data: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(msgspec.json.format(msgspec.json.encode(data)).decode())
    else:
        print(_render_overview(data))
    return 0


def _rate(value: object) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"  # type: ignore[arg-type]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append(empty)
    return lines


def _render_overview(data: dict[str, Any]) -> str:
    """A plain-text view of an overview (as ``GET /api/overview`` returns it)."""
    states = ("SUCCEEDED", "FAILED", "INDETERMINATE", "RUNNING")
    by_state = data["by_state"]
    lines = [
        f"{data['since'][:10]} .. {data['until'][:10]} (UTC, until excluded): "
        f"{data['sessions']} sessions, "
        + ", ".join(f"{by_state.get(s, 0)} {s.lower()}" for s in states)
        + f"; failure rate {_rate(data['failure_rate'])}; cost ${data['cost']}",
        "",
    ]
    days = [
        (
            d["date"],
            str(d["sessions"]),
            *(str(d["by_state"].get(s, 0)) for s in states),
            _rate(d["failure_rate"]),
            d["cost"],
        )
        for d in data["days"]
        if d["sessions"]
    ]
    header = ("day", "sessions", "succeeded", "failed", "indeterminate", "running", "failed %")
    lines += _text_table((*header, "cost $"), days, "(no sessions)")
    models = [
        (
            m["model"] or "(no model)",
            str(m["calls"]),
            str(m["prompt_tokens"]),
            str(m["completion_tokens"]),
            m["cost"],
        )
        for m in data["cost_by_model"]
    ]
    lines += ["", "cost by model:"]
    lines += _text_table(("model", "calls", "prompt", "completion", "cost $"), models, "(none)")
    tools = [
        (
            t["name"] or "(no name)",
            str(t["calls"]),
            "-" if t["mean_s"] is None else f"{t['mean_s']:.3f}s",
            "-" if t["max_s"] is None else f"{t['max_s']:.3f}s",
        )
        for t in data["slowest_tools"]
    ]
    lines += ["", "slowest tools:"]
    lines += _text_table(("tool", "calls", "mean", "max"), tools, "(none)")
    costly = [
        (
            s["id"],
            s["state"],
            ",".join(s["tags"]) or "-",
            (s["init_timestamp"] or "-")[:19],
            s["cost"],
        )
        for s in data["costliest_sessions"]
    ]
    lines += ["", "most expensive sessions:"]
    lines += _text_table(("session", "state", "tags", "start", "cost $"), costly, "(none)")
    return "\n".join(lines)


def _exists(path: str) -> bool:
    return path == ":memory:" or os.path.exists(path)


def _print_sessions(sessions: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(msgspec.json.format(msgspec.json.encode(sessions)).decode())
    else:
        print(render_sessions_table(sessions))
    return 0


def _print_session(
    session: dict[str, Any], events: list[dict[str, Any]] | None, as_json: bool
) -> int:
    if as_json:
        data = dict(session, events=events) if events is not None else session
        print(msgspec.json.format(msgspec.json.encode(data)).decode())
        return 0
    print(render_sessions_table([session]))
    if session.get("end_state_reason"):
        print(f"\nend_state_reason: {session['end_state_reason']}")
    for event in events or []:
        label = event.get("name") or event.get("action_type") or event.get("model") or ""
        error = event.get("error_type") or ""
        print(
            f"  {event.get('init_timestamp', '')}  {event.get('event_type', '?'):8} {label}{error}"
        )
    return 0


def _format_counts(counts: dict[str, int]) -> str:
    return " ".join(f"{name}={n}" for name, n in sorted(counts.items())) or "-"


def _format_cost(cost: object) -> str:
    try:
        return f"{Decimal(str(cost)):.6f}"
    except (InvalidOperation, ValueError):
        return str(cost)


def render_sessions_table(sessions: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of session views (as the read API returns them)."""
    header = ("session", "state", "tags", "events by type", "duration", "cost $")
    rows = [
        (
            str(s["id"]),
            str(s["state"]),
            ",".join(s.get("tags") or []) or "-",
            _format_counts(s.get("event_counts") or {}),
            "-" if s.get("duration_s") is None else f"{s['duration_s']:.3f}s",
            _format_cost(s.get("token_cost")),
        )
        for s in sessions
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)
