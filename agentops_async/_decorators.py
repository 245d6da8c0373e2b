"""Decorators that record a function call as an event: ``@record_action`` and ``@record_tool``.

They work on plain and ``async def`` functions, in both worlds: the event goes to the session that
is current where the function runs (the task's ``AsyncSession``, or the thread's sync ``Session``),
else to the only running one. Recording never waits (``record_threadsafe``: from the session's
own loop it is a plain buffer append) and never raises into the decorated code: with no session,
or an ambiguous one, the call simply runs unrecorded (logged once at debug/warning level).

What is recorded: the call's arguments (``params``, by parameter name, defaults applied,
``self``/``cls`` left out), its return value (``returns``), its start and end times; when it
raises, the event is recorded without ``returns`` and followed by an
:class:`~agentops_async.ErrorEvent` whose ``trigger_event_id`` points at it, and the exception
propagates unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from .errors import AmbiguousSession, NoActiveSession
from .events import ActionEvent, ErrorEvent, Event, ToolEvent, utcnow
from .session._registry import resolve_session
from .session._session import AsyncSession

__all__ = ["record_action", "record_tool"]

log = logging.getLogger("agentops_async")

F = TypeVar("F", bound=Callable[..., Any])

_warned_ambiguous = False


def _target_session() -> AsyncSession | None:
    """The session to record into, or None (the call then runs unrecorded)."""
    global _warned_ambiguous
    try:
        session = resolve_session()
    except NoActiveSession:
        return None
    except AmbiguousSession:
        if not _warned_ambiguous:
            _warned_ambiguous = True
            log.warning(
                "agentops_async: a decorated function ran with several sessions running and none "
                "current there; it was not recorded (run it inside the session's `with` block)"
            )
        return None
    return session if session.is_running else None


def _params_of(signature: inspect.Signature | None, args: Any, kwargs: Any) -> dict[str, Any]:
    if signature is None:
        return {"args": list(args), "kwargs": dict(kwargs)}
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:  # the call itself will raise the same TypeError
        return {"args": list(args), "kwargs": dict(kwargs)}
    bound.apply_defaults()
    params = dict(bound.arguments)
    for name in ("self", "cls"):
        params.pop(name, None)
    return params


def _emit(session: AsyncSession, event: Event, exc: BaseException | None) -> None:
    """Record the call's event (and an ErrorEvent); never raises into the decorated code."""
    try:
        session.record_threadsafe(event)
        if exc is not None:
            session.record_threadsafe(ErrorEvent.from_exception(exc, trigger_event=event))
    except Exception as error:  # the session ended meanwhile, or a value could not be recorded
        log.debug("agentops_async: could not record %s: %s", event.event_type, error)


def _decorate(func: Callable[..., Any], make_event: Callable[[], Event]) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            session = _target_session()
            if session is None:
                return await func(*args, **kwargs)
            event = make_event()
            event.params = _params_of(signature, args, kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                event.end_timestamp = utcnow()
                _emit(session, event, exc if isinstance(exc, Exception) else None)
                raise
            event.returns = result
            event.end_timestamp = utcnow()
            _emit(session, event, None)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = _target_session()
        if session is None:
            return func(*args, **kwargs)
        event = make_event()
        event.params = _params_of(signature, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            event.end_timestamp = utcnow()
            _emit(session, event, exc if isinstance(exc, Exception) else None)
            raise
        event.returns = result
        event.end_timestamp = utcnow()
        _emit(session, event, None)
        return result

    return wrapper


@overload
def record_action(action_type: F, /) -> F: ...


@overload
def record_action(action_type: str | None = None, /) -> Callable[[F], F]: ...


def record_action(action_type: str | F | None = None, /) -> F | Callable[[F], F]:
    """Record each call of the decorated function as an :class:`~agentops_async.ActionEvent`.

    Args:
        action_type: The event's ``action_type``; by default the function's qualified name.

    Example:
        >>> @record_action("search")
        ... def search(query: str) -> list[str]:
        ...     return ["result"]
        >>> @record_action
        ... async def plan(goal: str) -> str:
        ...     return "steps"
    """
    if callable(action_type):
        return _action(action_type, None)

    def decorator(func: F) -> F:
        return _action(func, action_type)

    return decorator


def _action(func: F, action_type: str | None) -> F:
    name = action_type or func.__qualname__
    wrapped: F = _decorate(func, lambda: ActionEvent(action_type=name))  # type: ignore[assignment]
    return wrapped


@overload
def record_tool(name: F, /) -> F: ...


@overload
def record_tool(name: str | None = None, /) -> Callable[[F], F]: ...


def record_tool(name: str | F | None = None, /) -> F | Callable[[F], F]:
    """Record each call of the decorated function as a :class:`~agentops_async.ToolEvent`.

    Args:
        name: The tool's name; by default the function's qualified name.

    Example:
        >>> @record_tool("calculator")
        ... def add(a: int, b: int) -> int:
        ...     return a + b
    """
    if callable(name):
        return _tool(name, None)

    def decorator(func: F) -> F:
        return _tool(func, name)

    return decorator


def _tool(func: F, name: str | None) -> F:
    tool_name = name or func.__qualname__
    wrapped: F = _decorate(func, lambda: ToolEvent(name=tool_name))  # type: ignore[assignment]
    return wrapped
