"""FastAPI (and Starlette): the client's lifespan, on top of the generic ASGI middleware.

Example:
    >>> from fastapi import FastAPI
    >>> from agentops_async.integrations.fastapi import SessionMiddleware, lifespan
    >>> app = FastAPI(lifespan=lifespan(endpoint="http://127.0.0.1:8000"))
    >>> app.add_middleware(SessionMiddleware, exclude_paths=["/health"])
"""

from __future__ import annotations

from ._asgi import CLIENT_STATE_KEY, SessionMiddleware
from ._lifespan import lifespan

__all__ = ["CLIENT_STATE_KEY", "SessionMiddleware", "lifespan"]
