"""A round-robin load balancer for tests: several collectors behind one URL, no stickiness.

Each request goes to the next collector in turn, except that a session's request never goes to
the collector that served that session's previous request: every hop of a session (create,
events, re-authorisation, end, the next page of a read) lands on another process, so a test
proves the collectors share everything through the database and nothing through memory.

Every forwarded request is logged as a :class:`Hop` (which call, which session, which collector,
what it answered), and the collector that issued each session token is remembered, so a test can
count the tokens accepted by a collector that did not issue them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from .relay import LoopbackRelay

_FORWARDED_HEADERS = ("content-type", "authorization", "x-agentops-api-key", "accept")


@dataclasses.dataclass(frozen=True)
class Hop:
    """One request through the balancer.

    Attributes:
        call: The path without its query (``/v2/create_events``, ``/api/sessions/<id>/events``).
        session_id: The session it is about (from the token, the body or the path), or "".
        upstream: Index of the collector that served it.
        status: What that collector answered.
        issuer: For a request with a session token, the collector that issued the token (-1
            when it was not issued through this balancer).
        message: The ``message`` of an error answer, else "".
    """

    call: str
    session_id: str
    upstream: int
    status: int
    issuer: int = -1
    message: str = ""


class RoundRobinBalancer(LoopbackRelay):
    """Forwards each request to the next of ``upstreams`` (see the module docstring)."""

    def __init__(self, upstreams: Sequence[str]) -> None:
        super().__init__()
        if len(upstreams) < 2:
            raise ValueError("a balancer needs two collectors or more")
        self.upstreams = list(upstreams)
        self.hops: list[Hop] = []
        self.token_issuer: dict[str, int] = {}  # session token -> the collector that issued it
        self._next = 0
        self._last_for_session: dict[str, int] = {}

    def hops_of(self, session_id: str) -> list[Hop]:
        """The requests about one session, in the order they were answered."""
        return [hop for hop in self.hops if hop.session_id == session_id]

    def _choose(self, session_id: str) -> int:
        """The next collector in turn, skipping the one this session used last."""
        index = self._next % len(self.upstreams)
        if session_id and self._last_for_session.get(session_id) == index:
            index = (index + 1) % len(self.upstreams)
        self._next = index + 1
        if session_id:
            self._last_for_session[session_id] = index
        return index

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        body = await request.read()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        session_id = _session_of(request.path, token, body)
        upstream = self._choose(session_id)
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS}
        try:
            async with self._http.request(
                request.method,
                self.upstreams[upstream] + request.path_qs,
                data=body,
                headers=headers,
            ) as answer:
                status, payload = answer.status, await answer.read()
                content_type = answer.headers.get("Content-Type", "application/json")
                retry_after = answer.headers.get("Retry-After")
        except aiohttp.ClientError:
            status, payload, content_type, retry_after = 502, b"{}", "application/json", None
        decoded = _json(payload)
        if status == 200 and isinstance(decoded, dict) and "jwt" in decoded:
            self.token_issuer[str(decoded["jwt"])] = upstream
        message = str(decoded.get("message", "")) if isinstance(decoded, dict) else ""
        self.hops.append(
            Hop(
                call=request.path,
                session_id=session_id,
                upstream=upstream,
                status=status,
                issuer=self.token_issuer.get(token, -1) if token else -1,
                message=message if status >= 400 else "",
            )
        )
        kept = {"Content-Type": content_type}
        if retry_after is not None:
            kept["Retry-After"] = retry_after
        return web.Response(status=status, body=payload, headers=kept)


def _session_of(path: str, token: str, body: bytes) -> str:
    """The session a request is about: the token's claim, the body's id, or the read path's."""
    if path.startswith("/api/sessions/"):
        return path.split("/")[3]
    if token.count(".") == 2:  # a session JWT: its claims are readable without the key
        claims = None
        with contextlib.suppress(ValueError):  # binascii.Error: not base64 after all
            claims = _json(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        if isinstance(claims, dict) and claims.get("session_id"):
            return str(claims["session_id"])
    decoded = _json(body)
    if isinstance(decoded, dict):
        session = decoded.get("session")
        if isinstance(session, dict) and session.get("session_id"):
            return str(session["session_id"])
        if decoded.get("session_id"):
            return str(decoded["session_id"])
    return ""


def _json(raw: bytes) -> object:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        return json.loads(raw)
    return None
