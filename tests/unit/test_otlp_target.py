"""The OTLP/HTTP target against a minimal OTLP receiver that decodes with opentelemetry-proto:
one export per batch with every session in it, the credentials, retries, Retry-After, splitting
what the receiver refuses, and partialSuccess counted as dropped."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from agentops_async._config import Config
from agentops_async.api._client import ApiClient, RetryPolicy
from agentops_async.events import ActionEvent, Event, LLMEvent, _wire_events
from agentops_async.telemetry._otlp_target import PARTIAL_REJECTED, OtlpTarget, otlp_headers
from agentops_async.telemetry._targets import (
    AGENT_ADDED,
    SESSION_CREATED,
    SESSION_UPDATED,
    AgentSnapshot,
    EventRun,
    SessionOp,
    SessionPart,
    SessionSnapshot,
)
from tests._servers import OtlpRequest, otlp_receiver

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

KEY = "6f1e1b1c-0000-4000-8000-00000000beef"
S1, T1, R1 = (
    "3f0c0b8e-1d2a-4c5e-9f00-0000000000a1",
    "0af7651916cd43dd8448eb211c80319c",
    "b7ad6b7169203331",
)
S2, T2, R2 = (
    "3f0c0b8e-1d2a-4c5e-9f00-0000000000a2",
    "1af7651916cd43dd8448eb211c80319c",
    "c7ad6b7169203331",
)
START, END = "2026-11-30T16:00:00+00:00", "2026-11-30T16:00:09+00:00"


class Report:
    """Records what the target reports (the exporter's side of the seam)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lost: list[tuple[str, int, str, str | None]] = []
        self.ops_sent: list[str] = []
        self.ops_failed: list[tuple[str, str]] = []

    def delivered(self, session_id: str, count: int) -> None:
        self.counts[session_id] = self.counts.get(session_id, 0) + count

    def dropped(self, session_id: str, count: int, reason: str, detail: str | None = None) -> None:
        self.lost.append((session_id, count, reason, detail))

    def op_sent(self, op: SessionOp, *, session_url: str | None = None,
                token_cost: Decimal | None = None) -> None:  # fmt: skip
        self.ops_sent.append(f"{op.kind}:{op.session_id}")

    def op_failed(self, op: SessionOp, reason: str, detail: str | None = None) -> None:
        self.ops_failed.append((f"{op.kind}:{op.session_id}", reason))

    def session_failed(self, session_id: str, reason: str) -> None:
        raise AssertionError("the OTLP target never fails a session as a whole")


def _snapshot(session_id: str, trace_id: str, root: str, **kw: Any) -> SessionSnapshot:
    return SessionSnapshot(session_id=session_id, trace_id=trace_id, span_id=root,
                           init_timestamp=START, tags=["t"], **kw)  # fmt: skip


def _target(endpoint: str, **config: Any) -> OtlpTarget:
    cfg = Config(api_key=KEY, endpoint=endpoint, **config)
    return OtlpTarget(cfg, ApiClient(cfg, RetryPolicy(initial=0.01, maximum=0.05, max_elapsed=5)))


def _run(target: OtlpTarget, session_id: str, trace_id: str, events: list[Event]) -> EventRun:
    for event in events:
        event._check(1_790_000_000.0)
    wired = _wire_events(events, session_id, trace_id)
    return EventRun(wired, target.encode_events(session_id, trace_id, wired))


def _batch(target: OtlpTarget, n: int = 3, payload: str = "x") -> list[SessionPart]:
    """Two sessions: the first starts, adds an agent and records ``n`` events; the second
    records one event and ends."""
    first = [ActionEvent(action_type=f"step-{i}", params={"p": payload}) for i in range(n)]
    return [
        SessionPart(S1, T1, [
            SessionOp(SESSION_CREATED, _snapshot(S1, T1, R1)),
            SessionOp(AGENT_ADDED, AgentSnapshot(session_id=S1, agent_id="a1", name="planner")),
            _run(target, S1, T1, first),
        ]),
        SessionPart(S2, T2, [
            SessionOp(SESSION_CREATED, _snapshot(S2, T2, R2)),
            _run(target, S2, T2, [LLMEvent(model="gpt-4o", prompt="hi", completion="yo")]),
            SessionOp(SESSION_UPDATED, _snapshot(S2, T2, R2, end_timestamp=END,
                                                 state="SUCCEEDED"), final=True),
        ]),
    ]  # fmt: skip


@pytest.mark.asyncio
async def test_a_batch_of_two_sessions_is_one_export_with_each_session_a_tree() -> None:
    async with otlp_receiver() as (url, received):
        target = _target(url)
        report = Report()
        await target.send(_batch(target), report)
        await target.close()

    (export,) = received
    assert export.headers["X-Agentops-Api-Key"] == KEY
    assert export.headers["Content-Type"].startswith("application/json")
    spans = export.spans()
    names = sorted(s.name for s in spans)
    assert names == sorted(["agentops.session.update", "agentops.session.update",
                            "agentops.agent", "step-0", "step-1", "step-2", "chat gpt-4o",
                            "agentops.session"])  # fmt: skip
    for span in spans:
        trace, root = (T1, R1) if span.trace_id.hex() == T1 else (T2, R2)
        assert span.trace_id.hex() == trace
        if span.name == "agentops.session":
            assert span.span_id.hex() == R2 and not span.parent_span_id
        else:
            assert span.parent_span_id.hex() == root
    assert report.counts == {S1: 3, S2: 1}
    assert report.lost == [] and report.ops_failed == []
    assert len(report.ops_sent) == 4


@pytest.mark.asyncio
async def test_unavailable_with_retry_after_is_retried_and_delivered() -> None:
    answers = [(503, {"Retry-After": "0"}, b"busy"), (429, {"Retry-After": "0"}, b"slow")]

    def answer(export: OtlpRequest) -> tuple[int, dict[str, str], bytes]:
        return answers.pop(0) if answers else (200, {}, b"{}")

    async with otlp_receiver(answer) as (url, received):
        target = _target(url)
        report = Report()
        await target.send(_batch(target), report)
        await target.close()
    assert answers == [] and len(received) == 1
    assert report.counts == {S1: 3, S2: 1}


@pytest.mark.asyncio
async def test_a_413_is_split_until_each_part_fits_and_nothing_is_lost() -> None:
    def answer(export: OtlpRequest) -> tuple[int, dict[str, str], bytes]:
        size = len(export.request.SerializeToString())
        return (413, {}, b"too large") if size > 12_000 else (200, {}, b"{}")

    async with otlp_receiver(answer) as (url, received):
        target = _target(url)
        report = Report()
        await target.send(_batch(target, n=20, payload="y" * 2000), report)
        await target.close()
    assert len(received) > 2
    assert sum(1 for r in received for s in r.spans() if s.name.startswith("step-")) == 20
    assert report.counts == {S1: 20, S2: 1} and report.lost == []


@pytest.mark.asyncio
async def test_a_span_the_receiver_refuses_is_dropped_alone_with_its_reason() -> None:
    def answer(export: OtlpRequest) -> tuple[int, dict[str, str], bytes]:
        if any(s.name == "step-2" for s in export.spans()):
            return 400, {}, b'{"message": "step-2 is poison"}'
        return 200, {}, b"{}"

    async with otlp_receiver(answer) as (url, _):
        target = _target(url)
        report = Report()
        await target.send(_batch(target, n=5), report)
        await target.close()
    assert report.counts == {S1: 4, S2: 1}
    ((session, count, reason, detail),) = report.lost
    assert (session, count, reason) == (S1, 1, "OTLP export refused (HTTP 400)")
    assert detail is not None and "poison" in detail


@pytest.mark.asyncio
async def test_partial_success_rejections_are_counted_as_dropped_with_the_message() -> None:
    def answer(export: OtlpRequest) -> tuple[int, dict[str, str], bytes]:
        body = {"partialSuccess": {"rejectedSpans": "2", "errorMessage": "span too old"}}
        return 200, {}, json.dumps(body).encode()

    async with otlp_receiver(answer) as (url, _):
        target = _target(url)
        report = Report()
        await target.send(_batch(target), report)
        await target.close()
    assert report.lost == [(S1, 2, PARTIAL_REJECTED, "span too old")]
    assert report.counts == {S1: 1, S2: 1}


@pytest.mark.asyncio
async def test_an_unauthorised_export_drops_its_events_and_fails_its_operations() -> None:
    async with otlp_receiver(lambda export: (401, {}, b"bad key")) as (url, _):
        target = _target(url)
        report = Report()
        await target.send(_batch(target), report)
        await target.close()
    assert report.counts == {}
    assert sorted((s, n) for s, n, _, _ in report.lost) == [(S1, 3), (S2, 1)]
    assert {reason for _, reason in report.ops_failed} == {"OTLP export refused (HTTP 401)"}
    assert len(report.ops_failed) == 4


@pytest.mark.asyncio
async def test_an_event_larger_than_max_batch_bytes_is_dropped_with_why() -> None:
    async with otlp_receiver() as (url, received):
        target = _target(url, max_batch_bytes=20_000)
        report = Report()
        batch = [SessionPart(S1, T1, [
            SessionOp(SESSION_CREATED, _snapshot(S1, T1, R1)),
            _run(target, S1, T1, [ActionEvent(params={"big": "z" * 50_000}),
                                  ActionEvent(action_type="small")]),
        ])]  # fmt: skip
        await target.send(batch, report)
        await target.close()
    assert report.counts == {S1: 1}
    ((_, count, reason, detail),) = report.lost
    assert count == 1 and "max_batch_bytes" in reason and detail and "ActionEvent" in detail
    assert any(s.name == "small" for r in received for s in r.spans())


@pytest.mark.asyncio
async def test_a_credential_the_receiver_echoes_never_reaches_the_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "Basic c2VjcmV0LXB1YmxpYzpzZWNyZXQta2V5"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization={secret}")

    def answer(export: OtlpRequest) -> tuple[int, dict[str, str], bytes]:
        return 403, {}, f"bad credentials {export.headers['Authorization']}".encode()

    async with otlp_receiver(answer) as (url, _):
        target = _target(url)
        report = Report()
        await target.send(_batch(target), report)
        await target.close()
    assert report.lost and all(secret not in (detail or "") for *_, detail in report.lost)
    assert any("<redacted>" in (detail or "") for *_, detail in report.lost)
    assert secret not in repr(target) and KEY not in repr(target)


def test_the_opentelemetry_header_variables_replace_the_api_key() -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20cGs6c2s=,x-tenant=t1"}
    headers = otlp_headers(KEY, env)
    assert headers["Authorization"] == "Basic cGs6c2s=" and headers["x-tenant"] == "t1"
    assert KEY not in headers.values()
    traces_only = {**env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=k2"}
    assert otlp_headers(KEY, traces_only)["api-key"] == "k2"
    assert otlp_headers(KEY, {})["X-Agentops-Api-Key"] == KEY


@pytest.mark.parametrize("protocol", ["otlp"])
def test_config_protocol_otlp_makes_the_otlp_target(protocol: str) -> None:
    from agentops_async.telemetry._targets import make_target

    target = make_target(Config(api_key=KEY, protocol=protocol))  # type: ignore[arg-type]
    assert isinstance(target, OtlpTarget) and target.name == "otlp"
