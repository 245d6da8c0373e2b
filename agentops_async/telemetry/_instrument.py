"""``instrument()``: turn on the installed GenAI instrumentations, wired to the session capture.

We do not patch LLM clients ourselves: the OpenTelemetry ecosystem instruments them (the official
``opentelemetry-instrumentation-*`` packages and OpenLLMetry's). :func:`instrument` finds the ones
that are installed, and turns each on with the providers the SDK captures from
(:mod:`._otel`): the application's global SDK ``TracerProvider``/``LoggerProvider`` when it set
one (our span router and content-log processor are added to it, nothing is replaced), else the
SDK's private providers, which are never installed globally. :func:`uninstrument` turns off
exactly the instrumentations :func:`instrument` turned on, and restores the environment
variables it set.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import ConfigError
from ._otel import capture_logger_provider, capture_tracer_provider

log = logging.getLogger("agentops_async")


class KnownInstrumentation(msgspec.Struct, frozen=True):
    """One instrumentation package :func:`instrument` knows.

    ``name`` is the package name without ``opentelemetry-instrumentation-``.
    """

    name: str
    family: str
    """The client library; by default one instrumentation per family is turned on."""
    module: str
    cls: str


# First of a family wins by default: the official OpenAI instrumentation over OpenLLMetry's (both
# turned on, every call would be two nested LLM spans, counted and priced twice).
KNOWN: tuple[KnownInstrumentation, ...] = tuple(
    KnownInstrumentation(*row)
    for row in (
        ("openai-v2", "openai", "opentelemetry.instrumentation.openai_v2", "OpenAIInstrumentor"),
        ("openai", "openai", "opentelemetry.instrumentation.openai", "OpenAIInstrumentor"),
        ("anthropic", "anthropic", "opentelemetry.instrumentation.anthropic",
         "AnthropicInstrumentor"),
        ("bedrock", "bedrock", "opentelemetry.instrumentation.bedrock", "BedrockInstrumentor"),
        ("vertexai", "vertexai", "opentelemetry.instrumentation.vertexai",
         "VertexAIInstrumentor"),
        ("google-genai", "google-genai", "opentelemetry.instrumentation.google_genai",
         "GoogleGenAiSdkInstrumentor"),
        ("cohere", "cohere", "opentelemetry.instrumentation.cohere", "CohereInstrumentor"),
        ("mistralai", "mistralai", "opentelemetry.instrumentation.mistralai",
         "MistralAiInstrumentor"),
        ("groq", "groq", "opentelemetry.instrumentation.groq", "GroqInstrumentor"),
        ("ollama", "ollama", "opentelemetry.instrumentation.ollama", "OllamaInstrumentor"),
        ("langchain", "langchain", "opentelemetry.instrumentation.langchain",
         "LangchainInstrumentor"),
        ("llamaindex", "llamaindex", "opentelemetry.instrumentation.llamaindex",
         "LlamaIndexInstrumentor"),
        ("crewai", "crewai", "opentelemetry.instrumentation.crewai", "CrewAIInstrumentor"),
        # opentelemetry-instrumentation-openai-agents (OpenLLMetry) and -openai-agents-v2 (the
        # official one) install the same module and class name.
        ("openai-agents", "openai-agents", "opentelemetry.instrumentation.openai_agents",
         "OpenAIAgentsInstrumentor"),
    )
)  # fmt: skip

# What the instrumentations read to decide whether prompts and completions are captured.
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TRACELOOP_CONTENT_ENV = "TRACELOOP_TRACE_CONTENT"

_lock = threading.Lock()
_active: dict[str, Any] = {}  # name -> the instrumentor we turned on
_env_set: dict[str, str | None] = {}  # variable -> its value before we set it


def instrument(
    *,
    client: Any = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    capture_content: bool | None = None,
) -> list[str]:
    """Turn on every installed GenAI instrumentation this SDK knows, wired to session capture.

    A model call made inside a session (``async with client.session():``) then becomes an
    ``LLMEvent`` of that session with model, token counts and messages, priced by the API; tool
    executions become ``ToolEvent``s, failed calls add an ``ErrorEvent``.

    Known packages (``opentelemetry-instrumentation-`` + name): ``openai-v2`` (the official
    OpenAI one), ``openai`` (OpenLLMetry's), ``anthropic``, ``bedrock``, ``vertexai``,
    ``google-genai``, ``cohere``, ``mistralai``, ``groq``, ``ollama``, ``langchain``,
    ``llamaindex``, ``crewai``, ``openai-agents``. Of ``openai-v2`` and ``openai``, only the
    official ``openai-v2`` is turned on when both are installed (both would capture each call
    twice), unless ``include`` names ``openai``. An instrumentation the application already
    turned on itself is left alone.

    When the application has set a global SDK ``TracerProvider`` (and ``LoggerProvider``), the
    SDK joins it: its span processors keep getting every span, ours is added once, nothing is
    replaced. Otherwise each instrumentation is given the SDK's private providers, and no global
    provider is installed. Calling it again does nothing more (idempotent).

    Args:
        client: The client whose sessions capture the calls (an ``AsyncClient`` or sync
            ``Client``; default: none checked). Its ``instrument_otel`` setting must be on (the
            default): with it off, sessions capture nothing, and this raises ``ConfigError``.
        include: Names to turn on (``["openai-v2"]``: the official OpenAI instrumentation;
            ``["openai"]``: OpenLLMetry's); default: every installed one, one per client.
        exclude: Names to leave off.
        capture_content: ``True``/``False`` sets what the instrumentations read to capture
            prompts and completions (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``,
            ``TRACELOOP_TRACE_CONTENT``) where the environment does not set it already;
            ``None`` (default) leaves the environment alone. See docs/instrumentation.md.

    Returns:
        The names turned on by this call and earlier ones (sorted).

    Raises:
        ConfigError: an unknown name in ``include``/``exclude``, or a ``client`` whose
            ``instrument_otel`` is off.

    Example:
        >>> import agentops_async
        >>> agentops_async.instrument(capture_content=True)  # doctest: +SKIP
        ['openai-v2']
    """
    _check_client(client)
    wanted = _select(include, exclude)
    with _lock:
        if capture_content is not None and _set_content_env(capture_content) and _active:
            log.warning(
                "agentops_async: instrument(capture_content=%s) changes nothing for %s, turned "
                "on before (instrumentations read the setting when turned on): call "
                "uninstrument() first",
                capture_content,
                ", ".join(sorted(_active)),
            )
        todo = [known for known in wanted if known.name not in _active]
        if todo:
            tracer_provider = capture_tracer_provider()
            logger_provider = capture_logger_provider()
            for known in todo:
                instrumentor = _turn_on(known, tracer_provider, logger_provider)
                if instrumentor is not None:
                    _active[known.name] = instrumentor
        return sorted(_active)


def uninstrument() -> list[str]:
    """Turn off what :func:`instrument` turned on, and restore the environment it changed.

    Instrumentations the application turned on itself stay on. The span and log processors the
    SDK added to the application's providers stay (a provider cannot remove one); they only
    capture spans of active sessions.

    Returns:
        The names turned off (sorted).
    """
    with _lock:
        done = sorted(_active)
        # Last turned on, first turned off: wrappers of one client method nest (wrapt).
        for name in reversed(list(_active)):
            instrumentor = _active.pop(name)
            try:
                instrumentor.uninstrument()
            except Exception:
                log.warning("agentops_async: could not uninstrument %s", name, exc_info=True)
        for variable, before in _env_set.items():
            if before is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = before
        _env_set.clear()
    return done


def instrumented() -> list[str]:
    """The names :func:`instrument` turned on and that are still on (sorted)."""
    with _lock:
        return sorted(_active)


# --- internals ---------------------------------------------------------------------------------
def _check_client(client: Any) -> None:
    if client is None:
        return
    config = getattr(client, "config", None)
    if config is None or not hasattr(config, "instrument_otel"):
        raise ConfigError(
            f"instrument(client={client!r}): pass an agentops_async.AsyncClient or Client"
        )
    if not config.instrument_otel:
        raise ConfigError(
            "instrument(): the client has instrument_otel=False, so its sessions capture no "
            "spans and the LLM calls would not be recorded: create it with "
            "instrument_otel=True (or unset AGENTOPS_INSTRUMENT_OTEL)"
        )


def _names(values: Iterable[str] | None, what: str) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    known = {k.name for k in KNOWN}
    chosen = set(values)
    unknown = sorted(chosen - known)
    if unknown:
        raise ConfigError(
            f"instrument({what}=...): unknown instrumentation(s) {unknown}; known names (the "
            f"package name without 'opentelemetry-instrumentation-'): {sorted(known)}"
        )
    return chosen


def _select(
    include: Iterable[str] | None, exclude: Iterable[str] | None
) -> list[KnownInstrumentation]:
    """The known instrumentations to turn on: installed, included (default: all, one per
    family), not excluded."""
    included = _names(include, "include")
    excluded = _names(exclude, "exclude") or set()
    chosen: list[KnownInstrumentation] = []
    families: set[str] = set()
    for known in KNOWN:
        if included is not None and known.name not in included:
            continue
        if known.name in excluded or not _installed(known.module):
            continue
        if included is None and known.family in families:
            continue  # e.g. OpenLLMetry's openai after the official openai-v2
        families.add(known.family)
        chosen.append(known)
    return chosen


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _turn_on(known: KnownInstrumentation, tracer_provider: Any, logger_provider: Any) -> Any:
    """The instrumentor of ``known`` turned on with our providers, or None (left alone)."""
    try:
        instrumentor = getattr(importlib.import_module(known.module), known.cls)()
    except Exception:
        log.warning(
            "agentops_async: could not load the %s instrumentation (%s.%s); skipped",
            known.name,
            known.module,
            known.cls,
            exc_info=True,
        )
        return None
    if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
        log.info("agentops_async: %s is already instrumented by the application", known.name)
        return None
    try:
        instrumentor.instrument(tracer_provider=tracer_provider, logger_provider=logger_provider)
    except Exception:
        log.warning("agentops_async: could not turn on %s; skipped", known.name, exc_info=True)
        return None
    # BaseInstrumentor leaves it off (and logs why) when the instrumented library is missing or
    # of a version it does not support.
    if not getattr(instrumentor, "is_instrumented_by_opentelemetry", True):
        log.info("agentops_async: %s is installed but its client library is not", known.name)
        return None
    return instrumentor


def _content_mode_on() -> str:
    """The value of OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT that puts content on the
    span for the installed official instrumentations: ``SPAN_ONLY`` where opentelemetry-util-genai
    runs the latest conventions, else the older ``true``."""
    try:
        from opentelemetry.util.genai.utils import is_experimental_mode
    except ImportError:
        return "true"
    try:
        return "SPAN_ONLY" if is_experimental_mode() else "true"
    except Exception:
        return "true"


def _set_content_env(on: bool) -> bool:
    """Set the content variables the environment does not set; True when one changed."""
    mode = _content_mode_on()
    values = {
        CONTENT_ENV: mode if on else ("NO_CONTENT" if mode == "SPAN_ONLY" else "false"),
        TRACELOOP_CONTENT_ENV: "true" if on else "false",
    }
    changed = False
    for variable, value in values.items():
        if variable in os.environ and variable not in _env_set:
            continue  # the user set it: theirs wins
        _env_set.setdefault(variable, os.environ.get(variable))
        changed |= os.environ.get(variable) != value
        os.environ[variable] = value
    return changed
