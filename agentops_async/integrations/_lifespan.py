"""The lifespan helper: a client started with the application and closed with a bounded flush."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from .. import _client
from .._client import AsyncClient, set_default_client
from ._asgi import CLIENT_STATE_KEY

AppT = TypeVar("AppT")
Lifespan = Callable[[AppT], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def lifespan(
    app_lifespan: Lifespan[AppT] | None = None,
    *,
    client: AsyncClient | None = None,
    close_timeout: float | None = None,
    make_default: bool = True,
    **settings: Any,
) -> Callable[[AppT], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for FastAPI/Starlette that runs an :class:`~agentops_async.AsyncClient`.

    On startup the client is created (from ``settings`` and the environment, unless ``client``
    is given) and started on the server's event loop (its exporter, and the replay of a disk
    spool); it is put in the lifespan state (where :class:`SessionMiddleware` finds it), on
    ``app.state.agentops_client``, and (``make_default``) made the process's default client.
    On shutdown it is closed: what is pending is delivered within ``close_timeout`` (default:
    the client's ``shutdown_timeout``), and what is not is counted, spooled or logged.

    Args:
        app_lifespan: The application's own lifespan, run inside this one (its state is kept).
        client: A client made beforehand; by default one is made on startup from ``settings``.
        close_timeout: Longest wait for delivery at shutdown.
        make_default: Make the client the default one while the application runs (sessions made
            without ``client=`` use it), and restore the previous default afterwards.
        **settings: Client settings (``api_key=``, ``endpoint=``, ... as for ``AsyncClient``).

    Example:
        >>> @contextlib.asynccontextmanager
        ... async def my_lifespan(app):
        ...     yield {"db": "..."}
        >>> app = FastAPI(lifespan=lifespan(my_lifespan, endpoint="http://127.0.0.1:8000"))
    """
    if client is not None and settings:
        raise TypeError(
            f"lifespan() got client= and client settings {sorted(settings)}: configure the "
            "client you pass, or pass only settings"
        )

    @contextlib.asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[dict[str, Any]]:
        active = client if client is not None else AsyncClient(**settings)
        await active.__aenter__()
        previous = _client._default
        if make_default:
            set_default_client(active)
        app_state = getattr(app, "state", None)
        if app_state is not None:
            app_state.agentops_client = active
        try:
            if app_lifespan is None:
                yield {CLIENT_STATE_KEY: active}
            else:
                async with app_lifespan(app) as inner:
                    yield {**(inner or {}), CLIENT_STATE_KEY: active}
        finally:
            if make_default and _client._default is active:
                set_default_client(previous)
            await active.close(close_timeout)

    return run
