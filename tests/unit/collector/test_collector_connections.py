"""The collector's connection-level guards that need no server: condensed descriptor logging."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from agentops_async.collector import _server


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fresh rate limiter on a clock the test moves (``clock[0]`` seconds)."""
    now = [1000.0]
    monkeypatch.setattr(_server, "_limited_log", _server._RateLimitedLog())
    monkeypatch.setattr(_server.time, "monotonic", lambda: now[0])
    return now


def _accept_failed(loop: asyncio.AbstractEventLoop, code: int) -> None:
    _server._loop_exception_handler(
        loop,
        {
            "message": "socket.accept() out of system resource",
            "exception": OSError(code, "Too many open files"),
        },
    )


def test_out_of_descriptors_is_one_warning_per_interval_without_traceback(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(1000):  # asyncio reports every failed accept
                _accept_failed(loop, errno.EMFILE)
            clock[0] += 11
            _accept_failed(loop, errno.ENFILE)
    finally:
        loop.close()
    assert [(r.name, r.levelno, r.exc_info) for r in caplog.records] == [
        ("agentops_async", logging.WARNING, None)
    ] * 2
    first, second = (r.getMessage() for r in caplog.records)
    assert first == (
        "collector: cannot accept connections: Too many open files; lower --max-connections "
        "or raise the open-files limit (ulimit -n)"
    )
    assert second.endswith("(and 999 more like it in the last 10 s)")


def test_other_loop_errors_go_to_the_default_handler(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            _server._loop_exception_handler(loop, {"message": "boom", "exception": ValueError("x")})
    finally:
        loop.close()
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("asyncio", logging.ERROR, "boom")
    ]


def test_connection_cap_fits_the_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    resource = pytest.importorskip("resource")
    monkeypatch.setattr(resource, "getrlimit", lambda _: (256, 4096))
    # 256 - 32 reserved = 224: four bursts of 28 accepts fit beside 112 connections.
    assert _server.connection_limits(1024) == (112, 28)
    assert _server.connection_limits(50) == (50, 28)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (65536, 65536))
    assert _server.connection_limits(1024) == (1024, 128)
