"""The in-memory export target: what :mod:`agentops_async.testing` captures, with no server.

It goes through the whole exporter like the network targets (batching, hooks and redaction, the
encoding of events, accounting and flush with acknowledgement); instead of sending, it keeps the
snapshots and the events in a :class:`~agentops_async.testing.Capture`, and acknowledges at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..api import _wire as wire
from ._targets import EventRun, ExportBatch, Report, SessionOp

if TYPE_CHECKING:
    from ..events import Event
    from ..testing import Capture

_decode_events = msgspec.json.Decoder(dict[str, list[dict[str, Any]]]).decode


class MemoryTarget:
    """Delivers every batch into a :class:`~agentops_async.testing.Capture`."""

    name = "memory"

    def __init__(self, capture: Capture) -> None:
        self.capture = capture

    def __repr__(self) -> str:
        return "MemoryTarget()"

    def encode_events(
        self, session_id: str, trace_id: str | None, events: Sequence[Event | msgspec.Raw]
    ) -> bytes:
        # The SDK's own encoding of events: what a receiver would be sent, JSON-safe.
        return wire.events_body(events if isinstance(events, list) else list(events))

    def join_encoded(self, parts: list[bytes]) -> bytes:
        return parts[0] if len(parts) == 1 else wire.join_bodies(parts)

    async def send(self, batch: ExportBatch, report: Report) -> None:
        capture = self.capture
        for part in batch:
            for step in part.steps:
                if type(step) is EventRun:
                    events = _decode_events(step.body)["events"]
                    capture._add_events(part.session_id, events)
                    report.delivered(part.session_id, len(events))
                else:
                    op: SessionOp = step  # type: ignore[assignment]
                    capture._add_op(op.kind, op.snapshot, op.final)
                    report.op_sent(op)

    def watch_pending(self, pending: Callable[[], int]) -> None:
        return None

    async def close(self) -> None:
        return None

    def close_now(self) -> None:
        return None


# The captures of the open ``capture_events()`` blocks, innermost last (process-wide: a client
# made in a block is captured whichever thread delivers for it).
_captures: list[Capture] = []
_captures_lock = threading.Lock()


def push_capture(capture: Capture) -> None:
    """A ``capture_events()`` block begins."""
    with _captures_lock:
        _captures.append(capture)


def pop_capture(capture: Capture) -> None:
    """A ``capture_events()`` block ends."""
    with _captures_lock:
        if capture in _captures:
            _captures.remove(capture)


def active_capture() -> Capture | None:
    """The capture new clients deliver to, if a ``capture_events()`` block is open."""
    with _captures_lock:
        return _captures[-1] if _captures else None
