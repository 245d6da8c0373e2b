"""The export-target seam: what the exporter hands a target, and what the target tells it back.

The exporter (:mod:`._exporter`) owns everything that does not depend on a protocol: the bounded
buffer, cutting batches, the hooks, the accounting (delivered, dropped and filtered, per session
and per reason), ``flush()`` / ``flush_session()`` with acknowledgement, close, reattach after a
loop change and the disk spool. A **target** knows one protocol, and nothing else: how a cut batch
becomes requests, and what each answer means. It is the same split as httpx's transports under
its client, or OpenTelemetry's span exporters under the batch span processor.

What a target receives
    :meth:`ExportTarget.send` gets a whole cut batch (:data:`ExportBatch`): a list of
    :class:`SessionPart`, one per session that has items in the batch, each with its steps in
    queue order. A step is a :class:`SessionOp` (the session was created, an agent was added, the
    session was updated, the final update) carrying an immutable :class:`SessionSnapshot` or
    :class:`AgentSnapshot`, or an :class:`EventRun` (consecutive events of the session, already
    finalized: ids, the session's ids and timestamps filled in). Sessions never build request
    bodies; the target encodes the snapshots.

    Both shapes of protocol are natural: the AgentOps v2 target (:mod:`._v2_target`) walks each
    part on its own (a JWT per session, create_session before the session's events, several
    sessions concurrently); an OTLP target turns the whole batch, every session mixed, into one
    request, so that a short session costs no request of its own.

How events are encoded
    While the previous batch is on the wire the exporter prepares the next: it applies the hooks,
    finalizes the events, and calls :meth:`ExportTarget.encode_events` for each slice of a
    session's run (and :meth:`ExportTarget.join_encoded` to join the slices), so encoding
    overlaps the network. ``encode_events`` may raise on a value it cannot encode: the exporter
    then makes each event of the slice sendable on its own (as a ``msgspec.Raw`` holding the
    SDK's own JSON encoding of the event, the v2 event object) and calls it again. An event in a
    run is an :class:`~agentops_async.events.Event` or such a ``msgspec.Raw`` (events recorded in
    other threads, or read back from the spool, arrive encoded); ``msgspec.json.decode`` reads
    one back as a dict.

What a target answers
    Through the :class:`Report` passed to ``send``, as each answer arrives (not at the end, so
    that a send cut by cancellation or close loses no knowledge of what was delivered):
    ``delivered`` / ``dropped`` (with a stable reason, counted per reason, and a detail that is
    logged once) for events of a session; ``op_sent`` (with what the server answered:
    ``session_url``, ``token_cost``) or ``op_failed`` for a session operation; ``session_failed``
    when the receiver will take nothing of a session (v2: it could not be created or authorised
    again), after which its operations' failures are not counted again. Every event of the
    batch is reported exactly once, unless ``send`` is cancelled: what was not reported is then
    sent again (or spooled) by the exporter. Retries of transient failures (with backoff and
    ``Retry-After``) happen inside the target, bounded by ``max_retry_time``; only the final
    outcome is reported. Operations are reported once too; an operation not reported when
    ``send`` is cancelled is sent again, and the protocol must treat it as the same operation.

Choosing a target
    :func:`make_target` picks one from ``Config.protocol``: ``"agentops_v2"`` (the default) or
    ``"otlp"``, whose target lives in ``agentops_async/telemetry/_otlp_target.py`` as
    ``OtlpTarget(config)``. :mod:`agentops_async.testing` installs the in-memory target.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .._config import PROTOCOLS
from ..errors import ConfigError

if TYPE_CHECKING:
    from .._config import Config
    from ..events import Event

# The kinds of session operation, in the order a session goes through them.
SESSION_CREATED = "session_created"
AGENT_ADDED = "agent_added"
SESSION_UPDATED = "session_updated"  # with ``final=True``: the session's last update (it ended)
OP_KINDS = (SESSION_CREATED, AGENT_ADDED, SESSION_UPDATED)


class SessionSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The state of a session at one moment, as the session hands it to the exporter.

    Not tracked by the garbage collector (``gc=False``: it holds strings, and tuples, lists and
    dicts of strings and numbers, so it can never be part of a reference cycle): a service
    queues two per request for up to a flush interval, and each tracked object queued that long
    is carried into the older generations, whose collections cost a busy service milliseconds
    each. For the same reason the tags are a tuple (the collector stops tracking a tuple of
    strings the first time it sees it; a list it would carry along).

    Attributes:
        session_id: The session's UUID, as a string (as on the v2 wire).
        trace_id: The session's OpenTelemetry trace: 32 lowercase hex digits.
        span_id: The session's root span: 16 lowercase hex digits.
        init_timestamp: When the session started: ISO 8601, UTC (as on the v2 wire).
        end_timestamp: When it ended (None while it runs).
        state: A :class:`~agentops_async.SessionState` value (``"RUNNING"``, ``"SUCCEEDED"``...).
        end_state_reason: Why it ended, if the caller said.
        tags: The session's tags (all of them: an update replaces them).
        host_env: What the AgentOps dashboard shows about the host.
        video: URL of a recording of the session.
        links: ``(trace_id, span_id)`` hex pairs of the ambient span(s) the session was opened
            under (its root span links to them).
        event_counts: Events recorded so far, by event type (None when not counted).
    """

    session_id: str
    trace_id: str
    span_id: str
    init_timestamp: str
    end_timestamp: str | None = None
    state: str = "RUNNING"
    end_state_reason: str | None = None
    tags: tuple[str, ...] = ()
    host_env: dict[str, Any] | None = None
    video: str | None = None
    links: list[tuple[str, str]] = []
    event_counts: dict[str, int] | None = None


class AgentSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An agent added to a session (``session.create_agent()``)."""

    session_id: str
    agent_id: str
    name: str


# The structures of a batch are msgspec Structs with ``gc=False``: not tracked by the garbage
# collector, so the many a service's batch holds (a few per session, alive while the batch is on
# the wire) neither trigger collections nor get scanned by them. None can be part of a reference
# cycle: they point only at snapshots, events, lists of steps and (an Op) its channel, and
# nothing points back at them.


class SessionOp(msgspec.Struct, gc=False, eq=False):
    """A session operation, queued in order with the session's events.

    Attributes:
        kind: :data:`SESSION_CREATED`, :data:`AGENT_ADDED` or :data:`SESSION_UPDATED`.
        snapshot: The session's state (:class:`AgentSnapshot` for an agent).
        final: True for the session's last update: nothing of the session follows it.
    """

    kind: str
    snapshot: SessionSnapshot | AgentSnapshot
    final: bool = False

    @property
    def session_id(self) -> str:
        """The id of the session the operation is about."""
        return self.snapshot.session_id

    def __repr__(self) -> str:
        final = ", final" if self.final else ""
        return f"SessionOp({self.kind}, {self.session_id}{final})"


class EventRun(msgspec.Struct, gc=False, eq=False):
    """Consecutive events of one session, finalized, and their encoding by the target.

    Attributes:
        events: The events, in order: :class:`~agentops_async.events.Event` objects or
            ``msgspec.Raw`` (the SDK's own JSON encoding of one event).
        body: What :meth:`ExportTarget.encode_events` made of them (joined by
            :meth:`ExportTarget.join_encoded` when the run was encoded in slices).
    """

    events: tuple[Event | msgspec.Raw, ...]  # a tuple: untracked by the GC, as SessionPart.steps
    body: bytes


class SessionPart(msgspec.Struct, gc=False, eq=False):
    """One session's share of a batch: its operations and runs of events, in queue order.

    ``steps`` is a tuple: a tuple of untracked structs is no object for the garbage collector
    after its first young collection, where a list would be carried into the older generations
    with every session of a batch on the wire.
    """

    session_id: str
    trace_id: str | None  # None for a session replayed from the spool by a new process
    steps: tuple[SessionOp | EventRun, ...]


# A cut batch: one part per session with items in it, in the order the sessions first appear.
ExportBatch = list[SessionPart]


class Report(Protocol):
    """How a target tells the exporter what became of a batch's items, as it learns it."""

    def delivered(self, session_id: str, count: int) -> None:
        """``count`` events of the session were acknowledged by the receiver."""

    def dropped(self, session_id: str, count: int, reason: str, detail: str | None = None) -> None:
        """``count`` events of the session will never be delivered.

        ``reason`` is a stable key (counted in ``stats.dropped_by_reason``, logged once);
        ``detail`` says more (the server's message, the offending field) in that one log line.
        """

    def op_sent(
        self,
        op: SessionOp,
        *,
        session_url: str | None = None,
        token_cost: Decimal | None = None,
    ) -> None:
        """``op`` reached the receiver, which answered ``session_url`` / ``token_cost``."""

    def op_failed(self, op: SessionOp, reason: str, detail: str | None = None) -> None:
        """``op`` will never reach the receiver: ``reason`` is a stable key (warned about once),
        ``detail`` says more in that warning (never a secret)."""

    def session_failed(self, session_id: str, reason: str) -> None:
        """The session could not be created on the receiver (or authorised again): nothing of
        it will arrive. Its later operations reported as failed are not counted again."""


class ExportTarget(Protocol):
    """One export protocol. See the module docstring for the contract."""

    #: The ``Config.protocol`` value it implements (``"agentops_v2"``, ``"otlp"``, ``"memory"``).
    name: str

    def encode_events(
        self, session_id: str, trace_id: str | None, events: Sequence[Event | msgspec.Raw]
    ) -> bytes:
        """Encode a slice of one session's finalized events; may raise on a value it cannot
        encode (the exporter then retries with each event made sendable)."""
        ...

    def join_encoded(self, parts: list[bytes]) -> bytes:
        """One encoding from the encodings of consecutive slices (each non-empty), in order."""
        ...

    async def send(self, batch: ExportBatch, report: Report) -> None:
        """Deliver ``batch``, reporting every event and operation once, in each session's order
        (a session's steps are sent in order; sessions may go concurrently or together)."""
        ...

    def watch_pending(self, pending: Callable[[], int]) -> None:
        """Give the target the exporter's count of unresolved items (for its outage warning)."""
        ...

    async def close(self) -> None:
        """Release what the target holds (HTTP sessions); it is not used afterwards."""
        ...

    def close_now(self) -> None:
        """Drop connections without awaiting: the loop is closing (the target may be used
        again from another loop afterwards)."""
        ...


_OTLP_MISSING = (
    "protocol='otlp' is not available in this build of agentops_async (the OTLP export target, "
    "agentops_async/telemetry/_otlp_target.py, is missing): use protocol='agentops_v2' (keyword "
    "protocol= or AGENTOPS_PROTOCOL)"
)


def check_target(config: Config) -> None:
    """Fail early (at client construction) when ``config.protocol`` has no target here.

    Raises:
        ConfigError: the protocol's target is not installed.
    """
    if (
        config.protocol == "otlp"
        and importlib.util.find_spec(f"{__package__}._otlp_target") is None
    ):
        raise ConfigError(_OTLP_MISSING)


def make_target(config: Config) -> ExportTarget:
    """The target ``config.protocol`` names.

    Raises:
        ConfigError: the protocol is unknown, or its target is not installed.
    """
    protocol = config.protocol
    if protocol == "agentops_v2":
        from ..api._client import ApiClient
        from ._v2_target import V2Target

        return V2Target(ApiClient(config), config)
    if protocol == "otlp":
        # -- the OTLP target plugs in here (agentops_async/telemetry/_otlp_target.py) --------
        check_target(config)
        from ._otlp_target import OtlpTarget  # type: ignore[import-not-found,unused-ignore]

        target: ExportTarget = OtlpTarget(config)
        return target
    raise ConfigError(
        f"protocol={protocol!r} is not a known export protocol: use one of "
        + ", ".join(repr(p) for p in PROTOCOLS)
    )
