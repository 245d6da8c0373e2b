"""The embeddable collector: storage + HTTP app + a listening socket, as one async context."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

from aiohttp import web

from ._app import DEFAULT_MAX_BODY_SIZE, CollectorSettings, build_app, new_project, new_secret
from ._jwt import JwtSigner
from ._prices import PriceTable
from ._storage import Storage, open_storage

__all__ = ["Collector"]

log = logging.getLogger("agentops_async")


class Collector:
    """A running collector: the AgentOps v2 API, OTLP ingest and the read API on one port.

    Args:
        database: A SQLite file path (default), ``":memory:"``, or a ``postgresql://`` DSN.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (read it back from :attr:`url`).
        jwt_expiry: Lifetime of session tokens in seconds.
        prices: A price table, or the path of a JSON file overriding the built-in one.
        max_body_size: Largest accepted request body in bytes.
        admin_token: Enables ``POST /admin/projects`` for this token (None: disabled).

    Example:
        >>> async with Collector(database="demo.db", port=0) as collector:
        ...     api_key = await collector.create_project("demo")
        ...     client = agentops_async.AsyncClient(api_key=api_key, endpoint=collector.url)
    """

    def __init__(
        self,
        database: str = "agentops.db",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        jwt_expiry: float = 3600.0,
        prices: PriceTable | str | Path | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        admin_token: str | None = None,
    ) -> None:
        self.database = database
        self.host = host
        self.port = port
        if isinstance(prices, (str, Path)):
            prices = PriceTable.from_file(prices)
        self.settings = CollectorSettings(
            jwt_expiry=jwt_expiry,
            max_body_size=max_body_size,
            prices=prices or PriceTable(),
            admin_token=admin_token,
        )
        self._storage: Storage | None = None
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"Collector(url={self.url!r})" if self._runner else "Collector(<stopped>)"

    @property
    def storage(self) -> Storage:
        """The open storage (raises if the collector is not started)."""
        if self._storage is None:
            raise RuntimeError("the collector is not started")
        return self._storage

    @property
    def url(self) -> str:
        """The base URL clients use as their endpoint, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Open the storage (creating the schema) and start listening."""
        storage = open_storage(self.database)
        await storage.open()
        try:
            secret = await storage.get_secret(new_secret())
            signer = JwtSigner(secret, self.settings.jwt_expiry)
            app = build_app(storage, signer, self.settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.host, self.port)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await storage.close()
            raise
        self._storage, self._runner = storage, runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("collector listening on %s (database: %s)", self.url, _safe_db(self.database))

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests and close the storage."""
        runner, storage = self._runner, self._storage
        self._runner = self._storage = None
        if runner is not None:
            await runner.cleanup()
        if storage is not None:
            await storage.close()

    async def create_project(self, name: str) -> str:
        """Create a project and return its new API key."""
        _, api_key = await new_project(self.storage, name)
        return api_key

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _safe_db(database: str) -> str:
    """The database name for logs, without a DSN password."""
    if "://" in database and "@" in database:
        scheme, rest = database.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return database
