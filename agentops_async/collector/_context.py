"""What every route module shares: storage, signer, settings, caches, the body reader and the
decode threads, held by one :class:`Context` per app.

Routes get the context from :func:`~agentops_async.collector._app.build_app`; they never import
each other. The read side of the storage (for the read API, the CLI and the dashboard) is
:attr:`Context.reader`.
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from ._http import fail
from ._ingest import brackets
from ._jwt import JwtSigner
from ._prices import PriceTable
from ._reads import CursorCodec
from ._storage import SessionReader, Storage

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_DASHBOARD_SIGNIN_EXPIRY",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PROJECT_TOKEN_EXPIRY",
    "DEFAULT_SIGNIN_ATTEMPTS_PER_MINUTE",
    "KEY_CACHE_SECONDS",
    "CollectorSettings",
    "Context",
]

DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 75.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_PROJECT_TOKEN_EXPIRY = 30 * 86400.0
DEFAULT_DASHBOARD_SIGNIN_EXPIRY = 12 * 3600.0
DEFAULT_SIGNIN_ATTEMPTS_PER_MINUTE = 10
_CACHE_LIMIT = 100_000
# How long a collector trusts what it read about an API key: a key revoked (by the CLI, or by
# another collector on the same database) stops working within this many seconds.
KEY_CACHE_SECONDS = 5.0

_T = TypeVar("_T")
# Bodies up to this size are decoded on the loop (about a millisecond even for the tiniest
# events); larger ones in a decode thread.
_INLINE_DECODE_BYTES = 16 * 1024
# JSON bodies of the v2 API this small decode on the loop (see Context.decode_json).
_INLINE_JSON_BYTES = 512 * 1024
_INLINE_JSON_BRACKETS = 4096
# Decompressed bytes produced per step before the loop gets a turn (about a millisecond).
_INFLATE_SLICE = 1024 * 1024


@dataclass
class CollectorSettings:
    """How a collector behaves (not where it listens or stores).

    Attributes:
        jwt_expiry: Lifetime of the session tokens in seconds.
        project_token_expiry: Lifetime of the project tokens of ``POST /v3/auth/token`` in
            seconds (default 30 days: the agentops SDK 0.4 fetches one at start and never
            refreshes it, so a process that runs longer than this loses its spans).
        max_body_size: Largest accepted request body in bytes, after decompression (larger
            ones get 413).
        prices: Token prices for the cost of LLM events.
        admin_token: Enables ``POST /admin/projects`` for callers that send it in
            ``X-Agentops-Admin-Token``; None disables the admin API.
        body_timeout: Seconds to receive a whole request body (then 408).
        idle_timeout: Seconds a connection may wait for its next request (keep-alive) or
            for the first one before the collector closes it.
        header_timeout: Seconds from the first byte of a request to the end of its headers
            (then 408 and the connection is closed: slow senders cannot hold it).
        max_connections: Open connections at most; beyond it the longest-idle one is closed
            to make room, or the new one when none is idle. Lowered to what the process's
            open-files limit allows.
        dashboard_signin_expiry: Seconds a dashboard sign-in lasts (then the browser asks for
            the key again). A revoked key's sign-in stops working within ``KEY_CACHE_SECONDS``.
        signin_attempts_per_minute: Failed dashboard sign-ins allowed per client address and
            minute (a burst of as many, then one every ``60 / n`` seconds); beyond them 429.
    """

    jwt_expiry: float = 3600.0
    project_token_expiry: float = DEFAULT_PROJECT_TOKEN_EXPIRY
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    prices: PriceTable = field(default_factory=PriceTable)
    admin_token: str | None = None
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    dashboard_signin_expiry: float = DEFAULT_DASHBOARD_SIGNIN_EXPIRY
    signin_attempts_per_minute: int = DEFAULT_SIGNIN_ATTEMPTS_PER_MINUTE


class Context:
    """The state the routes share: one per app, made by ``build_app``.

    Attributes:
        storage: The open storage (writes go here; see :attr:`reader` for the read side).
        signer: Signs and verifies the collector's tokens.
        settings: How the collector behaves.
        cursors: Signs the read API's paging cursors.
    """

    def __init__(self, storage: Storage, signer: JwtSigner, settings: CollectorSettings) -> None:
        self.storage = storage
        self.signer = signer
        self.settings = settings
        self.cursors = CursorCodec(signer.derive_key(b"read cursors"))
        # Sessions never move between projects, so that mapping is cached for good; keys can be
        # revoked, so what a key maps to is trusted for KEY_CACHE_SECONDS only.
        self._key_projects: dict[str, tuple[str, float]] = {}
        self._session_projects: dict[str, str] = {}
        # Decoding a large body is CPU work of tens of milliseconds: it runs here, off the event
        # loop. Two threads bound the memory of decodes in flight (the GIL bounds the speed-up).
        self._decoder = ThreadPoolExecutor(2, thread_name_prefix="agentops-collector-decode")

    def __repr__(self) -> str:
        return f"Context(storage={type(self.storage).__name__})"

    @property
    def reader(self) -> SessionReader:
        """The read side of the storage: all that the read API (and the dashboard) may use."""
        return self.storage

    @property
    def prices(self) -> PriceTable:
        """Token prices for the cost of LLM events."""
        return self.settings.prices

    async def close(self, app: web.Application | None = None) -> None:
        """Stop the decode threads (an ``on_cleanup`` hook)."""
        self._decoder.shutdown(wait=False, cancel_futures=True)

    # --- caches --------------------------------------------------------------------------

    def cached_key_project(self, key_hash: str) -> str | None:
        """The project of an API key hash read less than KEY_CACHE_SECONDS ago, or None."""
        cached = self._key_projects.get(key_hash)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def remember_key_project(self, key_hash: str, project_id: str | None) -> None:
        """Cache what the storage said about a key hash (None: not a live key, forget it)."""
        if project_id is None:
            self._key_projects.pop(key_hash, None)
            return
        if len(self._key_projects) > _CACHE_LIMIT:
            self._key_projects.clear()
        self._key_projects[key_hash] = (project_id, time.monotonic() + KEY_CACHE_SECONDS)

    async def owner_of(self, session_id: str) -> str | None:
        """The project that owns a session (cached), or None when there is no such session."""
        project = self._session_projects.get(session_id)
        if project is None:
            project = await self.storage.session_project(session_id)
            if project is not None:
                self.remember_owner(session_id, project)
        return project

    def remember_owner(self, session_id: str, project_id: str) -> None:
        """Cache the project of a session (sessions never move between projects)."""
        if len(self._session_projects) > _CACHE_LIMIT:
            self._session_projects.clear()
        self._session_projects[session_id] = project_id

    # --- request bodies ------------------------------------------------------------------

    async def body(self, request: web.Request) -> bytes:
        """The request body, decompressed; called only once the request is authenticated.

        Bounded three ways: ``max_body_size`` on the bytes received and on the decompressed
        bytes (a 2 MB gzip body of 2 GB is refused after 32 MiB of output), ``body_timeout`` on
        the time to receive it (408), and the loop is never held by decompression (it runs in
        slices of :data:`_INFLATE_SLICE` bytes with a yield between them).
        """
        limit = self.settings.max_body_size
        encoding = _content_encoding(request)
        if request.content_length is not None and request.content_length > limit:
            fail(413, f"request body too large: {request.content_length} > {limit} bytes")
        timeout = self.settings.body_timeout
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(timeout):
                    return await _read_body(request, limit, encoding)
            return await asyncio.wait_for(_read_body(request, limit, encoding), timeout)
        except asyncio.TimeoutError:
            fail(408, f"request body not received within {timeout:g} s (--body-timeout)")
        except RequestPayloadError:
            fail(400, "malformed request body (framing or Content-Length does not match)")

    async def decode_json(self, body: bytes, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(body, *args, outline)`` for a JSON body of the v2 API: on the loop when it
        decodes quickly, else in a decode thread (without ``outline``: ``fn`` makes it there).

        The hand-off to a thread and back (a wake-up of the loop, and the GIL passed between
        the two threads while the loop serves other requests) costs more collector CPU than
        decoding a usual batch of 1,000 events (~1-1.5 ms; the SDK's are ~400 KB). How long a
        JSON body takes follows its bytes and its brackets (each ``{``/``[`` is an object or
        array for msgspec to walk, and bracket-heavy bodies take the depth checks' slow path).
        The body's outline (:func:`~agentops_async.collector._ingest.brackets`, which the
        decode needs anyway) counts them: a body of at most :data:`_INLINE_JSON_BYTES` bytes
        and :data:`_INLINE_JSON_BRACKETS` brackets took at most ~4.6 ms here, for the
        pathological 2,700 events that each name another session; 1-2 ms for other shapes
        (benchmarks/README.md).
        """
        if len(body) <= _INLINE_JSON_BYTES:
            outline = brackets(body)
            if len(outline) <= _INLINE_JSON_BRACKETS or len(body) <= _INLINE_DECODE_BYTES:
                return fn(body, *args, outline)
        return await self.off_loop(len(body), fn, body, *args)

    async def off_loop(self, size: int, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``: inline for a small body of ``size`` bytes, else in a decode thread.

        Small bodies are decoded inline (a thread hand-off costs more than decoding them). In
        the thread, what holds the GIL longest is one msgspec decode call (~10-25 ms for a
        32 MiB body of real events); bodies with too many events are refused before that.
        """
        if size <= _INLINE_DECODE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)


def _content_encoding(request: web.Request) -> str:
    """``""``, ``"gzip"`` or ``"deflate"``; a 415 for anything else."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding in ("", "identity"):
        return ""
    if encoding in ("gzip", "x-gzip", "deflate"):
        return encoding
    fail(415, "unsupported Content-Encoding (use gzip, deflate or none)")


def _inflater(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for a body that starts with ``first``.

    gzip and zlib headers are detected (wbits 32 + 15); ``deflate`` without the zlib header (raw
    deflate, which some clients send) is recognised by its first byte, as aiohttp does.
    """
    if encoding == "deflate" and (first[0] & 0x0F) != 8 and first[0] != 0x1F:
        return zlib.decompressobj(wbits=-15)
    return zlib.decompressobj(wbits=47)


async def _read_body(request: web.Request, limit: int, encoding: str) -> bytes:
    """Read (and inflate) the body in chunks; 413 as soon as either size passes ``limit``."""
    content = request.content
    received = 0
    parts: list[bytes] = []
    size = 0
    inflater: Any = None
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            fail(413, f"request body too large: more than {limit} bytes")
        if not encoding:
            parts.append(chunk)
            continue
        if inflater is None:
            inflater = _inflater(encoding, chunk)
        while chunk:
            try:
                out = inflater.decompress(chunk, min(_INFLATE_SLICE, limit - size + 1))
            except zlib.error:
                fail(400, "invalid compressed body (Content-Encoding)")
            size += len(out)
            if size > limit:
                fail(413, f"request body too large: more than {limit} bytes once decompressed")
            parts.append(out)
            chunk = inflater.unconsumed_tail
            if chunk:
                await asyncio.sleep(0)  # a bomb inflates slice by slice; others get the loop
    if encoding and (inflater is None or not inflater.eof):
        fail(400, "invalid compressed body: truncated (Content-Encoding)")
    return b"".join(parts)
