"""A catch-all HTTP server on 127.0.0.1 that relays requests upstream: the base of the test
proxies (the fault-injecting proxy, the round-robin balancer)."""

from __future__ import annotations

from typing import TypeVar

import aiohttp
from aiohttp import web

_R = TypeVar("_R", bound="LoopbackRelay")


class LoopbackRelay:
    """Serves every path with :meth:`_handle` on a free loopback port; ``self._http`` is the
    client session for the upstream calls. Use ``await relay.start()`` and ``await relay.stop()``.
    """

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self: _R) -> _R:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError
