"""Client configuration: keyword arguments > environment variables > defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import msgspec

from ._limits import MAX_EVENTS_PER_REQUEST, MAX_TAG_LENGTH
from .errors import ConfigError

DEFAULT_ENDPOINT = "https://api.agentops.ai"

Backpressure = Literal["block", "drop"]
Protocol = Literal["agentops_v2", "otlp"]
PROTOCOLS = ("agentops_v2", "otlp")

# name -> (environment variable, parser)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _parse_tags(raw: str) -> list[str]:
    return [tag.strip() for tag in raw.split(",") if tag.strip()]


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "api_key": ("AGENTOPS_API_KEY", str),
    "parent_key": ("AGENTOPS_PARENT_KEY", str),
    "endpoint": ("AGENTOPS_API_ENDPOINT", str),
    "enabled": ("AGENTOPS_ENABLED", _parse_bool),
    "default_tags": ("AGENTOPS_DEFAULT_TAGS", _parse_tags),
    "max_queue_size": ("AGENTOPS_MAX_QUEUE_SIZE", int),
    "max_batch_size": ("AGENTOPS_MAX_BATCH_SIZE", int),
    "max_batch_bytes": ("AGENTOPS_MAX_BATCH_BYTES", int),
    "flush_interval": ("AGENTOPS_FLUSH_INTERVAL", float),
    "backpressure": ("AGENTOPS_BACKPRESSURE", str),
    "backpressure_timeout": ("AGENTOPS_BACKPRESSURE_TIMEOUT", float),
    "request_timeout": ("AGENTOPS_REQUEST_TIMEOUT", float),
    "max_retry_time": ("AGENTOPS_MAX_RETRY_TIME", float),
    "outage_warning_after": ("AGENTOPS_OUTAGE_WARNING_AFTER", float),
    "shutdown_timeout": ("AGENTOPS_SHUTDOWN_TIMEOUT", float),
    "instrument_otel": ("AGENTOPS_INSTRUMENT_OTEL", _parse_bool),
    "instrument_llm_calls": ("AGENTOPS_INSTRUMENT_LLM_CALLS", _parse_bool),
    "spool_dir": ("AGENTOPS_SPOOL_DIR", str),
    "spool_max_bytes": ("AGENTOPS_SPOOL_MAX_BYTES", int),
    "log_session_stats": ("AGENTOPS_LOG_SESSION_STATS", _parse_bool),
    "redact_secrets": ("AGENTOPS_REDACT_SECRETS", _parse_bool),
    "sample_rate": ("AGENTOPS_SAMPLE_RATE", float),
    "protocol": ("AGENTOPS_PROTOCOL", str),
    "session_batches": ("AGENTOPS_SESSION_BATCHES", _parse_bool),
    "max_concurrent_exports": ("AGENTOPS_MAX_CONCURRENT_EXPORTS", int),
}

# Most export requests in flight at once (``max_concurrent_exports``).
MAX_CONCURRENT_EXPORTS = 16


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an :class:`~agentops_async.AsyncClient` needs; immutable once built.

    Attributes:
        api_key: Project API key (a UUID). Without one the client is disabled: every call is a
            cheap no-op and a warning is logged once.
        parent_key: Optional parent project key, sent as ``X-Agentops-Parent-Key``.
        endpoint: Base URL of the AgentOps-compatible API (the collector: ``http://127.0.0.1:8000``).
        enabled: ``False`` turns the client into a no-op even with a key (tests, CI).
        default_tags: Tags added to every session (each at most ``MAX_TAG_LENGTH``, 256,
            characters).
        max_queue_size: Bound of the export queue, in items. Memory stays bounded by it (plus
            the batches taken out of it: two per lane of ``max_concurrent_exports``).
        max_batch_size: Most events in one ``create_events`` request (at most
            ``MAX_EVENTS_PER_REQUEST``, 10,000: the collector refuses larger requests).
        max_batch_bytes: Most encoded bytes in one ``create_events`` request; larger batches split.
        flush_interval: Longest time (s) an event waits in the queue before it is sent.
        backpressure: What ``await record()`` does when the buffer is full (the API is down or
            slower than recording). ``"drop"`` (the default): never waits; the event is dropped,
            counted in ``stats`` and warned about once, or written to the disk spool when
            ``spool_dir`` is set. ``"block"``: waits for room up to ``backpressure_timeout``, then
            drops; only for batch jobs that prefer slowing down to losing events, never in a
            request path (during an outage every record() would wait).
        backpressure_timeout: Longest wait for room with ``backpressure="block"``.
        request_timeout: Timeout (s) of one HTTP request.
        max_retry_time: How long (s) one request is retried before its items are dropped (counted).
        outage_warning_after: Seconds of failing delivery (no answer, or 429/502/503/504, and no
            success since) after which one WARNING says so, with the reason and the pending
            count; one INFO follows when delivery works again. Once per outage.
        shutdown_timeout: Bound (s) of ``close()`` and of ``end()``'s wait for acknowledgement.
        instrument_otel: Capture OpenTelemetry spans started inside a session (adds a span processor
            to the global SDK tracer provider, installing one if none is set).
        instrument_llm_calls: Turn on the installed GenAI instrumentations (OpenAI, Anthropic,
            ...) when the client is created, as :func:`agentops_async.instrument` does, so LLM
            calls made in a session are recorded as LLM events. Off by default; needs
            ``instrument_otel``. Nothing is turned on by a disabled client.
        log_session_stats: Log the stats line when a session ends.
        spool_dir: Directory of the disk spool (off when None): when the buffer is full, items go
            to disk instead of being dropped, and are replayed after the outage, or by the next
            process using the same directory. One process per directory.
        spool_max_bytes: Cap of the spool on disk; beyond it events are dropped and counted.
        before_send: ``before_send(event) -> event | None``, called for each event when its
            batch is prepared (in the exporter, not in ``record()``): return the event (changed
            or not) to send it, or None to drop it; dropped events are counted as
            ``stats.filtered``, not as lost. One that raises drops only that event (counted in
            ``dropped_by_reason``, logged once). See docs/hooks.md.
        redact_secrets: Replace common secrets (``sk-...`` keys, bearer tokens,
            ``Authorization:`` values, values of keys named like ``api_key``/``password``) in
            the free-form fields (params, returns, prompts, completions, logs) by
            ``[REDACTED]`` before sending. On by default.
        sample_rate: Fraction of sessions sent, from 0.0 to 1.0 (default 1.0: all). Decided once
            per session when it starts, deterministically from its session id; a session left
            out records nothing and sends nothing (counted as ``stats.sessions_sampled_out``).
        protocol: The export protocol: ``"agentops_v2"`` (the default: the AgentOps v2 API) or
            ``"otlp"`` (OTLP/HTTP traces to ``{endpoint}/v1/traces``). See docs/reliability.md.
        session_batches: With ``"agentops_v2"``, send many sessions' parts of an export in one
            request when the API offers it (the local collector's ``/v2/create_sessions``; the
            AgentOps service does not): one request per export instead of three per short
            session. False keeps to the standard v2 calls (a JWT per session). On by default.
        max_concurrent_exports: Export requests in flight at once, from 1 to 16. Sessions are
            spread over that many lanes (a session stays on its lane), each with one request on
            the wire while its next batch is prepared, so a session's events and updates still
            reach the API in the order they were recorded. More than one helps when the API's
            answers wait on a database commit (PostgreSQL) and the sessions are several; each
            lane may hold two batches beyond ``max_queue_size``. See docs/reliability.md.
    """

    api_key: str | None = None
    parent_key: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    enabled: bool = True
    default_tags: tuple[str, ...] = ()
    max_queue_size: int = 100_000
    max_batch_size: int = 1_000
    max_batch_bytes: int = 4 * 1024 * 1024
    flush_interval: float = 1.0
    backpressure: Backpressure = "drop"
    backpressure_timeout: float = 1.0
    request_timeout: float = 10.0
    max_retry_time: float = 300.0
    outage_warning_after: float = 5.0
    shutdown_timeout: float = 10.0
    instrument_otel: bool = True
    instrument_llm_calls: bool = False
    log_session_stats: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 1024**3
    before_send: Callable[[Any], Any] | None = None
    redact_secrets: bool = True
    sample_rate: float = 1.0
    protocol: Protocol = "agentops_v2"
    session_batches: bool = True
    max_concurrent_exports: int = 2

    def __post_init__(self) -> None:
        _check_positive(self, "max_queue_size", "max_batch_size", "max_batch_bytes")
        _check_positive(self, "spool_max_bytes")
        _check_positive(self, "flush_interval", "request_timeout", "shutdown_timeout")
        _check_positive(self, "outage_warning_after")
        _check_non_negative(self, "backpressure_timeout", "max_retry_time")
        if self.max_batch_size > MAX_EVENTS_PER_REQUEST:
            raise ConfigError(
                f"max_batch_size={self.max_batch_size!r} is above the limit of "
                f"{MAX_EVENTS_PER_REQUEST} events per request (MAX_EVENTS_PER_REQUEST; the API "
                f"refuses larger requests with 413): use max_batch_size <= "
                f"{MAX_EVENTS_PER_REQUEST} ({_where('max_batch_size')})"
            )
        exports = self.max_concurrent_exports
        if (
            isinstance(exports, bool)
            or not isinstance(exports, int)
            or not 1 <= exports <= MAX_CONCURRENT_EXPORTS
        ):
            raise ConfigError(
                f"max_concurrent_exports={exports!r} must be a whole number from 1 to "
                f"{MAX_CONCURRENT_EXPORTS} (export requests in flight at once) "
                f"({_where('max_concurrent_exports')})"
            )
        _check_tag_lengths(self.default_tags, "default_tags")
        if self.instrument_llm_calls and not self.instrument_otel:
            raise ConfigError(
                "instrument_llm_calls=True needs instrument_otel=True (sessions capture the "
                "instrumentations' spans through it): drop instrument_otel=False or "
                "AGENTOPS_INSTRUMENT_OTEL=0, or turn instrument_llm_calls off"
            )
        if self.backpressure not in ("block", "drop"):
            raise ConfigError(
                f"backpressure={self.backpressure!r} is not valid: use 'drop' (the default) or "
                "'block' (keyword backpressure= or AGENTOPS_BACKPRESSURE)"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"protocol={self.protocol!r} is not a known export protocol: use 'agentops_v2' "
                f"(the default) or 'otlp' ({_where('protocol')})"
            )
        if self.before_send is not None and not callable(self.before_send):
            raise ConfigError(
                f"before_send={self.before_send!r} is not callable: pass a function "
                "before_send(event) -> event | None (keyword before_send=)"
            )
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ConfigError(
                f"sample_rate={rate!r} must be a number from 0.0 (no session sent) to 1.0 "
                f"(every session) ({_where('sample_rate')})"
            )
        if not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"endpoint={self.endpoint!r} is not an http(s) URL: pass e.g. "
                "endpoint='http://127.0.0.1:8000' or set AGENTOPS_API_ENDPOINT"
            )

    @property
    def active(self) -> bool:
        """True when events are really sent (enabled and an API key is set)."""
        return self.enabled and bool(self.api_key)

    def __repr__(self) -> str:
        # The API keys never appear in a repr; show only whether they are set.
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in ("api_key", "parent_key"):
                value = "<set>" if value else None
            shown.append(f"{name}={value!r}")
        return f"Config({', '.join(shown)})"

    __str__ = __repr__


def _check_positive(config: Config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a number > 0 ({_where(name)})")


def _check_non_negative(config: Config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{name}={value!r} must be a number >= 0 ({_where(name)})")


def _where(name: str) -> str:
    env = _ENV.get(name)
    return f"keyword {name}= or {env[0]}" if env else f"keyword {name}="


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Build a :class:`Config` from keyword overrides, then the environment, then defaults.

    ``None`` in ``overrides`` means "not given" so that ``AsyncClient(api_key=None)`` still reads
    ``AGENTOPS_API_KEY``.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, (var, parse) in _ENV.items():
        raw = env.get(var)
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"environment variable {var}={raw!r} is not valid: {exc}") from None
    for name, value in (overrides or {}).items():
        if name not in Config.__struct_fields__:
            known = ", ".join(sorted(Config.__struct_fields__))
            raise ConfigError(f"unknown setting {name!r}; known settings: {known}")
        if value is not None:
            values[name] = value
    if "default_tags" in values:
        values["default_tags"] = tuple(check_tags(values["default_tags"], "default_tags"))
    if "endpoint" in values:
        values["endpoint"] = str(values["endpoint"]).rstrip("/")
    try:
        return Config(**values)
    except (TypeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def check_tags(tags: Any, field: str) -> list[str]:
    """Normalise tags: a string or an iterable of strings. Names the field on error.

    Raises:
        ConfigError: not strings, or a tag longer than ``MAX_TAG_LENGTH`` characters (the
            collector refuses such a session whole, so it is refused here, at the call).
    """
    if isinstance(tags, str):
        checked = [tags]
    elif isinstance(tags, (list, tuple, set, frozenset)):
        bad = [t for t in tags if not isinstance(t, str)]
        if bad:
            raise ConfigError(
                f"{field} must be a list of strings; got non-string item(s) {bad[:3]!r}: "
                "convert them with str() first"
            )
        checked = list(dict.fromkeys(tags))
    else:
        raise ConfigError(
            f"{field} must be a list of strings, got {type(tags).__name__}: "
            f"pass e.g. {field}=['a', 'b']"
        )
    _check_tag_lengths(checked, field)
    return checked


def _check_tag_lengths(tags: Iterable[str], field: str) -> None:
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH:
            raise ConfigError(
                f"{field}: the tag {tag[:40]!r}... is {len(tag)} characters long, above the "
                f"limit of {MAX_TAG_LENGTH} (MAX_TAG_LENGTH; the API refuses the whole session): "
                "shorten it, and put long text in an event's params instead"
            )
