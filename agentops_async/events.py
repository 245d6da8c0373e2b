"""Events: what an agent records into a session.

Every event is a :class:`msgspec.Struct` whose field names follow the AgentOps v2 wire format, so
the exporter encodes a whole batch of them in one msgspec call. ``record()`` only checks the typed
fields and stamps the end time (the hot path); the exporter fills in the ids and encodes.
Free-form fields (``params``, ``returns``, prompts, logs...) accept any value: what JSON cannot
hold (a socket, a custom object, a cycle) is converted, or sent as its ``repr``, so encoding never
fails on a user value.

Example:
    >>> from agentops_async import ActionEvent
    >>> event = ActionEvent(action_type="search", params={"q": "weather"})
    >>> event.event_type
    'actions'
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

import msgspec

from .errors import InvalidEvent

__all__ = [
    "ActionEvent",
    "ApiEvent",
    "ErrorEvent",
    "Event",
    "EventType",
    "LLMEvent",
    "ToolEvent",
]


class EventType:
    """The ``event_type`` strings of the AgentOps v2 API."""

    LLM = "llms"
    ACTION = "actions"
    API = "apis"
    TOOL = "tools"
    ERROR = "errors"


utcnow: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc)

# ---------------------------------------------------------------------------------------------
# Ids. uuid.uuid4() costs ~1.7 us (a getrandom syscall and the UUID object), more than recording an
# event. An event id here is a UUIDv4-shaped string: 74 random bits drawn once per
# process (and again in a forked child) followed by a 48-bit counter. Ids are unique, not secret.
# ---------------------------------------------------------------------------------------------
_id_prefix = ""
_span_prefix = ""
_id_counter: itertools.count[int] = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _span_prefix, _id_counter
    rng = random.SystemRandom()
    h = f"{rng.getrandbits(80):020x}"
    variant = "89ab"[rng.getrandbits(2)]
    _id_prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[15:18]}-"
    _span_prefix = h[16:20]
    _id_counter = itertools.count(rng.getrandbits(40))


_reseed_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_ids)


def new_event_id() -> str:
    """A new unique event id in UUID text form (cheap: no syscall)."""
    # The counter starts below 2**40, so 12 hex digits hold it for 2**47 ids per process.
    return _id_prefix + "%012x" % next(_id_counter)  # noqa: UP031 - fastest form here


# ---------------------------------------------------------------------------------------------
# Making user values JSON-safe.
# ---------------------------------------------------------------------------------------------
_MAX_REPR = 2_000
_PLAIN = (str, int, float, bool)


def safe_repr(value: Any) -> str:
    """A bounded ``repr`` that never raises (used for values JSON cannot hold)."""
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR] + "...<truncated>"
    return text


def _fallback(value: Any) -> Any:
    # msgspec calls this for types it cannot convert itself.
    for attr in ("model_dump", "dict", "to_dict"):  # pydantic v2/v1, many SDK response objects
        method = getattr(value, attr, None)
        if callable(method):
            try:
                result = method()
            except Exception:
                break
            if isinstance(result, dict):
                return result
    return safe_repr(value)


_to_builtins = msgspec.to_builtins


def to_json_safe(value: Any) -> Any:
    """Snapshot ``value`` into JSON-safe builtins; never raises.

    Dataclasses, enums, datetimes, UUIDs, sets, msgspec/pydantic models convert structurally;
    anything else (and cycles, or dicts with non-string keys) becomes a bounded ``repr``.
    """
    if value is None or type(value) in _PLAIN:
        return value
    try:
        # Fast path: builtins, dataclasses, datetimes, UUIDs, enums (no enc_hook: each keyword
        # argument costs ~90 ns here).
        return _to_builtins(value, str_keys=True)
    except (RecursionError, TypeError, ValueError, msgspec.EncodeError, OverflowError):
        pass
    try:
        return _to_builtins(value, enc_hook=_fallback, str_keys=True)
    except (RecursionError, TypeError, ValueError, msgspec.EncodeError, OverflowError):
        return safe_repr(value)


# ---------------------------------------------------------------------------------------------
# The events.
# ---------------------------------------------------------------------------------------------
class Event(msgspec.Struct, kw_only=True, gc=False):
    """Base of every event: the fields every AgentOps event type shares.

    ``record()`` checks the typed fields and stamps ``end_timestamp`` at once; the exporter
    fills in the ids and encodes the event when it sends its batch (normally within
    ``flush_interval``). The event belongs to the session from then on: do not change it, or the
    values it holds, after recording it (record a new event instead). The sync facade encodes in
    the calling thread, so there what is sent is the event as it was when recorded.

    Attributes:
        event_type: One of :class:`EventType` (set by each subclass).
        params: What the step was called with (any JSON-able mapping; others are converted).
        returns: What it returned.
        init_timestamp: When it started: a ``datetime``, an ISO 8601 string or seconds since the
            epoch (the default: ``time.time()`` at construction). Sent as ISO 8601, UTC.
        end_timestamp: When it ended, in the same forms (default: when it was recorded).
        agent_id: The agent that did it, from ``session.create_agent()``.
        id: Unique event id; made when the event is sent unless you set one (see
            :meth:`ensure_id`).
        session_id, trace_id, span_id: Set by the session when the event is sent.
    """

    event_type: str
    params: Any = None
    returns: Any = None
    init_timestamp: datetime | str | float = msgspec.field(default_factory=time.time)
    end_timestamp: datetime | str | float | None = None
    agent_id: str | None = None
    id: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None

    # Fields that take arbitrary user values and are made JSON-safe if JSON cannot hold them.
    _free_fields: ClassVar[tuple[str, ...]] = ("params", "returns")
    # Typed fields checked at record time: name -> (allowed types, how to fix).
    _typed_fields: ClassVar[tuple[tuple[str, tuple[type, ...], str], ...]] = ()
    # The record-time check of the class, compiled from the two above (see _compile_checker).
    _check: ClassVar[Callable[[Event, float], None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._check = _compile_checker(cls)

    def ensure_id(self) -> str:
        """The event's id, made now if it has none yet (to link another event to this one)."""
        if self.id is None:
            self.id = new_event_id()
        return self.id

    def prepare(self, session_id: str, trace_id: str) -> bytes:
        """Check, stamp and encode the event as it is now (what the sync facade does).

        Returns:
            The event's JSON, as sent. Values JSON cannot hold are sent as their ``repr``.

        Raises:
            InvalidEvent: a typed field holds a value of the wrong type (names the field).
        """
        self._check(time.time())
        finalize(self, session_id, trace_id)
        return encode_event(self)


def _bad_field(event: Event, name: str, value: Any, fix: str) -> None:
    raise InvalidEvent(
        f"{type(event).__name__}.{name} must be {fix}, got {type(value).__name__} "
        f"{safe_repr(value)[:80]}"
    )


# ---------------------------------------------------------------------------------------------
# Record time: check the typed fields and stamp the end (the hot path, compiled per class).
# ---------------------------------------------------------------------------------------------
Checker = Callable[["Event", float], None]

_TIME_FIX = "a datetime, an ISO 8601 str or seconds since the epoch (a float)"
_TIMES = (datetime, str, int, float)


def _compile_checker(cls: type[Event]) -> Checker:
    """Build ``cls``'s record-time check as straight-line code (no loops over field specs).

    This is the hot path: a generic loop with getattr costs ~3x more than the generated function,
    which checks each typed field and both timestamps and stamps ``end_timestamp``.
    """
    lines = ["def check(self, now):"]
    namespace: dict[str, Any] = {"_bad_field": _bad_field, "_float": float, "_times": _TIMES}
    specs = [*cls._typed_fields]
    for index, (name, types, fix) in enumerate(specs):
        namespace[f"_types{index}"] = types
        exact = " and ".join(f"t is not {t.__name__}" for t in types)
        lines += [
            f"    v = self.{name}",
            "    if v is not None:",
            "        t = type(v)",
            f"        if {exact} and (not isinstance(v, _types{index}) or t is bool):",
            f"            _bad_field(self, {name!r}, v, {fix!r})",
        ]
    lines += [
        "    v = self.init_timestamp",
        "    if type(v) is not _float and (not isinstance(v, _times) or type(v) is bool):",
        f"        _bad_field(self, 'init_timestamp', v, {_TIME_FIX!r})",
        "    v = self.end_timestamp",
        "    if v is None:",
        "        self.end_timestamp = now",
        "    elif type(v) is not _float and (not isinstance(v, _times) or type(v) is bool):",
        f"        _bad_field(self, 'end_timestamp', v, {_TIME_FIX!r})",
    ]
    exec("\n".join(lines), namespace)  # code built above from field names only
    function: Checker = namespace["check"]
    return function


Event._check = _compile_checker(Event)


# ---------------------------------------------------------------------------------------------
# Send time: ids, timestamps as datetimes, and the encoding (in the exporter, off the hot path).
# ---------------------------------------------------------------------------------------------
def finalize(event: Event, session_id: str, trace_id: str | None) -> None:
    """Fill in what the wire needs: the event id, the session's ids, timestamps as datetimes."""
    wire_events((event,), session_id, trace_id)


def wire_events(
    payloads: Sequence[Event | bytes], session_id: str, trace_id: str | None
) -> list[Event | msgspec.Raw]:
    """The events of one request, ready for one msgspec call.

    Events get their id, the session's ids and datetime timestamps (in place: the exporter owns
    them by now); already-encoded events (bytes) are wrapped as ``msgspec.Raw``. The exporter
    runs this for every event, so it is one loop with everything inlined, and epoch timestamps
    are converted to datetimes in one msgspec call per slice (~8x cheaper than one
    ``datetime.fromtimestamp`` each).
    """
    prefix, counter, span_prefix = _id_prefix, _id_counter, _span_prefix
    raw, one_time = msgspec.Raw, _datetime_or_text
    batched = len(payloads) >= 8  # below that, one msgspec call costs more than it saves
    out: list[Event | msgspec.Raw] = []
    append = out.append
    starts: list[Event] = []
    start_epochs: list[float] = []
    ends: list[Event] = []
    end_epochs: list[float] = []
    for payload in payloads:
        if type(payload) is bytes:
            append(raw(payload))
            continue
        event: Event = payload  # type: ignore[assignment]
        event_id = event.id
        if event_id is None:
            event_id = event.id = prefix + "%012x" % next(counter)  # noqa: UP031 - see new_event_id
        when = event.init_timestamp
        if type(when) is float or type(when) is int:
            if batched:
                starts.append(event)
                start_epochs.append(when)
            else:
                event.init_timestamp = one_time(when)
        until = event.end_timestamp
        if type(until) is float or type(until) is int:
            if batched:
                ends.append(event)
                end_epochs.append(until)
            else:
                event.end_timestamp = one_time(until)
        event.session_id = session_id
        if event.span_id is None:  # captured OTel spans bring their own ids
            event.trace_id = trace_id
            event.span_id = span_prefix + event_id[-12:]
        append(event)
    if starts:
        times = _datetimes(start_epochs)
        for index, event in enumerate(starts):
            event.init_timestamp = times[index]
    if ends:
        times = _datetimes(end_epochs)
        for index, event in enumerate(ends):
            event.end_timestamp = times[index]
    return out


def _datetimes(epochs: list[Any]) -> list[datetime | str]:
    """Epoch seconds as UTC datetimes, in one msgspec call; never raises.

    An epoch outside what a datetime holds (year 1 to 9999) is sent as its text, for the server
    to judge, rather than losing the rest of the batch.
    """
    try:
        converted: list[datetime | str] = msgspec.convert(epochs, _DATETIMES, strict=False)
        return converted
    except (msgspec.ValidationError, OverflowError, ValueError):
        return [_datetime_or_text(epoch) for epoch in epochs]


_DATETIMES = list[datetime]


def _datetime_or_text(epoch: float) -> datetime | str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, ValueError, OSError):
        return repr(epoch)


_encode = msgspec.json.Encoder().encode
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def encode_event(event: Event) -> bytes:
    """One finalized event as JSON; values JSON cannot hold are sent as their ``repr``."""
    try:
        return _encode(event)
    except ENCODE_ERRORS:
        pass
    for name in event._free_fields:
        value = getattr(event, name)
        if value is not None and type(value) not in _PLAIN:
            setattr(event, name, to_json_safe(value))
    try:
        return _encode(event)
    except ENCODE_ERRORS:  # a non-JSON value in a typed field that passed isinstance (a subclass)
        return _encode(msgspec.to_builtins(event, enc_hook=safe_repr, str_keys=True))


def describe_oversize(event: Event, size: int, limit: int) -> str:
    """Why ``event`` cannot be sent: its encoded size, the limit, and its largest field."""
    sizes = {}
    for name in event.__struct_fields__:
        try:
            sizes[name] = len(_encode(getattr(event, name)))
        except ENCODE_ERRORS:  # only sizing the fields for the message
            sizes[name] = len(safe_repr(getattr(event, name)))
    largest = max(sizes, key=sizes.__getitem__)
    return (
        f"{type(event).__name__} is {size:,} bytes encoded, above the {limit:,} bytes one request "
        f"may carry (max_batch_bytes); its largest field is {largest!r} ({sizes[largest]:,} "
        "bytes): trim or summarise it, or raise max_batch_bytes"
    )


_INT = ((int,), "an int (a token count)")
_NUM = ((int, float), "a number")
_STR = ((str,), "a str")


class LLMEvent(Event, kw_only=True):
    """One call to a language model.

    Attributes:
        prompt: The prompt (a string or a list of chat messages).
        completion: The answer (a string or a message).
        prompt_tokens: Tokens in the prompt.
        completion_tokens: Tokens in the completion.
        model: Model name, e.g. ``"gpt-4o-mini"`` (used by the collector's price table).
        cost: Cost in USD when the caller knows it.
        thread_id: Conversation id, when there is one.
    """

    event_type: str = EventType.LLM
    thread_id: str | None = None
    prompt: Any = None
    prompt_tokens: int | None = None
    completion: Any = None
    completion_tokens: int | None = None
    cost: float | None = None
    model: str | None = None

    _free_fields = ("params", "returns", "prompt", "completion")
    _typed_fields = (
        ("prompt_tokens", *_INT),
        ("completion_tokens", *_INT),
        ("cost", *_NUM),
        ("model", *_STR),
        ("thread_id", *_STR),
    )


class ActionEvent(Event, kw_only=True):
    """Something the agent did (a step, a decision, a click).

    Attributes:
        action_type: What kind of action, e.g. ``"search"``.
        logs: Free-form logs of the action.
        screenshot: A URL or data URI of a screenshot.
    """

    event_type: str = EventType.ACTION
    action_type: str | None = None
    logs: Any = None
    screenshot: str | None = None

    _free_fields = ("params", "returns", "logs")
    _typed_fields = (("action_type", *_STR), ("screenshot", *_STR))


class ToolEvent(Event, kw_only=True):
    """A tool call made by the agent.

    Attributes:
        name: The tool's name.
        logs: Free-form logs of the call.
    """

    event_type: str = EventType.TOOL
    name: str | None = None
    logs: Any = None

    _free_fields = ("params", "returns", "logs")
    _typed_fields = (("name", *_STR),)


class ApiEvent(Event, kw_only=True):
    """An outgoing API call (HTTP or other) made by the agent.

    Attributes:
        method: e.g. ``"GET"``.
        url: The URL called.
        status_code: The answer's status.
        logs: Free-form logs of the call.
    """

    event_type: str = EventType.API
    method: str | None = None
    url: str | None = None
    status_code: int | None = None
    logs: Any = None

    _free_fields = ("params", "returns", "logs")
    _typed_fields = (("method", *_STR), ("url", *_STR), ("status_code", *_INT))


class ErrorEvent(Event, kw_only=True):
    """An error the agent met. Build it from an exception with :meth:`from_exception`.

    Attributes:
        error_type: The exception's class name, or your own category.
        code: An error code, when there is one.
        details: A human-readable description.
        logs: The formatted traceback.
        trigger_event_id: The id of the event that failed, if any.
        trigger_event_type: Its type.
    """

    event_type: str = EventType.ERROR
    error_type: str | None = None
    code: str | None = None
    details: Any = None
    logs: str | None = None
    trigger_event_id: str | None = None
    trigger_event_type: str | None = None

    _free_fields = ("params", "returns", "details")
    _typed_fields = (("error_type", *_STR), ("code", *_STR), ("logs", *_STR))

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        trigger_event: Event | None = None,
        code: str | None = None,
        details: Any = None,
    ) -> ErrorEvent:
        """An ErrorEvent describing ``exc``: its type, message and formatted traceback.

        Example:
            >>> try:
            ...     1 / 0
            ... except ZeroDivisionError as exc:
            ...     event = ErrorEvent.from_exception(exc)
            >>> event.error_type
            'ZeroDivisionError'
        """
        return cls(
            error_type=type(exc).__name__,
            code=code,
            details=details if details is not None else str(exc),
            logs="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            trigger_event_id=trigger_event.ensure_id() if trigger_event is not None else None,
            trigger_event_type=trigger_event.event_type if trigger_event is not None else None,
        )
