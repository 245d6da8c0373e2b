"""Decorators that record a function call as an event: ``@record_action`` and ``@record_tool``.

They work on plain and ``async def`` functions, in both worlds: the event goes to the session that
is current where the function runs (the task's ``AsyncSession``, or the thread's sync ``Session``);
in sync code with none current, to the only running session of the sync facade (the scripts'
fallback). In async code a session that another task opened is never used: with none current
the function runs unrecorded. Recording never waits (``record_threadsafe``: from the session's
own loop it is a plain buffer append) and never raises into the decorated code: with no session,
or an ambiguous one, the call simply runs unrecorded (logged once at debug/warning level).

What is recorded: the call's arguments (``params``, by parameter name, defaults applied,
``self``/``cls`` left out), its return value (``returns``), its start and end times; when it
raises, the event is recorded without ``returns`` and followed by an
:class:`~agentops_async.ErrorEvent` whose ``trigger_event_id`` points at it, and the exception
propagates unchanged.

Generator functions (plain and async) are recorded over their whole iteration: the event starts
at the first item asked for and ends when the generator is exhausted, closed early, or raises;
``returns`` is what it yielded (joined into one string when every item is a string, as for a
streamed completion; else a list, of at most ``MAX_ITEMS`` items), also when it raised.
``send()``/``throw()``/``close()`` (and their async forms) reach the generator unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, TypeVar, overload

from .events import ActionEvent, ErrorEvent, Event, ToolEvent, _utcnow
from .session._registry import get_current_session
from .session._session import AsyncSession
from .sync import _runtime

__all__ = ["record_action", "record_tool"]

log = logging.getLogger("agentops_async")

F = TypeVar("F", bound=Callable[..., Any])

_warned_ambiguous = False


def _target_session() -> AsyncSession | None:
    """The session to record into, or None (the call then runs unrecorded).

    The session current where the function runs; else, in sync code only (no event loop running
    in this thread), the only running session of the sync facade, as its module-level helpers do.
    In async code a session that another task opened is never used.
    """
    global _warned_ambiguous
    session = get_current_session()
    if session is not None and session.is_running:
        return session
    if _in_async_code():
        return None
    running = _runtime.running_sessions()
    if len(running) == 1:
        only = running[0].async_session
        return only if only.is_running else None
    if running and not _warned_ambiguous:
        _warned_ambiguous = True
        log.warning(
            "agentops_async: a decorated function ran with several sessions running and none "
            "current there; it was not recorded (run it inside the session's `with` block)"
        )
    return None


def _in_async_code() -> bool:
    """True when an event loop runs in this thread (the caller is a coroutine or a callback)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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


MAX_ITEMS = 1_000  # items of a generator's output kept in ``returns``


class _Output:
    """What a generator yielded, bounded: the first MAX_ITEMS items and how many more."""

    __slots__ = ("items", "more")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.more = 0

    def add(self, item: Any) -> None:
        if len(self.items) < MAX_ITEMS:
            self.items.append(item)
        else:
            self.more += 1

    def partial(self) -> Any:
        """What was yielded before an error: None when nothing was."""
        return self.value() if self.items else None

    def value(self) -> Any:
        if self.items and all(type(item) is str for item in self.items):
            text = "".join(self.items)
            return text + f"...<{self.more} more items>" if self.more else text
        if self.more:
            return [*self.items, f"...<{self.more} more items>"]
        return self.items


class _Recording:
    """The event of one decorated call, from start to its end (or error)."""

    __slots__ = ("event", "session")

    def __init__(self, session: AsyncSession, event: Event) -> None:
        self.session = session
        self.event = event

    def finish(self, returns: Any, exc: BaseException | None = None) -> None:
        event = self.event
        event.end_timestamp = _utcnow()
        event.returns = returns
        _emit(self.session, event, exc if isinstance(exc, Exception) else None)


def _start(
    make_event: Callable[[], Event], signature: inspect.Signature | None, args: Any, kwargs: Any
) -> _Recording | None:
    session = _target_session()
    if session is None:
        return None
    event = make_event()
    event.params = _params_of(signature, args, kwargs)
    return _Recording(session, event)


def _decorate_generator(
    func: Callable[..., Generator[Any, Any, Any]],
    make_event: Callable[[], Event],
    signature: inspect.Signature | None,
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(func)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        recording = _start(make_event, signature, args, kwargs)
        if recording is None:
            return (yield from func(*args, **kwargs))
        output = _Output()
        try:
            result = yield from _observed(func(*args, **kwargs), output)
        except GeneratorExit:  # closed early by its consumer: what it yielded so far
            recording.finish(output.value())
            raise
        except BaseException as exc:
            recording.finish(output.partial(), exc)
            raise
        recording.finish(output.value())
        return result

    return generator_wrapper


def _observed(inner: Generator[Any, Any, Any], output: _Output) -> Generator[Any, Any, Any]:
    """``yield from inner``, noting each item it yields (send/throw/close pass through)."""
    try:
        item = next(inner)
    except StopIteration as stop:
        return stop.value
    while True:
        output.add(item)
        try:
            sent = yield item
        except GeneratorExit:
            inner.close()
            raise
        except BaseException as exc:
            try:
                item = inner.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                item = inner.send(sent)
            except StopIteration as stop:
                return stop.value


def _decorate_async_generator(
    func: Callable[..., AsyncGenerator[Any, Any]],
    make_event: Callable[[], Event],
    signature: inspect.Signature | None,
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(func)
    async def async_generator_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        recording = _start(make_event, signature, args, kwargs)
        output = _Output()
        inner = func(*args, **kwargs)
        try:
            try:
                item = await inner.__anext__()
            except StopAsyncIteration:
                pass
            else:
                while True:
                    output.add(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await inner.aclose()
                        raise
                    except BaseException as exc:
                        try:
                            item = await inner.athrow(exc)
                        except StopAsyncIteration:
                            break
                    else:
                        try:
                            item = await inner.asend(sent)
                        except StopAsyncIteration:
                            break
        except GeneratorExit:  # closed early by its consumer: what it yielded so far
            if recording is not None:
                recording.finish(output.value())
            raise
        except BaseException as exc:
            if recording is not None:
                recording.finish(output.partial(), exc)
            raise
        if recording is not None:
            recording.finish(output.value())

    return async_generator_wrapper


def _decorate(func: Callable[..., Any], make_event: Callable[[], Event]) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None

    if inspect.isgeneratorfunction(func):
        return _decorate_generator(func, make_event, signature)
    if inspect.isasyncgenfunction(func):
        return _decorate_async_generator(func, make_event, signature)
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            recording = _start(make_event, signature, args, kwargs)
            if recording is None:
                return await func(*args, **kwargs)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                recording.finish(None, exc)
                raise
            recording.finish(result)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recording = _start(make_event, signature, args, kwargs)
        if recording is None:
            return func(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            recording.finish(None, exc)
            raise
        recording.finish(result)
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
