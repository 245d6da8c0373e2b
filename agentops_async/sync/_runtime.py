"""The sync facade's process-wide runtime: one background event loop, and what it serves.

One daemon thread runs an asyncio event loop behind an anyio blocking portal; it starts lazily on
the first blocking call and stays up until interpreter exit. Every sync call that has to run on
the loop (starting or ending a session, flushing, adding tags) goes through :func:`call`;
recording does not (``AsyncSession.record_threadsafe`` hands the event over without waiting).

The runtime also knows the sync clients and the running sync sessions, so that it can

- shut down at interpreter exit (:func:`_flush_at_main_exit`, then :func:`_shutdown_at_exit`):
  deliver pending events, end still-running sessions INDETERMINATE, close the clients, stop the
  loop, all bounded in time;
- reset in a forked child (:func:`_after_fork_in_child`): the child has no loop thread, and the
  parent's buffered events belong to the parent; the child starts a fresh loop on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import concurrent.futures.thread  # see _install_exit_hooks (hook ordering)
import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..errors import AgentOpsError
from ..session import _registry as registry
from ..telemetry._otel import router

if TYPE_CHECKING:
    from ._client import Client
    from ._session import Session

log = logging.getLogger("agentops_async")

T = TypeVar("T")

THREAD_NAME = "agentops_async-loop"
EXIT_REASON = "the process exited without ending the session"


class _Runtime:
    """Mutable process-wide state; replaced wholesale in a forked child."""

    def __init__(self) -> None:
        self.portal: BlockingPortal | None = None
        self.portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self.loop_thread_id: int | None = None
        self.clients: list[Client] = []
        self.sessions: dict[str, Session] = {}
        self.shut_down = False


_rt = _Runtime()
_orphaned: list[_Runtime] = []  # in a forked child: the parent's runtime
_lock = threading.RLock()
_hooks_installed = False


# -- the loop thread ----------------------------------------------------------------------------
def portal() -> BlockingPortal:
    """The portal into the loop thread, started on first use."""
    rt = _rt
    found = rt.portal
    if found is not None:
        return found
    with _lock:
        rt = _rt
        if rt.portal is None:
            if rt.shut_down:
                raise AgentOpsError(
                    "the agentops_async sync runtime has shut down (interpreter exit): "
                    "no new sessions can start"
                )
            _install_exit_hooks()
            cm = start_blocking_portal("asyncio", name=THREAD_NAME)
            started = cm.__enter__()
            rt.loop_thread_id = started.call(threading.get_ident)
            rt.portal_cm = cm
            rt.portal = started
        return rt.portal


def started() -> bool:
    """True when the loop thread is running."""
    return _rt.portal is not None


def in_loop_thread() -> bool:
    """True when the caller runs on the sync facade's own loop thread."""
    return _rt.loop_thread_id == threading.get_ident()


def call(func: Callable[..., Awaitable[T]], *args: Any, what: str) -> T:
    """Run the coroutine function ``func(*args)`` on the loop thread and wait for its result.

    Args:
        func: A coroutine function.
        *args: Its arguments.
        what: The operation, for the error message (e.g. ``"Session.end()"``).

    Raises:
        AgentOpsError: called from the loop thread itself, where waiting would deadlock.
    """
    if in_loop_thread():
        raise AgentOpsError(
            f"{what} cannot block on the agentops_async loop thread (it would wait for itself): "
            "call it from your own thread, or use the AsyncSession API from async code"
        )
    # Run in an empty context: the loop's side must not inherit the caller's contextvars (its
    # current session, its OpenTelemetry span), e.g. a session's root span is a root.
    result: T = contextvars.Context().run(portal().call, func, *args)
    return result


def call_soon_or_now(func: Callable[..., T], *args: Any) -> T:
    """Run a plain function on the loop: directly when already there, else through the portal."""
    if in_loop_thread():
        return func(*args)
    result: T = contextvars.Context().run(portal().call, func, *args)
    return result


# -- what the runtime serves ----------------------------------------------------------------------
def add_client(client: Client) -> None:
    """Remember ``client`` so that it is flushed and closed at exit."""
    with _lock:
        _rt.clients.append(client)


def add_session(session: Session) -> None:
    """Remember a started sync session (ended INDETERMINATE at exit if still running)."""
    with _lock:
        _rt.sessions[session.session_id] = session
    # Run our exit hook before the atexit hooks registered since (LIFO), e.g. an OpenTelemetry
    # TracerProvider's shutdown: ending a root span after it would log "dropping span".
    atexit.unregister(_shutdown_at_exit)
    atexit.register(_shutdown_at_exit)


def remove_session(session: Session) -> None:
    """Forget an ended sync session."""
    with _lock:
        _rt.sessions.pop(session.session_id, None)


def session_for(session_id: str) -> Session | None:
    """The running sync session with this id, if the sync facade started it."""
    return _rt.sessions.get(session_id)


def running_sessions() -> list[Session]:
    """The sync sessions started and not ended, oldest first."""
    with _lock:
        return list(_rt.sessions.values())


# -- interpreter exit ---------------------------------------------------------------------------
def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    # Phase 1 runs when the main thread finishes, before the interpreter joins non-daemon threads
    # and, crucially, before concurrent.futures shuts its executors down (asyncio resolves host
    # names in the default executor: after that, a first connection to a named host would fail).
    # It only delivers what is pending. Registered after concurrent.futures.thread (imported
    # above), so it runs before that module's own hook (the hooks run in reverse order).
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        # RuntimeError: first use after the main thread ended; phase 2 still runs.
        with contextlib.suppress(RuntimeError):
            register(_flush_at_main_exit)
    # Phase 2 runs after every non-daemon thread has finished: sessions still running are over.
    atexit.register(_shutdown_at_exit)


def _exit_timeout() -> float:
    with _lock:
        clients = list(_rt.clients)
    return max((c.config.shutdown_timeout for c in clients), default=0.0)


def _flush_at_main_exit() -> None:
    """Phase 1 of exit: deliver what is pending (bounded by half the shutdown timeout)."""
    rt = _rt
    if rt.portal is None or rt.shut_down or rt.loop_thread_id is None:
        return
    limit = _exit_timeout() / 2
    if limit <= 0:
        return
    clients = list(rt.clients)

    async def flush_all() -> None:
        await asyncio.gather(*(c.async_client.flush(limit) for c in clients))

    _run_bounded(rt.portal, flush_all, limit + 1.0, "flush pending events")


def _shutdown_at_exit(timeout: float | None = None) -> None:
    """Phase 2 of exit: end running sessions INDETERMINATE, close clients, stop the loop."""
    with _lock:
        rt = _rt
        if rt.shut_down:
            return
        rt.shut_down = True
        started = rt.portal
        sessions = list(rt.sessions.values())
        clients = list(rt.clients)
    if started is None:
        return
    limit = _exit_timeout() if timeout is None else timeout
    if sessions:
        log.warning(
            "agentops_async: %d session(s) still running at exit; ending them INDETERMINATE",
            len(sessions),
        )

    async def end_and_close() -> None:
        for session in sessions:
            await session._end_at_exit(EXIT_REASON)
        await asyncio.gather(*(c.async_client.close(limit) for c in clients))

    _run_bounded(started, end_and_close, limit + 1.0, "end sessions and close clients")
    _stop_loop(started)


def _run_bounded(
    started: BlockingPortal, func: Callable[[], Awaitable[None]], timeout: float, what: str
) -> None:
    if in_loop_thread():  # exit hooks run on the main thread; never the loop's
        return
    try:
        contextvars.Context().run(started.start_task_soon, func).result(timeout)
    except concurrent.futures.TimeoutError:
        log.warning("agentops_async: could not %s within %.1fs at exit", what, timeout)
    except Exception:
        log.exception("agentops_async: could not %s at exit", what)


def _stop_loop(started: BlockingPortal) -> None:
    with _lock:
        cm, _rt.portal_cm = _rt.portal_cm, None
        _rt.portal = None
    if cm is None:
        return
    thread = next((t for t in threading.enumerate() if t.ident == _rt.loop_thread_id), None)
    try:
        contextvars.Context().run(started.start_task_soon, started.stop, True).result(2.0)
    except Exception:  # the loop is stuck or gone: it is a daemon thread, let it be
        log.debug("agentops_async: the loop thread did not stop cleanly", exc_info=True)
        return
    if thread is not None:
        thread.join(2.0)
    _rt.loop_thread_id = None


def shutdown(timeout: float | None = None) -> None:
    """End running sync sessions INDETERMINATE, close the sync clients and stop the loop thread.

    The interpreter-exit hook does this for you; call it to shut down earlier (e.g. in a test).
    After it, starting a sync session raises :class:`~agentops_async.AgentOpsError`.

    Args:
        timeout: Bound of the whole shutdown in seconds (default: the largest
            ``shutdown_timeout`` of the sync clients).
    """
    _shutdown_at_exit(timeout)


# -- fork -----------------------------------------------------------------------------------------
def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    """The child has no loop thread: forget it, and the parent's queued data, start afresh."""
    global _rt, _lock
    old = _rt
    _lock = threading.RLock()  # the parent's lock may have been held by another thread
    _rt = _Runtime()
    if old.portal is not None:
        # The parent's portal has no loop thread here. Mark it stopped, so that closing its
        # context manager (when garbage-collected) does not wait forever for that loop.
        old.portal._event_loop_thread_id = None
    _orphaned.append(old)  # never collected in this process: nothing of the parent's runs here
    _rt.clients = old.clients
    for client in old.clients:
        client._forget_exporter_after_fork()
    for session in old.sessions.values():
        session._disown_after_fork()
        inherited = registry.get_current_session()
        if inherited is not None and inherited.session_id == session.session_id:
            registry.set_current(None)
        registry.unregister(session.async_session)
        if session.async_session.trace_id:
            router().unregister(int(session.async_session.trace_id, 16))
    # Sessions of the async API inherited from the parent belong to its event loop; drop them
    # from this process's registry too, so module-level helpers do not resolve to them.
    for inherited in registry.get_active_sessions():
        registry.unregister(inherited)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
