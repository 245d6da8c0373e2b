"""AsyncClient: configuration, and the exporter it runs on the current event loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import msgspec

from ._config import Config, load_config
from .api._client import ApiClient
from .errors import ConfigError
from .session._session import AsyncSession
from .telemetry._exporter import Exporter, ExportStats, NullExporter

log = logging.getLogger("agentops_async")

_disabled_warned = False


class AsyncClient:
    """The entry point of the async SDK: configuration plus one exporter on one event loop.

    Settings come from keyword arguments, then environment variables (``AGENTOPS_API_KEY``,
    ``AGENTOPS_API_ENDPOINT``, ...), then defaults; see :class:`~agentops_async.Config` for all of
    them. Without an API key (or with ``enabled=False``) the client is disabled and every call is a
    cheap no-op.

    The exporter task and HTTP session start lazily on first use, on the running loop; a client
    serves one event loop at a time (use one client per loop, or the sync facade).

    Example:
        >>> async def main() -> None:
        ...     async with AsyncClient(api_key="...", endpoint="http://127.0.0.1:8000") as client:
        ...         async with client.session(tags=["planner"]) as session:
        ...             await session.record(ActionEvent(action_type="search"))
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint: str | None = None,
        parent_key: str | None = None,
        enabled: bool | None = None,
        default_tags: Iterable[str] | None = None,
        **settings: Any,
    ) -> None:
        overrides: dict[str, Any] = {
            "api_key": api_key,
            "endpoint": endpoint,
            "parent_key": parent_key,
            "enabled": enabled,
            "default_tags": list(default_tags) if default_tags is not None else None,
            **settings,
        }
        self.config: Config = load_config(overrides)
        self._exporter: Exporter | NullExporter | None = None
        self._last: Exporter | NullExporter | None = None  # the exporter closed last
        self._lock = threading.Lock()
        if not self.config.active:
            _warn_disabled(self.config)

    def __repr__(self) -> str:
        return (
            f"AsyncClient(endpoint={self.config.endpoint!r}, active={self.config.active}, "
            f"api_key={'<set>' if self.config.api_key else None})"
        )

    # -- sessions ---------------------------------------------------------------------------------
    def session(
        self,
        *,
        tags: Iterable[str] | str | None = None,
        session_id: str | None = None,
        video: str | None = None,
    ) -> AsyncSession:
        """A new session on this client, to use with ``async with`` (or ``await s.start()``)."""
        return AsyncSession(tags=tags, client=self, session_id=session_id, video=video)

    async def start_session(
        self, tags: Iterable[str] | str | None = None, *, session_id: str | None = None
    ) -> AsyncSession:
        """Start and return a new session (end it with ``await session.end(...)``)."""
        return await self.session(tags=tags, session_id=session_id).start()

    # -- delivery ---------------------------------------------------------------------------------
    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is acknowledged; False if ``timeout`` passed."""
        if self._exporter is None:
            if not (self.config.spool_dir and self.config.active):
                return True
            self._exporter_for_running_loop()  # replays what an earlier process spooled
        assert self._exporter is not None
        limit = self.config.shutdown_timeout if timeout is None else timeout
        return await self._exporter.flush(limit)

    async def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (bounded by ``timeout``), stop the exporter, close HTTP.

        Returns:
            True when every event recorded before the call was resolved within ``timeout``:
            delivered (acknowledged by the API), dropped earlier for a reason counted in
            :attr:`stats` (queue full, refused by the API...), or, with ``spool_dir``, kept on
            disk for the next process. It does not mean that everything arrived: check
            ``stats.dropped``. False when the timeout cut some events (counted as dropped).

        The client can be used again afterwards (it starts a new exporter).
        """
        exporter, self._exporter = self._exporter, None
        if exporter is None:
            return True
        limit = self.config.shutdown_timeout if timeout is None else timeout
        self._last = exporter
        return await exporter.close(limit)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def stats(self) -> ExportStats:
        """Counters of the exporter: queued, delivered, dropped (by reason), pending."""
        exporter = self._exporter or self._last or NullExporter()
        return exporter.stats()

    # -- internals --------------------------------------------------------------------------------
    def _reset_after_fork(self) -> None:
        """In a forked child: forget the parent's exporter (its buffer is the parent's) with no
        I/O. The child runs without the disk spool: the directory belongs to the parent."""
        self._exporter = None
        self._last = None
        if self.config.spool_dir:
            self.config = msgspec.structs.replace(self.config, spool_dir=None)
            log.warning("agentops_async: forked child: the disk spool is off in this process")

    def _exporter_for_running_loop(self) -> Exporter | NullExporter:
        loop = asyncio.get_running_loop()
        with self._lock:
            exporter = self._exporter
            if isinstance(exporter, Exporter) and exporter.loop is not loop:
                if not exporter.loop.is_closed():
                    raise ConfigError(
                        "this AsyncClient already runs on another event loop: make one client per "
                        "loop, or close it there first (await client.close())"
                    )
                exporter = None  # its loop is gone; nothing more can be sent through it
            if exporter is None:
                if self.config.active:
                    exporter = Exporter(self.config, loop, ApiClient(self.config))
                    exporter.start()
                else:
                    exporter = NullExporter()
                self._exporter = exporter
            return exporter


def _warn_disabled(config: Config) -> None:
    global _disabled_warned
    if _disabled_warned:
        return
    _disabled_warned = True
    if not config.enabled:
        log.info("agentops_async is disabled (enabled=False): nothing will be sent")
    else:
        log.warning(
            "agentops_async: no API key (pass api_key= or set AGENTOPS_API_KEY); sessions and "
            "events are not sent"
        )


_default: AsyncClient | None = None
_default_lock = threading.Lock()


def default_client() -> AsyncClient:
    """The process's default AsyncClient, configured from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = AsyncClient()
        return _default


def set_default_client(client: AsyncClient | None) -> None:
    """Make ``client`` the one that sessions created without ``client=`` use."""
    global _default
    with _default_lock:
        _default = client
