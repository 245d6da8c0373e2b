"""Who is calling: each credential the collector accepts, resolved to a :class:`Principal`.

One resolver per kind of credential, each ``async (ctx, request) -> Principal``:

- :func:`api_key_header`: an API key in ``X-Agentops-Api-Key`` (v2 create_session, the read API).
- :func:`bearer_api_key`: an API key as ``Authorization: Bearer <key>`` (OTLP exporters);
  :func:`api_key` takes either form.
- :func:`session_token`: a session JWT as ``Authorization: Bearer <jwt>`` (the v2 calls of one
  session); its principal always names the session.
- :func:`project_token`: a project JWT (no session claim) as ``Authorization: Bearer <jwt>``,
  from the ``/v3/auth/token`` of the current agentops SDK.
- :func:`project_credential`: any of the project's credentials (API key header, bearer API key,
  bearer project JWT): what OTLP senders and the v4 uploads show.

Each answers 401 with a message that says what is missing or wrong; a key or token is never in a
message or a log line. API keys are stored only as hashes (:func:`hash_key`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from aiohttp import web

from ._context import Context
from ._http import fail
from ._jwt import Claims, ExpiredToken, InvalidToken
from ._storage import Storage

__all__ = [
    "API_KEY_HEADER",
    "Principal",
    "SessionPrincipal",
    "api_key",
    "api_key_header",
    "bearer_api_key",
    "hash_key",
    "live_key_project",
    "new_key",
    "new_project",
    "new_secret",
    "project_credential",
    "project_for_api_key",
    "project_token",
    "session_token",
]

API_KEY_HEADER = "X-Agentops-Api-Key"


@dataclass(frozen=True)
class Principal:
    """Whom a request acts for: a project, and for session calls one of its sessions."""

    project_id: str
    session_id: str | None = None


@dataclass(frozen=True)
class SessionPrincipal(Principal):
    """The principal of a session token: always one session."""

    session_id: str


def hash_key(api_key: str) -> str:
    """What is stored for an API key: its SHA-256 (keys are random UUIDs, so no salt needed)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


async def new_project(storage: Storage, name: str) -> tuple[str, str]:
    """Create a project with a fresh API key; returns ``(project_id, api_key)``."""
    project_id = str(uuid.uuid4())
    api_key = str(uuid.uuid4())
    await storage.create_project(project_id, name, hash_key(api_key))
    return project_id, api_key


async def new_key(storage: Storage, project_id: str) -> str | None:
    """A fresh API key for an existing project (to rotate keys); None when there is none."""
    api_key = str(uuid.uuid4())
    return api_key if await storage.add_key(project_id, hash_key(api_key)) else None


def new_secret() -> bytes:
    """A fresh JWT secret."""
    return secrets.token_bytes(32)


# --- API keys ----------------------------------------------------------------------------


async def api_key_header(ctx: Context, request: web.Request) -> Principal:
    """The project of the API key in ``X-Agentops-Api-Key``."""
    return Principal(await _project_of_key(ctx, request.headers.get(API_KEY_HEADER)))


async def bearer_api_key(ctx: Context, request: web.Request) -> Principal:
    """The project of an API key sent as ``Authorization: Bearer <key>``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return Principal(await _project_of_key(ctx, token if scheme.lower() == "bearer" else None))


async def api_key(ctx: Context, request: web.Request) -> Principal:
    """The project of an API key in ``X-Agentops-Api-Key``, else in ``Authorization: Bearer``."""
    if request.headers.get(API_KEY_HEADER):
        return await api_key_header(ctx, request)
    return await bearer_api_key(ctx, request)


async def project_for_api_key(ctx: Context, api_key: str | None) -> str:
    """The project of an API key given in a request body (``/v3/auth/token``); 401 if none."""
    return await _project_of_key(ctx, api_key)


async def live_key_project(ctx: Context, key_hash: str) -> str | None:
    """The project of a live API key, by its hash (:func:`hash_key`); None when the key is
    unknown or revoked.

    What the storage said is trusted for ``KEY_CACHE_SECONDS``: a revoked key (and a dashboard
    sign-in made with it) stops working within that time, as for every API.
    """
    project = ctx.cached_key_project(key_hash)
    if project is not None:
        return project
    project = await ctx.storage.project_for_key(key_hash)
    ctx.remember_key_project(key_hash, project)
    return project


async def _project_of_key(ctx: Context, api_key: str | None) -> str:
    if not api_key:
        fail(401, "missing API key (X-Agentops-Api-Key header)")
    if not api_key.isascii():  # keys are UUIDs; this one cannot be any project's
        fail(401, "invalid API key: not ASCII")
    project = await live_key_project(ctx, hash_key(api_key.strip()))
    if project is None:
        fail(401, "invalid or revoked API key")
    return project


# --- tokens ------------------------------------------------------------------------------


async def session_token(ctx: Context, request: web.Request) -> SessionPrincipal:
    """The session and project of a session JWT (``Authorization: Bearer <jwt>``)."""
    claims = _bearer_claims(ctx, request, "session")
    if claims.session_id is None:
        fail(401, "Invalid Token: a project token; session calls need the jwt of create_session")
    return SessionPrincipal(claims.project_id, claims.session_id)


async def project_token(ctx: Context, request: web.Request) -> Principal:
    """The project of a project JWT (``Authorization: Bearer <jwt>``, no session claim)."""
    claims = _bearer_claims(ctx, request, "project")
    if claims.session_id is not None:
        fail(401, "Invalid Token: a session token, not a project token")
    return Principal(claims.project_id)


async def project_credential(ctx: Context, request: web.Request) -> Principal:
    """The project of an API key (header or bearer) or of a bearer project JWT.

    A bearer credential shaped like a JWT (``header.payload.signature``) is read as a project
    token; anything else as an API key.
    """
    if request.headers.get(API_KEY_HEADER):
        return await api_key_header(ctx, request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip().count(".") == 2:
        return await project_token(ctx, request)
    return await bearer_api_key(ctx, request)


def _bearer_claims(ctx: Context, request: web.Request, kind: str) -> Claims:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        fail(401, f"missing {kind} token (Authorization: Bearer <jwt>)")
    try:
        return ctx.signer.verify(token.strip())
    except ExpiredToken:
        fail(401, "Expired Token")
    except InvalidToken:
        fail(401, "Invalid Token")
