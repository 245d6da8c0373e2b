"""Client: the sync face of an AsyncClient whose exporter runs on the facade's loop thread."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any

from .._client import AsyncClient, set_default_client
from .._config import Config
from ..telemetry._exporter import ExportStats
from . import _runtime as runtime
from ._session import Session


class Client:
    """The entry point of the sync SDK (the seeds' ``Client``).

    It owns an :class:`~agentops_async.AsyncClient`, whose exporter runs on the sync facade's one
    background event-loop thread (shared by every sync client of the process, started on first
    use). Settings are those of :class:`~agentops_async.AsyncClient`: keyword arguments, then
    environment variables, then defaults.

    Example:
        >>> from agentops_async import ActionEvent, Client
        >>> client = Client(api_key="...", endpoint="http://127.0.0.1:8000")
        >>> session = client.start_session(tags=["test"])
        >>> session.record(ActionEvent(action_type="search"))
        >>> session.add_tags(["new_tag"])
        >>> stats = session.end_session(end_state="Success")
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
        self.async_client = AsyncClient(
            api_key,
            endpoint=endpoint,
            parent_key=parent_key,
            enabled=enabled,
            default_tags=default_tags,
            **settings,
        )
        runtime.add_client(self)

    def __repr__(self) -> str:
        config = self.config
        return (
            f"Client(endpoint={config.endpoint!r}, active={config.active}, "
            f"api_key={'<set>' if config.api_key else None})"
        )

    @property
    def config(self) -> Config:
        """The client's settings."""
        return self.async_client.config

    # -- sessions ---------------------------------------------------------------------------------
    def session(
        self,
        tags: Iterable[str] | str | None = None,
        *,
        session_id: str | uuid.UUID | None = None,
        video: str | None = None,
    ) -> Session:
        """A new, not yet started session on this client (``with client.session() as s:``)."""
        return Session(tags, client=self, session_id=session_id, video=video)

    def start_session(
        self,
        tags: Iterable[str] | str | None = None,
        *,
        session_id: str | uuid.UUID | None = None,
        video: str | None = None,
    ) -> Session:
        """Start and return a new session, current in this thread (end it with ``end_session``)."""
        return self.session(tags, session_id=session_id, video=video).start()

    # -- delivery ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is acknowledged; False if ``timeout`` passed."""
        if not runtime.started():
            return True
        done: bool = runtime.call(self.async_client.flush, timeout, what="Client.flush()")
        return done

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (bounded by ``timeout``), stop the exporter, close HTTP.

        The client can be used again afterwards. Exit does this for every client.

        Returns:
            What :meth:`AsyncClient.close` returns: True when every event recorded before the
            call was resolved in time (delivered, dropped earlier for a counted reason, or
            spooled), which is not the same as delivered: check ``stats.dropped``.
        """
        if not runtime.started():
            return True
        done: bool = runtime.call(self.async_client.close, timeout, what="Client.close()")
        return done

    @property
    def stats(self) -> ExportStats:
        """Counters of the exporter: queued, delivered, dropped (by reason), pending."""
        return self.async_client.stats

    # -- internals --------------------------------------------------------------------------------
    def _forget_exporter_after_fork(self) -> None:
        """In a forked child: drop the parent's exporter (and its buffer) without any I/O."""
        self.async_client._reset_after_fork()


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The default sync client: the one :func:`init` made, else one from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def init(
    api_key: str | None = None,
    *,
    endpoint: str | None = None,
    parent_key: str | None = None,
    enabled: bool | None = None,
    default_tags: Iterable[str] | None = None,
    auto_start_session: bool = False,
    tags: Iterable[str] | str | None = None,
    **settings: Any,
) -> Client:
    """Configure agentops_async for this process (the seeds' ``agentops.init``).

    Makes the default sync :class:`Client` (used by ``Session()`` and the module-level helpers)
    and, with the same settings, the default :class:`~agentops_async.AsyncClient` (used by
    ``AsyncSession()`` in async code), so both worlds send to the same place.

    Args:
        api_key: Project API key (else ``AGENTOPS_API_KEY``).
        endpoint: API base URL (else ``AGENTOPS_API_ENDPOINT``, else the AgentOps service).
        parent_key: Optional parent project key.
        enabled: False makes everything a cheap no-op.
        default_tags: Tags added to every session.
        auto_start_session: Also start a session now (current in this thread); reach it with
            ``agentops_async.sync.get_current_session()``.
        tags: Tags of that session.
        **settings: Any other :class:`~agentops_async.Config` setting.

    Returns:
        The default sync client.

    Example:
        >>> import agentops_async
        >>> client = agentops_async.init(api_key="...", endpoint="http://127.0.0.1:8000")
    """
    global _default
    options: dict[str, Any] = {
        "endpoint": endpoint,
        "parent_key": parent_key,
        "enabled": enabled,
        "default_tags": default_tags,
        **settings,
    }
    client = Client(api_key, **options)
    with _default_lock:
        _default = client
    set_default_client(AsyncClient(api_key, **options))
    if auto_start_session:
        client.start_session(tags)
    return client
