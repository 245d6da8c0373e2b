"""The collector's HTTP edge under hostile input (issue 10, items 12, 14 and 15).

Bad input gets a short JSON 4xx and no ERROR or traceback in the collector's log; no request can
hold the event loop; unauthenticated bodies are not inflated; idle and slow connections are closed.
All against the real collector subprocess.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _servers import CollectorHandle, CollectorProcess, wait_until

from agentops_async._limits import MAX_EVENTS_PER_REQUEST, MAX_NESTING_DEPTH

SQLITE_ONLY = pytest.mark.parametrize("collector_backend", ["sqlite"])


# --- helpers ---------------------------------------------------------------------------------


class LogWatch:
    """What the collector process logged since this object was made."""

    def __init__(self, handle: CollectorHandle) -> None:
        self.path: Path = handle.process.log_path
        self.offset = self.path.stat().st_size

    def text(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def assert_no_errors(self) -> None:
        text = self.text()
        assert "Traceback" not in text and "ERROR" not in text, text[-3000:]


def _address(handle: CollectorHandle) -> tuple[str, int]:
    return "127.0.0.1", handle.process.port


def raw_exchange(handle: CollectorHandle, request: bytes) -> tuple[int, str, bytes]:
    """Send raw bytes, read one HTTP answer: (status, content type, body)."""
    with socket.create_connection(_address(handle), timeout=10) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("Content-Type") or "", response.read()


def _depth(levels: int) -> Any:
    """A JSON value that is ``levels`` containers deep (alternating lists and objects)."""
    value: Any = "leaf"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


async def _session(handle: CollectorHandle) -> tuple[str, str]:
    return await handle.v2_create_session()


def _event(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "event_type": "actions", **fields}


async def _post_large(
    handle: CollectorHandle, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    """POST a large body (streamed from a BytesIO); (status, JSON answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(handle.url + path, data=io.BytesIO(body), headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks


def _gzip_of_spaces(mib: int) -> bytes:
    """A gzip body of ``mib`` MiB of spaces, ~1 KB per MiB, made without compressing it all.

    After a full flush deflate starts afresh, so every MiB compresses to the same bytes: one
    compressed MiB repeated, the final block, then the gzip trailer (CRC-32 and size).
    """
    block = b" " * (1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
    return header + unit * mib + deflate.flush() + trailer


# --- item 12: bad input answers 400 (JSON, short), never 500 ------------------------------------


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_event_nested_deeper_than_the_limit_answers_400_naming_it(
    collector: CollectorHandle,
) -> None:
    watch = LogWatch(collector)
    session_id, jwt = await _session(collector)
    ok_id = str(uuid.uuid4())
    # The event object is level 1, so a params value MAX_NESTING_DEPTH - 1 deep is the limit.
    at_limit = _event(ok_id, params=_depth(MAX_NESTING_DEPTH - 1))
    answer = await collector.v2_post("create_events", {"events": [at_limit]}, jwt=jwt)
    assert answer.status == 200, answer.body

    one_over = _event(params=_depth(MAX_NESTING_DEPTH))
    answer = await collector.v2_post("create_events", {"events": [_event(), one_over]}, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"].startswith("events[1]: nested deeper than 64 levels")

    # ~1,000 deep: past msgspec's recursion limit (this was a RecursionError and a 500).
    deep = b'{"id": "x", "event_type": "actions", "params": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    body = b'{"events": [' + json.dumps(_event()).encode() + b", " + deep + b"]}"
    answer = await collector.v2_post("create_events", body, jwt=jwt)
    assert answer.status == 400
    assert answer.body["message"].startswith("events[1]: nested deeper than 64 levels")

    session = b'{"session": {"session_id": "%s", "host_env": %s}}' % (
        str(uuid.uuid4()).encode(),
        b"[" * 1000 + b"]" * 1000,
    )
    answer = await collector.v2_post("create_session", session, api_key=collector.api_key)
    assert answer.status == 400
    assert "nested deeper than 64 levels" in answer.body["message"]

    assert [e["id"] for e in await collector.get_events(session_id)] == [ok_id]
    watch.assert_no_errors()


def _otlp_span(trace_id: str, **fields: Any) -> dict[str, Any]:
    span = {"traceId": trace_id, "spanId": uuid.uuid4().hex[:16], "name": "s", **fields}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _kvlist(levels: int) -> str:
    """An OTLP/JSON AnyValue with ``levels`` nested kvlists (as text: json.dumps would recurse)."""
    head = '{"kvlistValue": {"values": [{"key": "k", "value": '
    return head * levels + '{"stringValue": "leaf"}' + "}]}}" * levels


def _otlp_deep(trace_id: str, levels: int) -> bytes:
    marker = "__VALUE__"
    text = json.dumps(_otlp_span(trace_id, attributes=[{"key": "a", "value": marker}]))
    return text.replace(f'"{marker}"', _kvlist(levels)).encode()


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_otlp_bad_spans_are_refused_alone_in_partial_success_and_a_too_deep_body_is_400(
    collector: CollectorHandle,
) -> None:
    watch = LogWatch(collector)
    trace_id = uuid.uuid4().hex
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    headers = {"X-Agentops-Api-Key": collector.api_key, "Content-Type": "application/json"}

    async def post(body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await collector.request("POST", "/v1/traces", data=data, headers=headers)

    def with_good_span(export: Any) -> Any:
        good = _otlp_span(trace_id, name="good")["resourceSpans"][0]["scopeSpans"][0]["spans"]
        export["resourceSpans"][0]["scopeSpans"][0]["spans"] += good
        return export

    # One span with a time out of range: it is refused alone, the good one is stored.
    answer = await post(with_good_span(_otlp_span(trace_id, startTimeUnixNano=10**30)))
    assert answer.status == 200, answer.body
    assert answer.body["partialSuccess"]["rejectedSpans"] == 1
    assert "startTimeUnixNano: out of range" in answer.body["partialSuccess"]["errorMessage"]

    # 70 levels: within msgspec's limits, beyond ours; the span is refused alone.
    answer = await post(with_good_span(json.loads(_otlp_deep(trace_id, 70))))
    assert answer.status == 200, answer.body
    assert answer.body["partialSuccess"]["rejectedSpans"] == 1
    assert (
        "attribute 'a': nested deeper than 64 levels"
        in (answer.body["partialSuccess"]["errorMessage"])
    )

    # 400 levels: the body itself cannot be decoded, so the whole request is refused.
    answer = await post(_otlp_deep(trace_id, 400))
    assert answer.status == 400
    assert "nested deeper than 64 levels" in answer.body["message"]

    answer = await post(_otlp_deep(trace_id, 3))
    assert answer.status == 200, answer.body
    stored = [e["action_type"] for e in await collector.get_events(session_id)]
    assert sorted(stored) == ["span", "span", "span"]  # the two good ones and the shallow one
    watch.assert_no_errors()


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_developer_error_that_is_not_utf8_answers_400(collector: CollectorHandle) -> None:
    watch = LogWatch(collector)
    body = b'{"type": "E", "message": "ok", "details": "caf\xe9"}'
    answer = await collector.v2_post("developer_errors", body, api_key=collector.api_key)
    assert answer.status == 400
    assert answer.body == {"message": "invalid developer error: the body is not UTF-8"}
    watch.assert_no_errors()


@SQLITE_ONLY
def test_non_ascii_api_key_answers_401_json(collector: CollectorHandle) -> None:
    watch = LogWatch(collector)
    for path in ("/api/sessions", "/v2/create_session", "/admin/projects", "/v1/traces"):
        status, content_type, body = raw_exchange(
            collector,
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Agentops-Api-Key: caf\xe9\r\n"
            b"X-Agentops-Admin-Token: caf\xe9\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        assert content_type.startswith("application/json")
        if path == "/api/sessions":
            assert status == 405  # a GET route: still JSON
            continue
        assert status == 401, (path, body)
        assert json.loads(body)["message"] in ("invalid API key: not ASCII", "invalid admin token")
    watch.assert_no_errors()


@SQLITE_ONLY
@pytest.mark.parametrize("host", [b"caf\xe9", b"x:99999999"])
def test_unusable_host_header_still_creates_the_session(
    collector: CollectorHandle, host: bytes
) -> None:
    watch = LogWatch(collector)
    session_id = str(uuid.uuid4())
    body = json.dumps({"session": {"session_id": session_id}}).encode()
    status, _, answer = raw_exchange(
        collector,
        b"POST /v2/create_session HTTP/1.1\r\nHost: "
        + host
        + b"\r\nX-Agentops-Api-Key: "
        + collector.api_key.encode()
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body,
    )
    assert status == 200
    assert json.loads(answer)["session_url"] == f"/sessions/{session_id}"
    watch.assert_no_errors()


@SQLITE_ONLY
@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /\x00" + b"A" * 5000 + b" HTTP/1.1\r\n\r\n", id="bad-request-line"),
        pytest.param(
            b"GET /health HTTP/1.1\r\nNo colon " + b"B" * 500 + b"\r\n\r\n", id="bad-header"
        ),
        pytest.param(
            b"GET /health HTTP/1.1\r\nX-Long: " + b"C" * 20000 + b"\r\n\r\n", id="long-header"
        ),
        pytest.param(b"G\x01T /health HTTP/1.1\r\n\r\n", id="bad-method"),
        pytest.param(
            b"POST /v2/create_events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nDDDD\r\n0\r\n\r\n",
            id="bad-chunked-body",
        ),
    ],
)
def test_request_aiohttp_refuses_answers_short_json_400(
    collector: CollectorHandle, request_bytes: bytes
) -> None:
    watch = LogWatch(collector)
    status, content_type, body = raw_exchange(collector, request_bytes)
    assert status == 400
    assert content_type.startswith("application/json")
    message = json.loads(body)["message"]
    assert message.startswith("bad request: ") and len(body) < 120
    for echoed in (b"AAAA", b"BBBB", b"CCCC", b"DDDD"):
        assert echoed not in body
    watch.assert_no_errors()


@SQLITE_ONLY
def test_unknown_expectation_and_unauthenticated_continue_answer_json(
    collector: CollectorHandle,
) -> None:
    status, content_type, body = raw_exchange(
        collector,
        b"POST /v2/create_events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Authorization: Bearer nope\r\nContent-Length: 100000\r\n\r\n",
    )
    # 401 instead of "100 Continue": the client never sends the body.
    assert (status, json.loads(body)) == (401, {"message": "Invalid Token"})
    assert content_type.startswith("application/json")
    for path in (b"/health", b"/no/such/route"):
        status, content_type, body = raw_exchange(
            collector,
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: tea\r\nConnection: close\r\n\r\n",
        )
        assert status == 417 and content_type.startswith("application/json"), body


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_authenticated_continue_gets_100_then_the_answer(collector: CollectorHandle) -> None:
    session_id, jwt = await _session(collector)
    event_id = str(uuid.uuid4())
    body = json.dumps({"events": [_event(event_id)]}).encode()

    def exchange() -> bytes:
        with socket.create_connection(_address(collector), timeout=10) as sock:
            sock.sendall(
                b"POST /v2/create_events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Authorization: Bearer " + jwt.encode() + b"\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            interim = sock.recv(100)
            sock.sendall(body)
            return interim + _closed_within(sock, 10)[1]

    received = await asyncio.to_thread(exchange)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert [e["id"] for e in await collector.get_events(session_id)] == [event_id]


# --- item 14: bounded work per request -----------------------------------------------------


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_more_events_than_the_cap_answer_413_naming_it(collector: CollectorHandle) -> None:
    session_id, jwt = await _session(collector)
    events = [{"id": str(i), "event_type": "x"} for i in range(MAX_EVENTS_PER_REQUEST + 1)]
    answer = await collector.v2_post("create_events", {"events": events}, jwt=jwt)
    assert answer.status == 413
    assert f"more than {MAX_EVENTS_PER_REQUEST} (MAX_EVENTS_PER_REQUEST)" in answer.body["message"]
    answer = await collector.v2_post("create_events", {"events": events[:-1]}, jwt=jwt)
    assert (answer.status, answer.body["stored"]) == (200, MAX_EVENTS_PER_REQUEST)
    assert len(await collector.get_events(session_id)) == MAX_EVENTS_PER_REQUEST


async def _max_health_latency_during(handle: CollectorHandle, work: Any) -> tuple[float, Any]:
    """Run ``work`` (a coroutine) while polling /health: (slowest /health answer, its result)."""
    done = asyncio.Event()
    worst = 0.0

    async def probe() -> None:
        nonlocal worst
        async with aiohttp.ClientSession() as http:
            while not done.is_set():
                start = time.perf_counter()
                async with http.get(f"{handle.url}/health") as response:
                    assert response.status == 200
                    await response.read()
                worst = max(worst, time.perf_counter() - start)
                await asyncio.sleep(0.005)  # pacing of the probe, not synchronisation

    prober = asyncio.create_task(probe())
    try:
        result = await work
    finally:
        done.set()
        await prober
    return worst, result


@pytest.mark.asyncio
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_huge_bodies_do_not_block_the_event_loop(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    """A 32 MiB body of ~1M tiny events held /health for 1-2.5 s and took ~0.5 GB; now it is
    refused after counting its events, and large bodies are decoded off the loop."""
    collector = collector_factory("sqlite")
    assert collector.process.process is not None
    pid = collector.process.process.pid
    _, jwt = await _session(collector)
    tiny = b'{"id":"%d","event_type":"x"}'
    count = (32 * 1024 * 1024 - 64) // (len(tiny) + 6)
    body = b'{"events":[' + b",".join(tiny % i for i in range(count)) + b"]}"
    assert len(body) < 32 * 1024 * 1024
    headers = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
    peak = _rss_peak_kib(pid)
    worst, (status, _) = await _max_health_latency_during(
        collector, _post_large(collector, "/v2/create_events", body, headers)
    )
    assert status == 413
    assert worst < 0.25, f"/health took {worst:.3f} s during the request"
    # The body and one copy of it while it is joined; nothing per event.
    assert _rss_peak_kib(pid) - peak < 100 * 1024

    # The largest accepted request: MAX_EVENTS_PER_REQUEST events of ~2.5 KB each.
    events = [_event(params={"text": "p" * 2500}) for _ in range(MAX_EVENTS_PER_REQUEST)]
    body = json.dumps({"events": events}).encode()
    worst, (status, answer) = await _max_health_latency_during(
        collector, _post_large(collector, "/v2/create_events", body, headers)
    )
    assert (status, answer["stored"]) == (200, MAX_EVENTS_PER_REQUEST)
    assert worst < 0.25, f"/health took {worst:.3f} s during the request"


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.asyncio
async def _posted_then_idle(post: Any) -> Any:
    """The answer of ``post``, returned a second after it (while /health is probed)."""
    answer = await post
    await asyncio.sleep(1.0)  # an observation window for work left behind, not synchronisation
    return answer


@pytest.mark.asyncio
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@SQLITE_ONLY
async def test_gzip_bomb_is_refused_without_inflating_it(collector: CollectorHandle) -> None:
    """2 GiB of spaces in 2 MB of gzip: refused without a key before it is inflated, and with one
    after 32 MiB of output; /health never waits, the collector spends no CPU on the rest."""
    bomb = _gzip_of_spaces(2048)
    _, jwt = await _session(collector)
    assert collector.process.process is not None
    pid = collector.process.process.pid
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

    for auth, status, message in [
        ("Bearer x", 401, "Invalid Token"),
        (
            f"Bearer {jwt}",
            413,
            "request body too large: more than 33554432 bytes once decompressed",
        ),
    ]:
        cpu = _cpu_seconds(pid)
        post = _post_large(collector, "/v2/create_events", bomb, {**headers, "Authorization": auth})
        worst, answer = await _max_health_latency_during(collector, _posted_then_idle(post))
        assert answer == (status, {"message": message})
        # Inflating 2 GiB takes about 2 s of CPU (and held /health that long).
        assert _cpu_seconds(pid) - cpu < 0.5
        assert worst < 0.25, f"/health took {worst:.3f} s"

    # Small compressed bodies are accepted: zlib-wrapped and raw deflate, and gzip.
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    for encoding, compress in [
        ("deflate", zlib.compress),
        ("deflate", lambda data: raw_deflate.compress(data) + raw_deflate.flush()),
        ("gzip", lambda data: zlib.compress(data, wbits=31)),
    ]:
        data = compress(json.dumps({"events": [_event()]}).encode())
        answer = await collector.request(
            "POST",
            "/v2/create_events",
            data=data,
            headers={
                "Content-Encoding": encoding,
                "Content-Type": "application/json",
                "Authorization": f"Bearer {jwt}",
            },
        )
        assert (answer.status, answer.body["stored"]) == (200, 1)


# --- item 15: idle and slow connections are closed ------------------------------------------


def _closed_within(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Read until the server closes the connection; (seconds it took, what it sent)."""
    sock.settimeout(timeout)
    start = time.monotonic()
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return time.monotonic() - start, received


def test_idle_connection_is_closed_by_the_server(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    handle = collector_factory("sqlite", extra_args=["--idle-timeout", "1"])
    with socket.create_connection(_address(handle)) as sock:
        elapsed, received = _closed_within(sock, 10)
    assert received == b"" and elapsed < 5
    # After a request too (keep-alive).
    with socket.create_connection(_address(handle)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        elapsed, received = _closed_within(sock, 10)
    assert received.startswith(b"HTTP/1.1 200") and elapsed < 5


def _trickle_headers(sock: socket.socket, until: float) -> bool:
    """Send a header line every 0.1 s, never the blank line; True once the server cut it off."""
    for i in range(1000):
        if time.monotonic() > until:
            return False
        try:
            sock.sendall(b"X-Slow-%d: y\r\n" % i)
        except (BrokenPipeError, ConnectionResetError):
            return True
        if _is_closed(sock, peek=True):
            return True
        time.sleep(0.1)  # the attack's pacing, not synchronisation
    return False


def test_slow_request_headers_are_cut_off(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    handle = collector_factory(
        "sqlite", extra_args=["--header-timeout", "1", "--idle-timeout", "60"]
    )
    with socket.create_connection(_address(handle)) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        cut_off = _trickle_headers(sock, until=start + 10)
        _, received = _closed_within(sock, 10)
    assert cut_off and time.monotonic() - start < 5
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body) == {"message": "request headers not received within 1 s"}


def test_slow_request_body_answers_408(
    collector_factory: Callable[..., CollectorHandle],
) -> None:
    handle = collector_factory("sqlite", extra_args=["--body-timeout", "1"])
    jwt = asyncio.run(handle.v2_create_session())[1]
    with socket.create_connection(_address(handle)) as sock:
        sock.sendall(
            b"POST /v2/create_events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Authorization: Bearer " + jwt.encode() + b"\r\n\r\n" + b'{"events": ['
        )
        elapsed, received = _closed_within(sock, 10)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and elapsed < 5
    assert json.loads(body) == {"message": "request body not received within 1 s (--body-timeout)"}


class _LimitedCollector(CollectorProcess):
    """The collector under ``prlimit --nofile``: a process with few file descriptors."""

    nofile: int = 128

    def _command(self) -> list[str]:
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", *super()._command()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prlimit")
def test_health_answers_with_more_idle_sockets_than_descriptors(tmp_path: Path) -> None:
    """128 descriptors and 200 idle sockets: /health still answers, and the log stays small."""
    log_path = tmp_path / "collector.log"
    process = _LimitedCollector(
        database=str(tmp_path / "c.db"), backend="sqlite", log_path=log_path
    ).start()
    sockets: list[socket.socket] = []
    cap = 128 - 32 - 4 * 12  # see connection_limits
    try:
        # Keep-alive connections left idle after one request each (so each one was accepted
        # before the next is opened: bursts beyond the small listen backlog would wait for the
        # kernel's connect retries instead).
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", process.port), timeout=10)
            sockets.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while not received.endswith(b'{"status":"ok"}'):
                received += sock.recv(4096)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", process.port), timeout=10) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                _, received = _closed_within(sock, 5)
            assert received.startswith(b"HTTP/1.1 200"), received
            assert received.endswith(b'{"status":"ok"}')
        # The longest-idle sockets were closed by the server to make room.
        wait_until(
            lambda: sum(1 for s in sockets if _is_closed(s)) >= len(sockets) - cap,
            10,
            "the server to close the longest-idle sockets",
        )
    finally:
        for sock in sockets:
            sock.close()
        process.stop()
    lines = log_path.read_text(errors="replace").splitlines()
    assert len(lines) < 20, lines[:40]
    assert not any("Traceback" in line for line in lines)
    # If the process ran short of descriptors anyway: one condensed line, not one per accept.
    assert sum("Too many open files" in line for line in lines) <= 1, lines


def _is_closed(sock: socket.socket, peek: bool = False) -> bool:
    """Whether the server closed ``sock`` (or, with ``peek``, sent something)."""
    sock.setblocking(False)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
        return data == b"" or peek
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)
