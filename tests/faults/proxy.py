"""A fault-injecting HTTP proxy for tests: sits between the SDK and a real collector on 127.0.0.1.

Rules say what to do to matching requests (by path prefix), for a number of requests or until
disabled: answer a status (5xx, 429 + Retry-After), hang, reset the connection before or after the
request reached the collector, answer slowly, or garble a real answer. When the collector is down
the proxy answers 502, like a gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
from collections import Counter
from typing import Literal

import aiohttp
from aiohttp import web

from .relay import LoopbackRelay

FaultKind = Literal[
    "status", "hang", "reset_before", "reset_after", "slow", "malformed", "expire_jwt"
]


@dataclasses.dataclass
class Fault:
    """One fault rule.

    Attributes:
        kind: What to do (see the module docstring).
        path: Path prefix the rule applies to ("/v2/" for every v2 call).
        times: How many matching requests to affect (None: until removed).
        every: Affect one matching request in ``every`` (1: each one).
        status: The status for ``kind="status"``.
        retry_after: Retry-After header value for ``status`` answers.
        delay: Seconds for ``hang`` (longer than the client's timeout) and ``slow``.
    """

    kind: FaultKind
    path: str = "/v2/"
    times: int | None = None
    every: int = 1
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    seen: int = 0
    applied: int = 0


class FaultProxy(LoopbackRelay):
    """Forwards to ``upstream``, applying the first matching rule to each request."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.rules: list[Fault] = []
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.paths: Counter[str] = Counter()  # requests received, by path
        self.upstream_statuses: Counter[int] = Counter()  # what the collector itself answered
        self.expired_tokens: set[str] = set()  # an expired JWT stays expired, like a real one
        # Tokens just issued by /v2/reauthorize_jwt: a real token does not expire the moment it is
        # issued, so "expire_jwt" leaves them alone (else which request it hits, among several
        # sessions' concurrent ones, could be a retry right after re-authorisation).
        self.fresh_tokens: set[str] = set()
        self._ids = itertools.count()

    def add(self, fault: Fault) -> Fault:
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        self.rules.clear()

    def _match(self, path: str, fresh_token: bool = False) -> Fault | None:
        for rule in self.rules:
            if not path.startswith(rule.path):
                continue
            if rule.kind == "expire_jwt" and fresh_token:
                continue
            if rule.times is not None and rule.applied >= rule.times:
                continue
            rule.seen += 1
            if (rule.seen - 1) % rule.every:
                continue
            rule.applied += 1
            self.injected[rule.kind] += 1
            return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.paths[request.path] += 1
        token = request.headers.get("Authorization", "")
        if token and token in self.expired_tokens:
            return web.json_response({"message": "Expired Token"}, status=401)
        rule = self._match(request.path, fresh_token=token in self.fresh_tokens)
        if rule is not None:
            if rule.kind == "status":
                headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
                return web.json_response(
                    {"message": "injected fault"}, status=rule.status, headers=headers
                )
            if rule.kind == "hang":
                await asyncio.sleep(rule.delay)
                return web.json_response({"message": "too late"}, status=504)
            if rule.kind == "reset_before":
                return self._reset(request)
            if rule.kind == "expire_jwt":
                if token:
                    self.expired_tokens.add(token)
                return web.json_response({"message": "Expired Token"}, status=401)
            if rule.kind == "slow":
                await asyncio.sleep(rule.delay)
        status, payload, headers = await self._forward(request, body)
        if request.path == "/v2/reauthorize_jwt" and status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.fresh_tokens.add("Bearer " + json.loads(payload)["jwt"])
        if rule is not None and rule.kind == "reset_after":
            return self._reset(request)
        if rule is not None and rule.kind == "malformed" and status == 200:
            return web.Response(status=200, body=b"<html>bad gateway</html>")
        return web.Response(status=status, body=payload, headers=headers)

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()  # the client sees the connection drop with no answer
        return web.Response(status=500)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self._http is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "authorization", "x-agentops-api-key", "accept")
        }
        try:
            async with self._http.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers
            ) as answer:
                payload = await answer.read()
                self.forwarded += 1
                self.upstream_statuses[answer.status] += 1
                kept = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
                if "Retry-After" in answer.headers:
                    kept["Retry-After"] = answer.headers["Retry-After"]
                return answer.status, payload, kept
        except aiohttp.ClientError:
            return (
                502,
                b'{"message": "collector unreachable"}',
                {"Content-Type": "application/json"},
            )
