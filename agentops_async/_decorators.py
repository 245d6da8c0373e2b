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
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar, overload

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace

from .events import ActionEvent, ErrorEvent, Event, ToolEvent, _to_json_safe, _utcnow
from .session._registry import get_current_session
from .session._session import AsyncSession
from .sync import _runtime

__all__ = [
    "MAX_IO_BYTES",
    "agent",
    "operation",
    "record_action",
    "record_tool",
    "session",
    "task",
    "tool",
    "trace_session",
    "workflow",
]

log = logging.getLogger("agentops_async")

F = TypeVar("F", bound=Callable[..., Any])

_warned_ambiguous = False

# The span id of the decorated call running in this context (None: the session's root span).
_current_span: ContextVar[str | None] = ContextVar("agentops_async_span", default=None)

MAX_IO_BYTES = 16_384
"""Cap of a decorated call's recorded ``input`` and output (``returns``), as JSON bytes each:
a larger value is recorded as the start of its JSON text and a ``...<truncated: N bytes>``
marker."""

_encode = msgspec.json.Encoder().encode


def bounded(value: Any) -> Any:
    """``value`` as JSON-safe builtins, cut to :data:`MAX_IO_BYTES` of JSON text."""
    safe = _to_json_safe(value)
    if safe is None or type(safe) in (int, float, bool):
        return safe
    if type(safe) is str:
        if len(safe) <= MAX_IO_BYTES // 4:  # at most 4 bytes a character: fits as it is
            return safe
        size = len(safe.encode("utf-8", "replace"))
        if size <= MAX_IO_BYTES:
            return safe
        return safe[: MAX_IO_BYTES // 4] + f"...<truncated: {size} bytes>"
    try:
        text = _encode(safe)
    except Exception:  # text with lone surrogates, a cycle...: made sendable when encoded
        return safe
    if len(text) <= MAX_IO_BYTES:
        return safe
    cut = text[:MAX_IO_BYTES].decode("utf-8", "ignore")
    return cut + f"...<truncated: {len(text)} bytes>"


def new_span_id(event_id: str) -> str:
    """The span id of the event ``event_id`` (16 hex digits), as the exporter would make it."""
    return _span_prefix() + event_id[-12:]


def _span_prefix() -> str:
    from . import events

    return events._span_prefix


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
    """The event of one decorated call, from start to its end (or error).

    With a ``span`` (the AgentOps-style decorators), the event is a span of the session's trace:
    its own span id, the enclosing decorated call's (or the session's root span) as parent,
    inputs and output bounded to ``MAX_IO_BYTES``.
    """

    __slots__ = ("event", "session", "span_id")

    def __init__(self, session: AsyncSession, event: Event, span_id: str | None = None) -> None:
        self.session = session
        self.event = event
        self.span_id = span_id

    def finish(self, returns: Any, exc: BaseException | None = None) -> None:
        event = self.event
        event.end_timestamp = _utcnow()
        if self.span_id is None:
            event.returns = returns
        else:
            event.returns = bounded(returns)
            if exc is not None:
                status = "ERROR" if isinstance(exc, Exception) else "CANCELLED"
                event.params["status"] = status
                event.params["status_description"] = f"{type(exc).__name__}: {exc}"[:500]
        _emit(self.session, event, exc if isinstance(exc, Exception) else None)


class _Spec:
    """What a decorator records: how to make the event, and the span it is (None: a plain
    event, as ``record_action``/``record_tool`` record)."""

    __slots__ = ("extra", "make_event", "name", "span_kind")

    def __init__(
        self,
        make_event: Callable[[], Event],
        span_kind: str | None = None,
        name: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.make_event = make_event
        self.span_kind = span_kind
        self.name = name
        self.extra = extra or {}


def _start(
    spec: _Spec, signature: inspect.Signature | None, args: Any, kwargs: Any
) -> _Recording | None:
    session = _target_session()
    if session is None:
        return None
    event = spec.make_event()
    params = _params_of(signature, args, kwargs)
    if spec.span_kind is None:
        event.params = params
        return _Recording(session, event)
    event_id = event.ensure_id()
    span_id = new_span_id(event_id)
    parent = _current_span.get() or _root_span_id(session)
    event.trace_id = session.trace_id or None
    event.span_id = span_id
    event.params = {
        "name": spec.name,
        "span_kind": spec.span_kind,
        "parent_span_id": parent,
        **spec.extra,
        "input": bounded(params),
    }
    return _Recording(session, event, span_id)


def _root_span_id(session: AsyncSession) -> str | None:
    span = session.span
    if span is None:
        return None
    return trace.format_span_id(span.get_span_context().span_id)


@contextlib.contextmanager
def _in_span(recording: _Recording | None, propagate: bool = False) -> Iterator[None]:
    """The decorated call's span is the parent of what runs inside: decorated calls (through
    a context variable) and, with ``propagate``, OpenTelemetry spans (third-party
    instrumentation), through the current OTel span. Not across a generator's yields: each
    resumption is wrapped on its own."""
    if recording is None or recording.span_id is None:
        yield
        return
    token = _current_span.set(recording.span_id)
    otel_token = None
    trace_id = recording.session.trace_id
    if propagate and trace_id:
        context = trace.SpanContext(
            int(trace_id, 16),
            int(recording.span_id, 16),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        otel_token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(context)))
    try:
        yield
    finally:
        if otel_token is not None:
            otel_context.detach(otel_token)
        _current_span.reset(token)


def _decorate_generator(
    func: Callable[..., Generator[Any, Any, Any]],
    spec: _Spec,
    signature: inspect.Signature | None,
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(func)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        recording = _start(spec, signature, args, kwargs)
        if recording is None:
            return (yield from func(*args, **kwargs))
        output = _Output()
        try:
            result = yield from _observed(func(*args, **kwargs), output, recording)
        except GeneratorExit:  # closed early by its consumer: what it yielded so far
            recording.finish(output.value())
            raise
        except BaseException as exc:
            recording.finish(output.partial(), exc)
            raise
        recording.finish(output.value())
        return result

    return generator_wrapper


def _observed(
    inner: Generator[Any, Any, Any], output: _Output, recording: _Recording
) -> Generator[Any, Any, Any]:
    """``yield from inner``, noting each item it yields (send/throw/close pass through); each
    step runs inside the call's span."""
    try:
        with _in_span(recording):
            item = next(inner)
    except StopIteration as stop:
        return stop.value
    while True:
        output.add(item)
        try:
            sent = yield item
        except GeneratorExit:
            with _in_span(recording):
                inner.close()
            raise
        except BaseException as exc:
            try:
                with _in_span(recording):
                    item = inner.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                with _in_span(recording):
                    item = inner.send(sent)
            except StopIteration as stop:
                return stop.value


def _decorate_async_generator(
    func: Callable[..., AsyncGenerator[Any, Any]],
    spec: _Spec,
    signature: inspect.Signature | None,
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(func)
    async def async_generator_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        recording = _start(spec, signature, args, kwargs)
        output = _Output()
        inner = func(*args, **kwargs)
        try:
            try:
                with _in_span(recording):
                    item = await inner.__anext__()
            except StopAsyncIteration:
                pass
            else:
                while True:
                    output.add(item)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        with _in_span(recording):
                            await inner.aclose()
                        raise
                    except BaseException as exc:
                        try:
                            with _in_span(recording):
                                item = await inner.athrow(exc)
                        except StopAsyncIteration:
                            break
                    else:
                        try:
                            with _in_span(recording):
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


def _decorate(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None

    if inspect.isgeneratorfunction(func):
        return _decorate_generator(func, spec, signature)
    if inspect.isasyncgenfunction(func):
        return _decorate_async_generator(func, spec, signature)
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            recording = _start(spec, signature, args, kwargs)
            if recording is None:
                return await func(*args, **kwargs)
            try:
                with _in_span(recording, propagate=True):
                    result = await func(*args, **kwargs)
            except BaseException as exc:
                recording.finish(None, exc)
                raise
            recording.finish(result)
            return result

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        recording = _start(spec, signature, args, kwargs)
        if recording is None:
            return func(*args, **kwargs)
        try:
            with _in_span(recording, propagate=True):
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
    spec = _Spec(lambda: ActionEvent(action_type=name))
    wrapped: F = _decorate(func, spec)  # type: ignore[assignment]
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
    spec = _Spec(lambda: ToolEvent(name=tool_name))
    wrapped: F = _decorate(func, spec)  # type: ignore[assignment]
    return wrapped


# ---------------------------------------------------------------------------------------------
# The AgentOps 0.4 names: each decorated call is a span of the session's trace.
# ---------------------------------------------------------------------------------------------
def _span_decorator(
    kind: str,
    wrapped: Any,
    name: str | None,
    version: Any,
    make_event: Callable[[str], Event],
    extra: dict[str, Any] | None = None,
) -> Any:
    def decorate(func: F) -> F:
        if isinstance(func, type):
            raise TypeError(
                f"@{kind} decorates functions and methods, not classes ({func.__name__}): "
                "decorate the methods whose calls you want recorded"
            )
        span_name = name or func.__qualname__
        more = dict(extra or {})
        if version is not None:
            more["version"] = version
        spec = _Spec(lambda: make_event(span_name), kind, span_name, more)
        decorated: F = _decorate(func, spec)  # type: ignore[assignment]
        return decorated

    return decorate(wrapped) if wrapped is not None else decorate


def _action_named(name: str) -> Event:
    return ActionEvent(action_type=name)


def _tool_named(name: str) -> Event:
    return ToolEvent(name=name)


def agent(wrapped: Any = None, /, *, name: str | None = None, version: Any = None) -> Any:
    """Record each call of the decorated function or method as an ``agent`` span.

    The call becomes an :class:`~agentops_async.ActionEvent` (``action_type``: ``name``, by
    default the function's qualified name) of the current session, with its own span id; its
    ``params`` hold ``name``, ``span_kind`` (``"agent"``), ``parent_span_id`` (the enclosing
    decorated call, or the session's root span) and ``input`` (the arguments); ``returns`` holds
    the output. Both are cut to :data:`MAX_IO_BYTES`. Decorated calls made inside nest under
    it, and so do OpenTelemetry spans started inside (e.g. an instrumented LLM call). An
    exception marks it (``params["status"] = "ERROR"``), records an ErrorEvent linked to it, and
    propagates unchanged. Works on sync, ``async``, generator and async-generator functions;
    with no session current the function runs unrecorded.

    Example:
        >>> @agent(name="researcher")
        ... async def research(topic: str) -> str:
        ...     return "notes"
    """
    return _span_decorator("agent", wrapped, name, version, _action_named)


def operation(wrapped: Any = None, /, *, name: str | None = None, version: Any = None) -> Any:
    """Record each call as an ``operation`` span (see :func:`agent`); ``task`` is an alias."""
    return _span_decorator("operation", wrapped, name, version, _action_named)


def task(wrapped: Any = None, /, *, name: str | None = None, version: Any = None) -> Any:
    """Record each call as a ``task`` span (AgentOps' alias of :func:`operation`)."""
    return _span_decorator("task", wrapped, name, version, _action_named)


def workflow(wrapped: Any = None, /, *, name: str | None = None, version: Any = None) -> Any:
    """Record each call as a ``workflow`` span (see :func:`agent`)."""
    return _span_decorator("workflow", wrapped, name, version, _action_named)


def tool(
    wrapped: Any = None,
    /,
    *,
    name: str | None = None,
    version: Any = None,
    cost: float | None = None,
) -> Any:
    """Record each call as a ``tool`` span: a :class:`~agentops_async.ToolEvent` (see
    :func:`agent`), with ``params["cost"]`` when ``cost`` is given.

    Example:
        >>> @tool(cost=0.01)
        ... def web_search(query: str) -> list[str]:
        ...     return ["result"]
    """
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
        raise TypeError(f"@tool(cost=...) must be a number (USD per call), got {cost!r}")
    extra = {"cost": cost} if cost is not None else None
    return _span_decorator("tool", wrapped, name, version, _tool_named, extra)


def session(
    wrapped: Any = None,
    /,
    *,
    name: str | None = None,
    tags: list[str] | None = None,
    client: Any = None,
) -> Any:
    """Open a session around each call of the decorated function (``@trace`` is an alias).

    ``async def`` functions (and async generators) run inside ``async with AsyncSession(...)``
    on ``client`` (an :class:`~agentops_async.AsyncClient`; by default the default client);
    plain functions (and generators) inside the sync facade's ``with Session(...)`` (``client``:
    a sync :class:`~agentops_async.Client`; by default the default one). A normal return ends
    it SUCCEEDED, an exception FAILED with an ErrorEvent. ``name`` is added to the tags.

    Example:
        >>> from agentops_async.decorators import session, agent
        >>> @session(tags=["nightly"])
        ... async def run() -> None:
        ...     ...
    """
    all_tags = [*(tags or []), *([name] if name else [])]

    def decorate(func: F) -> F:
        decorated: F = _session_wrapper(func, all_tags, client)  # type: ignore[assignment]
        return decorated

    return decorate(wrapped) if wrapped is not None else decorate


trace_session = session


def _session_wrapper(func: Callable[..., Any], tags: list[str], client: Any) -> Callable[..., Any]:
    from .sync import Session as SyncSession

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            async with AsyncSession(tags=tags, client=client):
                return await func(*args, **kwargs)

        return async_wrapper
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            async with AsyncSession(tags=tags, client=client):
                async for item in func(*args, **kwargs):
                    yield item

        return async_gen_wrapper
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            with SyncSession(tags, client=client):
                return (yield from func(*args, **kwargs))

        return gen_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with SyncSession(tags, client=client):
            return func(*args, **kwargs)

    return wrapper
