"""AsyncClient: configuration, and the exporter it runs on the current event loop."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401 - imported before our exit hook is registered
import contextlib
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import msgspec

from ._config import Config, load_config
from .errors import ConfigError
from .session._session import AsyncSession
from .telemetry._exporter import Exporter, ExportStats, NullExporter
from .telemetry._memory import MemoryTarget, active_capture
from .telemetry._targets import ExportTarget, check_target, make_target

log = logging.getLogger("agentops_async")

_disabled_warned = False


class AsyncClient:
    """The entry point of the async SDK: configuration plus one exporter on one event loop.

    Settings come from keyword arguments, then environment variables (``AGENTOPS_API_KEY``,
    ``AGENTOPS_API_ENDPOINT``, ...), then defaults; see :class:`~agentops_async.Config` for all of
    them. Without an API key (or with ``enabled=False``) the client is disabled and every call is a
    cheap no-op.

    The exporter task and HTTP session start on first use on the running loop (``async with
    client``, ``flush()``, a session's start), and so does the replay of a disk spool. A client
    serves one event loop at a time (use one client per loop, or the sync facade). Used again
    after its loop has closed without ``close()`` (e.g. across ``asyncio.run()`` calls), it
    carries what it still held over to the new loop and delivers it there. A client that is
    never closed is closed at interpreter exit, bounded by ``shutdown_timeout``.

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
        # Inside ``agentops_async.testing.capture_events()``: deliver to memory, key or not.
        self._capture = active_capture()
        if self._capture is not None:
            self._capture._clients.append(self)
        if not self._delivers:
            _warn_disabled(self.config)
        elif self._capture is None:
            check_target(self.config)  # protocol="otlp" without its target fails here, clearly
        if self._delivers and self.config.instrument_llm_calls:
            from .telemetry._instrument import instrument

            instrument(client=self)

    @property
    def _delivers(self) -> bool:
        """True when sessions are really exported (to the API, or to a capture)."""
        return self.config.active or (self._capture is not None and self.config.enabled)

    def _make_target(self) -> ExportTarget:
        if self._capture is not None:
            return MemoryTarget(self._capture)
        return make_target(self.config)

    async def _flush_if_on_this_loop(self) -> None:
        """Flush when this client's exporter runs on the running loop (capture_events)."""
        exporter = self._exporter
        if isinstance(exporter, Exporter) and exporter.loop is asyncio.get_running_loop():
            await exporter.flush(self.config.shutdown_timeout)

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
        flush_on_exit: bool = True,
    ) -> AsyncSession:
        """A new session on this client, to use with ``async with`` (or ``await s.start()``).

        ``flush_on_exit=False`` makes leaving the block return at once (services: see
        :class:`~agentops_async.AsyncSession`); by default it waits for this session's events.
        """
        return AsyncSession(
            tags=tags,
            client=self,
            session_id=session_id,
            video=video,
            flush_on_exit=flush_on_exit,
        )

    async def start_session(
        self, tags: Iterable[str] | str | None = None, *, session_id: str | None = None
    ) -> AsyncSession:
        """Start and return a new session (end it with ``await session.end(...)``)."""
        return await self.session(tags=tags, session_id=session_id).start()

    # -- delivery ---------------------------------------------------------------------------------
    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is resolved; False if ``timeout`` passed.

        Resolved means acknowledged by the API or counted as dropped (see :attr:`stats`).
        """
        if self._exporter is None:
            if not (self.config.spool_dir and self._delivers):
                return True
            self._exporter_for_running_loop()  # replays what an earlier process spooled
        assert self._exporter is not None
        limit = self.config.shutdown_timeout if timeout is None else timeout
        return await self._exporter.flush(limit)

    async def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (bounded by ``timeout``), stop the exporter, close HTTP.

        What cannot be delivered in time is counted as dropped, or written to the disk spool
        when ``spool_dir`` is set, and summed up in one log line (a WARNING for what is lost, an
        INFO line for what went to the spool).

        Returns:
            True when everything recorded before the call was resolved within ``timeout`` (each
            event acknowledged by the API, or dropped earlier and counted in :attr:`stats`) and
            close() itself had to drop or spool nothing. True does not mean "nothing was ever
            dropped": check ``stats.dropped`` for that. False: :attr:`stats` says what and why
            (``dropped_by_reason``, ``ops_dropped``, ``sessions_not_ended``, ``spooled``). The
            client can be used again afterwards (it starts a new exporter, with new counters).
        """
        exporter = self._exporter
        if isinstance(exporter, Exporter) and exporter.loop.is_closed():
            self._exporter_for_running_loop()  # what its closed loop left is delivered from here
        exporter, self._exporter = self._exporter, None
        _open_clients.discard(self)
        if exporter is None:
            return True
        limit = self.config.shutdown_timeout if timeout is None else timeout
        self._last = exporter
        return await exporter.close(limit)

    async def __aenter__(self) -> AsyncClient:
        if self._delivers:
            self._exporter_for_running_loop()  # starts delivery, and the replay of a spool
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
        _open_clients.discard(self)
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
                exporter.reattach(loop)  # its loop is gone: what it held is sent from this one
            if exporter is None:
                if self._delivers:
                    exporter = Exporter(self.config, loop, self._make_target())
                    exporter.start()
                    _open_clients.add(self)
                else:
                    exporter = NullExporter()
                self._exporter = exporter
            return exporter

    def _close_at_exit(self, last_chance: bool) -> None:
        """Interpreter exit: close this client if it is open, bounded by shutdown_timeout.

        By now ``asyncio.run()`` has typically closed the loop the client ran on; what it still
        holds is in memory, so it is delivered from a fresh, short-lived loop (or spooled, or
        counted and logged by close()). A loop still running in another thread is left to its
        owner (the sync facade closes its own clients), and only reported at the ``last_chance``.
        """
        exporter = self._exporter
        if not isinstance(exporter, Exporter) or exporter.closed:
            return
        loop = exporter.loop
        if loop.is_running():
            # It runs in another thread: touching it from here is not safe.
            if not last_chance:
                return
            pending = exporter.stats().pending
            if pending:
                log.warning(
                    "agentops_async: at exit, %d item(s) are pending on an event loop still "
                    "running in another thread: they are lost; close the client on that loop "
                    "(await client.close()) before the process exits",
                    pending,
                )
            return
        close = self.close(self.config.shutdown_timeout)
        try:
            if loop.is_closed():
                asyncio.run(close)
            else:  # stopped but not closed: the task is still there, finish on that loop
                loop.run_until_complete(close)
        except Exception:
            close.close()  # when it never ran (no warning about a coroutine never awaited)
            log.exception("agentops_async: could not close the client at exit")


# Clients with a running exporter, to close at interpreter exit; close() takes them off. Held
# strongly: a client the application dropped without closing may still hold events.
_open_clients: set[AsyncClient] = set()


def _close_open_clients_at_main_exit() -> None:
    """Close every client that was not closed (the default one above all: nobody else can)."""
    for client in list(_open_clients):
        client._close_at_exit(last_chance=False)


def _close_open_clients_at_exit() -> None:
    """What the first hook could not close (loops running in threads until now)."""
    for client in list(_open_clients):
        client._close_at_exit(last_chance=True)


# The first hook runs when the main thread finishes, before concurrent.futures shuts its thread
# pools down (asyncio resolves host names in one: later, connecting to a named host fails).
# Registered after concurrent.futures.thread's own hook (imported above), so it runs before it.
_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    with contextlib.suppress(RuntimeError):  # imported while the interpreter shuts down
        _register_thread_exit(_close_open_clients_at_main_exit)
# The second, at interpreter exit. Registered at import, so it runs after the sync facade's exit
# hooks (registered later; atexit runs hooks in reverse order), which close the sync clients.
atexit.register(_close_open_clients_at_exit)


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


def _swap_default(client: AsyncClient | None) -> AsyncClient | None:
    """Make ``client`` the default client; returns the one it replaces (capture_events)."""
    global _default
    with _default_lock:
        previous, _default = _default, client
        return previous


def set_default_client(client: AsyncClient | None) -> None:
    """Make ``client`` the one that sessions created without ``client=`` use."""
    global _default
    with _default_lock:
        _default = client
