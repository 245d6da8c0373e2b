"""A FastAPI service under a real uvicorn server on 127.0.0.1, for the ASGI integration tests.

Each request records events with ids the test knows (``ids_for``): one from a dependency, one
from the handler and, for the requests that succeed, one from a BackgroundTask. The handler
notes the id of the session it ran in, by request number.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException

import agentops_async as ao
from agentops_async.integrations.fastapi import SessionMiddleware, lifespan

_NAMESPACE = uuid.UUID("6f1b3f0e-8e0c-4a57-9a57-3c2b5f9f4c11")


def event_id(n: int, where: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{n}:{where}"))


def outcome_of(n: int) -> str:
    """What request ``n`` does: ok, raise (an exception), http500, http404."""
    return {7: "raise", 8: "http500", 9: "http404"}.get(n % 10, "ok")


def ids_for(n: int) -> list[str]:
    """The ids of the events request ``n`` records itself (an ErrorEvent comes on top)."""
    ids = [event_id(n, "dependency"), event_id(n, "handler")]
    if outcome_of(n) == "ok":
        ids.append(event_id(n, "background"))
    return ids


def make_app(client: ao.AsyncClient | None, **middleware: Any) -> tuple[FastAPI, dict[int, str]]:
    """The service, and the map request number -> id of the session its handler ran in."""
    seen: dict[int, str] = {}
    app = FastAPI(lifespan=lifespan(client=client, close_timeout=30.0))
    app.add_middleware(SessionMiddleware, **middleware)

    async def recorded_dependency(n: int) -> int:
        await ao.record(ao.ActionEvent(id=event_id(n, "dependency"), action_type="dependency"))
        return n

    async def background_work(n: int) -> None:
        await asyncio.sleep(0)  # after the response went out
        await ao.record(ao.ToolEvent(id=event_id(n, "background"), name="background"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/items/{n}")
    async def item(
        background: BackgroundTasks, n: int = Depends(recorded_dependency)
    ) -> dict[str, Any]:
        session = ao.get_current_session()
        assert session is not None
        seen[n] = session.session_id
        await ao.record(ao.ActionEvent(id=event_id(n, "handler"), action_type="handler"))
        outcome = outcome_of(n)
        if outcome == "raise":
            raise RuntimeError(f"request {n} broke")
        if outcome == "http500":
            raise HTTPException(status_code=500, detail="upstream failed")
        if outcome == "http404":
            raise HTTPException(status_code=404, detail="no such item")
        background.add_task(background_work, n)
        return {"n": n, "session_id": session.session_id}

    return app, seen


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port (lifespan on); yields the base URL.

    The socket is bound and listening before the server starts, so requests made at once wait
    in the backlog rather than racing the startup.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)
        sock.close()


async def drive(base_url: str, count: int, concurrency: int) -> dict[int, int]:
    """GET /items/0..count-1 with ``concurrency`` requests in flight; returns the statuses."""
    import httpx

    statuses: dict[int, int] = {}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:

        async def one(n: int) -> None:
            async with limit:
                statuses[n] = (await http.get(f"/items/{n}")).status_code

        await asyncio.gather(*(one(n) for n in range(count)))
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
    return statuses


EXPECTED_STATUS = {"ok": 200, "raise": 500, "http500": 500, "http404": 404}
EXPECTED_STATE = {"ok": "Success", "raise": "Fail", "http500": "Fail", "http404": "Success"}
