"""What every dashboard page shares: sign-in, the layout, static files and security headers.

The dashboard is server-rendered HTML (Jinja2 templates in ``templates/``, autoescaped) with a
few hand-written ES modules (``static/``) for the live parts. Its route modules
(``routes/_dashboard.py`` and any later one) get one :class:`Pages` per app from
:func:`pages_of` and use it for everything below, so they never import each other.

How a route module adds a page::

    from .._dashboard import pages_of

    def add_routes(app: web.Application, ctx: Context) -> None:
        pages = pages_of(ctx)

        async def overview(request: web.Request) -> web.StreamResponse:
            project = await pages.require_project(request)          # or a redirect to sign-in
            return await pages.render(request, "overview.html", project, section="overview")

        async def overview_data(request: web.Request) -> web.StreamResponse:
            project = await pages.require_project(request, page=False)  # or 401 JSON
            return json_response({...})

        app.add_routes([web.get("/overview", pages.page(overview)),
                        web.get("/ui/api/overview", pages.api(overview_data))])

``templates/overview.html`` starts with ``{% extends "base.html" %}`` and fills
``{% block content %}`` (and ``{% block scripts %}`` with
``<script type="module" src="{{ static('overview.js') }}"></script>``); ``section`` marks the
active nav link. Read through ``ctx.reader`` only.

Sign-in: ``POST /signin`` with a project API key (a form field, never a URL) sets a signed,
HttpOnly, SameSite=Strict cookie naming the project and the key's hash; every request checks
that the key is still live (cached for ``KEY_CACHE_SECONDS``, as the APIs do), so a revoked key's
sign-in stops working within that time. The cookie expires after
``CollectorSettings.dashboard_signin_expiry`` seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mimetypes
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import msgspec
from aiohttp import hdrs, web

from .. import _auth as auth
from .._context import Context
from .._http import Handler, HttpError, fail, json_response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "COOKIE_NAME",
    "Pages",
    "SignInCookie",
    "SignInLimiter",
    "pages_of",
    "safe_next",
]

HERE = Path(__file__).parent
COOKIE_NAME = "agentops_dashboard"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
# A sign-in form is a few hundred bytes; nothing bigger is read before the key is checked.
MAX_FORM_BYTES = 4096


# --- the sign-in cookie -----------------------------------------------------------------------


class _CookieClaims(msgspec.Struct, frozen=True, array_like=True):
    project_id: str
    key_hash: str
    exp: float


_claims_encoder = msgspec.json.Encoder()
_claims_decoder = msgspec.json.Decoder(_CookieClaims)


class SignInCookie:
    """Signs and reads the dashboard's sign-in cookie: ``payload.mac`` (base64url, HMAC-SHA256).

    The payload names the project, the SHA-256 of the key it was signed in with (what the
    storage keeps, not the key) and the expiry.

    Args:
        key: The HMAC key (derived from the collector's secret: every collector on the same
            database accepts the cookies of the others, across restarts).
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "SignInCookie(<key>)"

    def _mac(self, payload: bytes) -> bytes:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload, hashlib.sha256).digest())

    def issue(
        self, project_id: str, key_hash: str, lifetime: float, now: float | None = None
    ) -> str:
        """The cookie value for a sign-in valid ``lifetime`` seconds."""
        exp = round((time.time() if now is None else now) + lifetime, 3)
        payload = base64.urlsafe_b64encode(
            _claims_encoder.encode(_CookieClaims(project_id, key_hash, exp))
        )
        return (payload.rstrip(b"=") + b"." + self._mac(payload).rstrip(b"=")).decode("ascii")

    def read(self, value: str, now: float | None = None) -> tuple[str, str] | None:
        """``(project_id, key_hash)`` of a valid, unexpired cookie; None for anything else."""
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            return None
        payload, dot, mac = raw.partition(b".")
        payload += b"=" * (-len(payload) % 4)
        if not dot or not hmac.compare_digest(mac, self._mac(payload).rstrip(b"=")):
            return None
        try:
            claims = _claims_decoder.decode(base64.urlsafe_b64decode(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            return None
        if (time.time() if now is None else now) >= claims.exp:
            return None
        return claims.project_id, claims.key_hash


class SignInLimiter:
    """Failed sign-ins per client address: a token bucket of ``per_minute`` attempts.

    A burst of ``per_minute`` failures, then one more every ``60 / per_minute`` seconds. While an
    address has none left, every sign-in from it (even with a right key) is answered 429, so
    guessing goes no faster than the bucket refills.
    """

    _MAX_ADDRESSES = 10_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(max(1, per_minute))
        self.rate = self.capacity / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str) -> float:
        tokens, at = self._buckets.get(address, (self.capacity, self._clock()))
        return min(self.capacity, tokens + (self._clock() - at) * self.rate)

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may try again (0: now)."""
        tokens = self._tokens(address)
        if tokens >= 1.0:
            return 0
        return max(1, int((1.0 - tokens) / self.rate + 0.999))

    def failed(self, address: str) -> None:
        """Count a failed sign-in of ``address``."""
        if len(self._buckets) >= self._MAX_ADDRESSES:
            now = self._clock()
            full = [a for a, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= 1]
            for stale in full:
                del self._buckets[stale]
            if len(self._buckets) >= self._MAX_ADDRESSES:
                self._buckets.clear()
        self._buckets[address] = (self._tokens(address) - 1.0, self._clock())


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path on this site (never another host), else ``/sessions``."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(c in value for c in "\r\n\t\\")
    ):
        return "/sessions"
    return value


# --- the pages -----------------------------------------------------------------------------


class _Static:
    """The files of ``static/``, read once, each with its content type and ETag."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                data = path.read_bytes()
                kind = {".js": "text/javascript", ".css": "text/css"}.get(path.suffix)
                kind = kind or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                version = hashlib.sha256(data).hexdigest()[:12]
                self.files[path.name] = (data, kind, version)

    def url(self, name: str) -> str:
        """The URL of ``static/name`` with its content version (cached for good)."""
        return f"/static/{name}?v={self.files[name][2]}"


class Pages:
    """The dashboard's shared parts, one per app (see :func:`pages_of`).

    Attributes:
        ctx: The collector's shared context (read through ``ctx.reader`` only).
        cookies: Signs the sign-in cookie.
        limiter: Counts failed sign-ins per client address.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cookies = SignInCookie(ctx.signer.derive_key(b"dashboard sign-in"))
        self.limiter = SignInLimiter(ctx.settings.signin_attempts_per_minute)
        self.static = _Static(HERE / "static")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["static"] = self.static.url
        self._names: dict[str, str] = {}

    def __repr__(self) -> str:
        return "Pages(<dashboard>)"

    # --- who is signed in ----------------------------------------------------------------

    async def signed_in_project(self, request: web.Request) -> str | None:
        """The project of the request's sign-in cookie, if it is valid and its key still live."""
        value = request.cookies.get(COOKIE_NAME)
        claims = self.cookies.read(value) if value else None
        if claims is None:
            return None
        project_id, key_hash = claims
        if await auth.live_key_project(self.ctx, key_hash) != project_id:
            return None
        return project_id

    async def require_project(self, request: web.Request, *, page: bool = True) -> str:
        """The signed-in project; every dashboard page and JSON call starts with it.

        Without a valid sign-in a page (``page=True``) redirects to ``/signin`` and back
        afterwards; a JSON call (``page=False``) is answered 401.
        """
        project = await self.signed_in_project(request)
        if project is not None:
            return project
        if page:
            raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
        fail(401, "not signed in, or the sign-in expired or its key was revoked: sign in again")

    def sign_in(
        self, response: web.StreamResponse, request: web.Request, project: str, key_hash: str
    ) -> None:
        """Set the sign-in cookie for ``project`` on ``response``."""
        lifetime = self.ctx.settings.dashboard_signin_expiry
        response.set_cookie(
            COOKIE_NAME,
            self.cookies.issue(project, key_hash, lifetime),
            max_age=int(lifetime),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    @staticmethod
    def sign_out(response: web.StreamResponse) -> None:
        """Delete the sign-in cookie."""
        response.del_cookie(COOKIE_NAME, path="/")

    @staticmethod
    def check_origin(request: web.Request) -> None:
        """403 for a POST sent from another site: its ``Origin`` (else ``Referer``) names
        another host than this one.

        Hosts are compared, not schemes: behind a proxy that ends TLS the browser says
        ``https://`` while the collector sees plain HTTP.
        """
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            origin = request.headers.get(hdrs.REFERER)
            if origin is None:
                return  # not a browser's cross-site form: SameSite=Strict guards the rest
        try:
            host = urlsplit(origin).netloc
        except ValueError:
            host = ""
        if not host or host.lower() != request.host.lower():
            fail(403, "cross-site request refused: the form must be sent from this dashboard")

    async def project_name(self, project_id: str) -> str:
        """The project's name (cached: projects are never renamed)."""
        name = self._names.get(project_id)
        if name is None:
            name = await self.ctx.reader.project_name(project_id) or project_id
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[project_id] = name
        return name

    # --- answers ---------------------------------------------------------------------------

    async def render(
        self,
        request: web.Request,
        template: str,
        project_id: str | None,
        *,
        status: int = 200,
        **values: Any,
    ) -> web.Response:
        """``template`` (which extends ``base.html``) as an HTML answer.

        The layout gets ``project_name`` (None: signed out, no nav) and ``section`` (the active
        nav link: ``"sessions"``, ``"overview"``), plus ``values``.
        """
        values.setdefault("section", "")
        values.setdefault("title", "")
        name = await self.project_name(project_id) if project_id is not None else None
        html = self.env.get_template(template).render(project_name=name, **values)
        response = web.Response(text=html, status=status, content_type="text/html")
        response.headers[hdrs.CACHE_CONTROL] = "no-store"
        return response

    def page(self, handler: Handler) -> Handler:
        """``handler`` as a page: security headers, and errors shown as an HTML page."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except HttpError as exc:
                response = await self.render(
                    request,
                    "error.html",
                    None,
                    status=exc.status,
                    message=exc.message,
                    title="Error",
                )
            except web.HTTPException as exc:
                exc.headers.update(_SECURITY_HEADERS)
                raise
            response.headers.update(_SECURITY_HEADERS)
            return response

        return wrapped

    def api(self, handler: Handler) -> Handler:
        """``handler`` as a dashboard JSON call: security headers, never cached."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except HttpError as exc:
                response = json_response({"message": exc.message}, exc.status)
            response.headers.update(_SECURITY_HEADERS)
            response.headers[hdrs.CACHE_CONTROL] = "no-store"
            return response

        return wrapped

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        """``GET /static/{name}``: versioned URLs are cached for good, others revalidated."""
        entry = self.static.files.get(request.match_info["name"])
        if entry is None:
            fail(404, "no such file")
        data, kind, version = entry
        etag = f'"{version}"'
        headers = dict(_SECURITY_HEADERS)
        headers[hdrs.ETAG] = etag
        if request.query.get("v") == version:
            headers[hdrs.CACHE_CONTROL] = "public, max-age=31536000, immutable"
        else:
            headers[hdrs.CACHE_CONTROL] = "no-cache"
        if request.headers.get(hdrs.IF_NONE_MATCH) == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type=kind, headers=headers)


_pages: weakref.WeakKeyDictionary[Context, Pages] = weakref.WeakKeyDictionary()


def pages_of(ctx: Context) -> Pages:
    """The :class:`Pages` of an app's context (made on first use, one per context)."""
    pages = _pages.get(ctx)
    if pages is None:
        pages = _pages[ctx] = Pages(ctx)
    return pages
