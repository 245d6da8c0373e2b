"""One session per HTTP request for any ASGI application (FastAPI, Starlette, ...).

Example:
    >>> from fastapi import FastAPI
    >>> from agentops_async.integrations.asgi import SessionMiddleware
    >>> app = FastAPI()
    >>> app.add_middleware(SessionMiddleware, exclude_paths=["/health"])
"""

from __future__ import annotations

from ._asgi import CLIENT_STATE_KEY, SessionMiddleware

__all__ = ["CLIENT_STATE_KEY", "SessionMiddleware"]
