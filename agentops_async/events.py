"""Events: what an agent records into a session.

Every event is a :class:`msgspec.Struct` whose field names follow the AgentOps v2 wire format, so
the exporter encodes a whole batch of them in one msgspec call. ``record()`` only checks the typed
fields and stamps the end time (the hot path); the exporter fills in the ids and encodes.
Free-form fields (``params``, ``returns``, prompts, logs...) accept any value, and encoding never
fails on what they hold: what JSON cannot hold (a socket, a custom object) is converted, or sent as
its ``repr``; a ``str`` subclass (a ``StrEnum`` member) is sent as its text; text with lone
surrogates (``os.listdir`` of a non-UTF-8 name) is sent with each one replaced by U+FFFD;
containers nested deeper than :data:`~agentops_async._limits.MAX_NESTING_DEPTH` (the event itself
counts as 1) and a container inside itself are cut, replaced by a short marker string; dict keys
that become equal as JSON text (``1`` and ``"1"``) are both kept, the later one renamed
``"1 (2)"``. Each of these is logged once, as a warning.

Example:
    >>> from agentops_async import ActionEvent
    >>> event = ActionEvent(action_type="search", params={"q": "weather"})
    >>> event.event_type
    'actions'
"""

from __future__ import annotations

import enum
import functools
import itertools
import logging
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar

import msgspec

from ._limits import MAX_NESTING_DEPTH as _MAX_NESTING_DEPTH
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


_utcnow: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc)

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


def _new_event_id() -> str:
    """A new unique event id in UUID text form (cheap: no syscall)."""
    # The counter starts below 2**40, so 12 hex digits hold it for 2**47 ids per process.
    return _id_prefix + "%012x" % next(_id_counter)  # noqa: UP031 - fastest form here


# ---------------------------------------------------------------------------------------------
# Making user values JSON-safe.
# ---------------------------------------------------------------------------------------------
_MAX_REPR = 2_000
_PLAIN = (str, int, float, bool)


def _safe_repr(value: Any) -> str:
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
    if isinstance(value, str):  # a str subclass: its text, not its repr
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    for attr in ("model_dump", "dict", "to_dict"):  # pydantic v2/v1, many SDK response objects
        try:
            method = getattr(value, attr, None)
            result = method() if callable(method) else None
        except Exception:  # a raising property or __getattr__ too
            break
        if isinstance(result, dict):
            return result
    return _safe_repr(value)


_to_builtins = msgspec.to_builtins


def _to_json_safe(value: Any) -> Any:
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
        return _safe_repr(value)


# ---------------------------------------------------------------------------------------------
# Making a whole value sendable: the slow path, taken only for values that are not flat (see
# _wire_events) or that msgspec refused to encode. One walk fixes everything JSON or the collector
# cannot take, and keeps everything else.
# ---------------------------------------------------------------------------------------------
_log = logging.getLogger("agentops_async")

_DEEP_MARKER = f"<nested deeper than {_MAX_NESTING_DEPTH} levels>"
_CYCLE_MARKER = "<cycle: a container inside itself>"
_LEAVES = frozenset({str, int, float, bool, type(None)})  # exact types msgspec encodes as is
_SURROGATE = re.compile("[\ud800-\udfff]")
_noted: set[str] = set()


def _note_once(kind: str, message: str) -> None:
    """Log one warning per kind of change made to a user value (per process)."""
    if kind not in _noted:
        _noted.add(kind)
        _log.warning("agentops_async: %s; later cases are not logged", message)


def _text(value: str) -> str:
    """``value`` (a str or a subclass) as a plain str that UTF-8 can hold.

    Lone surrogates (what ``surrogateescape`` makes of undecodable bytes) become U+FFFD; a
    surrogate pair written as two code points becomes the one character it stands for.
    """
    if type(value) is not str:
        value = str.__str__(value)  # the text itself, not a subclass's repr or __str__
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    _note_once(
        "surrogates",
        "text with lone surrogates (undecodable bytes, e.g. from os.listdir or sys.argv) "
        "is sent with each replaced by U+FFFD",
    )
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _key_text(key: Any) -> str:
    """A dict key as the JSON object key it becomes."""
    if isinstance(key, str):
        return _text(key)
    if isinstance(key, enum.Enum):
        return _key_text(key.value)
    if isinstance(key, bool) or key is None:
        return "true" if key is True else "false" if key is False else "null"
    if isinstance(key, int):
        return str(int.__int__(key))
    if isinstance(key, float):
        return repr(float.__float__(key))
    try:
        text = _to_builtins(key)
    except Exception:  # whatever a user type raises: the key's repr is sent
        text = None
    return _text(text) if isinstance(text, str) else _text(_safe_repr(key))


def _unique_key(taken: dict[str, Any], text: str) -> str:
    """``text`` renamed so that it does not collide with a key already in ``taken``."""
    _note_once(
        "keys",
        f"two dict keys are the same JSON text (e.g. 1 and '1'): both are kept, the later one "
        f"renamed {text + ' (2)'!r}",
    )
    number = 2
    while f"{text} ({number})" in taken:
        number += 1
    return f"{text} ({number})"


def _builtins(value: Any) -> Any:
    """A non-builtin value as msgspec's builtins (dicts, lists, str...), or its bounded repr."""
    try:
        return _to_builtins(value)
    except (RecursionError, TypeError, ValueError, msgspec.EncodeError, OverflowError):
        pass
    try:
        return _to_builtins(value, enc_hook=_fallback)
    except Exception:  # whatever a user type raises: its repr is sent
        return _safe_repr(value)


def _json_safe(value: Any, depth: int = 2) -> Any:
    """A copy of ``value`` that encodes as JSON the collector accepts; never raises.

    ``depth`` is the nesting depth ``value`` has if it is a container (a field of an event: 2,
    the event counting as 1). Containers deeper than ``MAX_NESTING_DEPTH`` and a container found
    inside itself become a marker string; text loses its lone surrogates; str/int/float
    subclasses become their plain value; keys become their JSON text (colliding ones renamed);
    anything else is converted (dataclasses, models, datetimes...) or sent as its ``repr``.
    """
    return _safe(value, depth, set())


def _safe(value: Any, depth: int, path: set[int]) -> Any:
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind in _LEAVES:
        return value
    if kind is dict or kind is list or kind is tuple:
        return _safe_container(value, depth, path)
    if isinstance(value, enum.Enum):
        value = value.value
        return _safe(value, depth, path)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    converted = _builtins(value)
    kind = type(converted)
    if kind is dict or kind is list:
        return _safe_container(converted, depth, path)
    return _text(converted) if kind is str else converted


def _safe_container(value: Any, depth: int, path: set[int]) -> Any:
    if depth > _MAX_NESTING_DEPTH:
        _note_once(
            "depth",
            f"a value nested deeper than {_MAX_NESTING_DEPTH} levels (the documented limit, the "
            f"event counting as 1) is cut: sent as {_DEEP_MARKER!r}",
        )
        return _DEEP_MARKER
    ident = id(value)
    if ident in path:
        _note_once("cycle", f"a container inside itself is cut: sent as {_CYCLE_MARKER!r}")
        return _CYCLE_MARKER
    path.add(ident)
    try:
        if type(value) is not dict:
            return [_safe(item, depth + 1, path) for item in value]
        out: dict[str, Any] = {}
        for key, item in value.items():
            text = _key_text(key)
            if text in out:
                text = _unique_key(out, text)
            out[text] = _safe(item, depth + 1, path)
        return out
    finally:
        path.discard(ident)


def _fits(value: Any, depth: int) -> bool:
    """True if ``value``, at ``depth``, is a scalar or builtin containers of scalars (str keys)
    within the nesting limit: it encodes as it is. Copies nothing; a cycle fails at the limit."""
    kind = type(value)
    if kind in _LEAVES:
        return True
    if depth > _MAX_NESTING_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in _LEAVES and not _fits(item, depth + 1)):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 - all() over a generator costs ~2x more
            if type(item) not in _LEAVES and not _fits(item, depth + 1):
                return False
        return True
    return False


def _make_sendable(event: Event, names: Sequence[str]) -> None:
    """Replace the fields ``names`` of ``event`` by their :func:`_json_safe` copies."""
    for name in names:
        value = getattr(event, name)
        if type(value) not in _LEAVES and type(value) is not datetime:
            setattr(event, name, _safe(value, 2, set()))
        elif type(value) is str and not value.isascii():
            setattr(event, name, _text(value))


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
    # True when every free field is flat, so needs no _json_safe walk (see _compile_flat_check).
    _is_flat: ClassVar[Callable[[Event], bool]]
    # Typed fields checked at record time: name -> (allowed types, how to fix).
    _typed_fields: ClassVar[tuple[tuple[str, tuple[type, ...], str], ...]] = ()
    # The record-time check of the class, compiled from the two above (see _compile_checker).
    _check: ClassVar[Callable[[Event, float], None]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._check = _compile_checker(cls)
        cls._is_flat = _compile_flat_check(cls)

    def ensure_id(self) -> str:
        """The event's id, made now if it has none yet (to link another event to this one)."""
        if self.id is None:
            self.id = _new_event_id()
        return self.id

    def prepare(self, session_id: str, trace_id: str) -> bytes:
        """Check, stamp and encode the event as it is now (what the sync facade does).

        Returns:
            The event's JSON, as sent. Never fails on what a field holds: values are made
            sendable as the module docstring says (converted or ``repr``, surrogates replaced,
            nesting cut at ``MAX_NESTING_DEPTH``).

        Raises:
            InvalidEvent: a typed field holds a value of the wrong type (names the field).
        """
        self._check(time.time())
        _finalize(self, session_id, trace_id)
        return _encode_event(self)


def _bad_field(event: Event, name: str, value: Any, fix: str) -> None:
    raise InvalidEvent(
        f"{type(event).__name__}.{name} must be {fix}, got {type(value).__name__} "
        f"{_safe_repr(value)[:80]}"
    )


# ---------------------------------------------------------------------------------------------
# Record time: check the typed fields and stamp the end (the hot path, compiled per class).
# ---------------------------------------------------------------------------------------------
_Checker = Callable[["Event", float], None]

_TIME_FIX = "a datetime, an ISO 8601 str or seconds since the epoch (a float)"
_TIMES = (datetime, str, int, float)


def _compile_checker(cls: type[Event]) -> _Checker:
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
    function: _Checker = namespace["check"]
    return function


Event._check = _compile_checker(Event)


def _compile_flat_check(cls: type[Event]) -> Callable[[Event], bool]:
    """Build ``cls``'s test "every free field is flat" as straight-line code.

    Flat: None, a str/int/float/bool, or dicts (with str keys), lists and tuples of those,
    within the nesting limit (see :func:`_fits`). Such a value encodes as it is, with no key
    collision. The exporter runs this for every event, so a loop over field names (~2x slower)
    is avoided, and a dict of scalars (the common ``params``) is checked inline.
    """
    lines = ["def is_flat(self):"]
    for name in cls._free_fields:
        lines += [
            f"    v = self.{name}",
            "    if v is not None:",
            "        t = type(v)",
            "        if t is dict:",
            "            for k, x in v.items():",
            "                if type(k) is not str or (type(x) not in leaves and not fits(x, 3)):",
            "                    return False",
            "        elif t not in leaves and not fits(v, 2):",
            "            return False",
        ]
    lines.append("    return True")
    namespace: dict[str, Any] = {"leaves": _LEAVES, "fits": _fits}
    exec("\n".join(lines), namespace)  # code built above from field names only
    function: Callable[[Event], bool] = namespace["is_flat"]
    return function


Event._is_flat = _compile_flat_check(Event)


# ---------------------------------------------------------------------------------------------
# Send time: ids, timestamps as datetimes, and the encoding (in the exporter, off the hot path).
# ---------------------------------------------------------------------------------------------
def _finalize(event: Event, session_id: str, trace_id: str | None) -> None:
    """Fill in what the wire needs: the event id, the session's ids, timestamps as datetimes."""
    _wire_events((event,), session_id, trace_id)


def _wire_events(
    payloads: Sequence[Event | bytes], session_id: str, trace_id: str | None
) -> list[Event | msgspec.Raw]:
    """The events of one request, ready for one msgspec call.

    Events get their id, the session's ids and datetime timestamps (in place: the exporter owns
    them by now); already-encoded events (bytes) are wrapped as ``msgspec.Raw``. The exporter
    runs this for every event, so it is one loop with everything inlined, and epoch timestamps
    are converted to datetimes in one msgspec call per slice (~8x cheaper than one
    ``datetime.fromtimestamp`` each).

    Free fields that are not flat (a scalar, or a dict/list of scalars with str keys) are
    replaced by their :func:`_json_safe` copies, which bounds their nesting depth; flat values
    (nearly all) cost a few type checks. Text with lone surrogates is left to
    :func:`_encode_event`, where encoding it fails.
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
        if not event._is_flat():
            _make_sendable(event, event._free_fields)
        event_id = event.id
        if event_id is None:
            event_id = event.id = prefix + "%012x" % next(counter)  # noqa: UP031 - see _new_event_id
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
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)


def _encode_event(event: Event) -> bytes:
    """One finalized event as JSON; never fails on what a field holds.

    If msgspec refuses the event (text with lone surrogates, a value JSON cannot hold, a str
    subclass in a typed field...), every field is replaced by its :func:`_json_safe` copy, which
    msgspec always encodes, and the event is encoded again.
    """
    try:
        return _encode(event)
    except _ENCODE_ERRORS:
        pass
    _make_sendable(event, event.__struct_fields__)
    return _encode(event)


def _describe_oversize(event: Event, size: int, limit: int) -> str:
    """Why ``event`` cannot be sent: its encoded size, the limit, and its largest field."""
    sizes = {}
    for name in event.__struct_fields__:
        try:
            sizes[name] = len(_encode(getattr(event, name)))
        except _ENCODE_ERRORS:  # only sizing the fields for the message
            sizes[name] = len(_safe_repr(getattr(event, name)))
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
