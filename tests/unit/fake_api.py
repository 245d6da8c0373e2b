"""An aioresponses-backed AgentOps v2 API for unit tests: scripted answers, recorded requests."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from aiohttp import ClientResponse
from aioresponses import CallbackResult as _CallbackResult
from aioresponses import aioresponses

ENDPOINT = "http://agentops.test"
API_KEY = "00000000-0000-4000-8000-00000000c0de"


class _NoStreamWriter:
    output_size = 0


class CompatResponse(ClientResponse):
    """aiohttp >= 3.14 requires ``stream_writer``; aioresponses 0.7.x does not pass one yet
    (aioresponses issue #289). Supplying an empty writer keeps the mock working on both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(*args, **kwargs)


_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


def CallbackResult(**kwargs: Any) -> _CallbackResult:
    return _CallbackResult(response_class=CompatResponse, **kwargs)


class FakeApi:
    """Answers the five v2 calls like a server would, unless a test scripts other answers.

    ``script(path, *answers)`` queues answers for ``path``: an int status, a (status, body,
    headers) tuple, an exception instance (raised as a connection error), or a callable.
    """

    def __init__(self, mock: aioresponses) -> None:
        self.mock = mock
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.scripted: dict[str, deque[Any]] = defaultdict(deque)
        self.jwt_version = 0
        # create_events answers 400 to any batch holding an event this returns True for.
        self.poison: Callable[[dict[str, Any]], bool] = lambda event: False
        for path in (
            "create_session",
            "update_session",
            "create_events",
            "reauthorize_jwt",
            "create_agent",
        ):
            mock.post(
                re.compile(re.escape(f"{ENDPOINT}/v2/{path}") + r"$"),
                callback=self._handler(f"/v2/{path}"),
                repeat=True,
            )

    def script(self, path: str, *answers: Any) -> None:
        self.scripted[path].extend(answers)

    def calls(self, path: str) -> list[tuple[str, dict[str, str], Any]]:
        return [r for r in self.requests if r[0] == path]

    @property
    def all_events(self) -> list[dict[str, Any]]:
        return [e for evs in self.events.values() for e in evs]

    def _handler(self, path: str) -> Callable[..., CallbackResult]:
        def handle(url: Any, **kwargs: Any) -> CallbackResult:
            headers = dict(kwargs.get("headers") or {})
            body = msgspec.json.decode(kwargs["data"]) if kwargs.get("data") else None
            self.requests.append((path, headers, body))
            if self.scripted[path]:
                answer = self.scripted[path].popleft()
                if isinstance(answer, BaseException):
                    raise answer
                if callable(answer):
                    return answer(body, headers)
                if isinstance(answer, int):
                    return CallbackResult(status=answer, body='{"message": "scripted"}')
                status, text, extra = answer
                return CallbackResult(status=status, body=text, headers=extra)
            return self._serve(path, headers, body)

        return handle

    def _serve(self, path: str, headers: dict[str, str], body: Any) -> CallbackResult:
        if path == "/v2/create_session":
            session = body["session"]
            self.sessions[session["session_id"]] = session
            jwt = f"jwt-{session['session_id']}-{self.jwt_version}"
            return CallbackResult(payload={"status": "Success", "jwt": jwt, "session_url": "u"})
        if path == "/v2/reauthorize_jwt":
            self.jwt_version += 1
            return CallbackResult(payload={"jwt": f"jwt-{body['session_id']}-{self.jwt_version}"})
        if path == "/v2/update_session":
            self.sessions[body["session"]["session_id"]].update(body["session"])
            return CallbackResult(payload={"token_cost": "0.25"})
        if path == "/v2/create_events":
            if any(self.poison(event) for event in body["events"]):
                return CallbackResult(status=400, body='{"message": "events[0].params: bad"}')
            for event in body["events"]:
                self.events[event["session_id"]].append(event)
            return CallbackResult(payload={"status": "ok"})
        return CallbackResult(payload={"status": "ok"})


@contextmanager
def fake_api() -> Iterator[FakeApi]:
    with aioresponses() as mock:
        yield FakeApi(mock)
