"""What every route module shares about HTTP: error answers, JSON answers, parameters.

Every answer is JSON (the AgentOps clients parse even error bodies). A client's mistake is raised
as :class:`HttpError` (through :func:`fail`) with a message that names the field; the error
middleware of :func:`~agentops_async.collector._app.build_app` turns it into
``{"message": ...}`` with its status.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, NoReturn

import msgspec
from aiohttp import hdrs, web

from .._limits import MAX_NESTING_DEPTH
from . import _wire as wire

__all__ = [
    "DECODE_ERRORS",
    "ID_RULE",
    "ExpectHandler",
    "Handler",
    "HttpError",
    "canonical_uuid",
    "continue_after",
    "decode_error",
    "fail",
    "int_param",
    "json_response",
    "parse_timestamp",
    "time_param",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

ID_RULE = wire.ID_RULE  # ids: 1..MAX_ID_LENGTH characters, no NUL (see there)

# What a body decoder raises on bad input: msgspec's errors, and RecursionError for JSON nested
# deeper than msgspec's recursion limit (~1,000 levels; the documented limit is far below).
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


class HttpError(Exception):
    """An HTTP error answer: ``status`` and ``{"message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fail(status: int, message: str) -> NoReturn:
    """Answer the request with ``status`` and ``{"message": message}``."""
    raise HttpError(status, message)


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` encoded as JSON."""
    return web.Response(body=wire.encode(data), status=status, content_type="application/json")


def decode_error(what: str, exc: Exception) -> NoReturn:
    """The 400 for a body that one of the :data:`DECODE_ERRORS` refused."""
    if isinstance(exc, RecursionError):
        fail(400, f"invalid {what}: nested deeper than {MAX_NESTING_DEPTH} levels")
    fail(400, f"invalid {what}: {exc}")


def canonical_uuid(value: object, what: str) -> str:
    """``value`` as a lowercase hyphenated UUID, or a 400 naming ``what``."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    fail(400, f"{what}: expected a UUID")


def parse_timestamp(value: str | None, what: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp (naive means UTC), or a 400."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        fail(400, f"{what}: not an ISO 8601 timestamp: {value[:40]!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def time_param(value: str | None, what: str) -> float | None:
    """A query parameter holding seconds since the epoch or an ISO 8601 timestamp."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return parse_timestamp(value, what)


def int_param(value: str | None, what: str, default: int, low: int, high: int) -> int:
    """A query parameter holding an integer in ``low..high`` (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        fail(400, f"{what}: expected an integer")
    if not low <= number <= high:
        fail(400, f"{what}: expected {low}..{high}")
    return number


async def _no_check(request: web.Request) -> object:
    return None


def continue_after(
    check: Callable[[web.Request], Awaitable[object]] = _no_check,
) -> ExpectHandler:
    """An ``Expect: 100-continue`` handler that authenticates before the client sends the body.

    A client that waits for ``100 Continue`` (curl does for large bodies) gets the 401 instead,
    so an unauthenticated body is not even sent. Runs outside the middlewares: answers JSON here.
    Without ``check`` (routes without a body), it only answers the ``Expect`` header.
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get(hdrs.EXPECT, "").strip().lower() != "100-continue":
            return json_response({"message": "unsupported Expect header (only 100-continue)"}, 417)
        try:
            await check(request)
        except HttpError as exc:
            return json_response({"message": exc.message}, exc.status)
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer proper has not started
        return None

    return expect
