"""The exporter: a bounded buffer drained in batches by one asyncio task per client.

``record()`` checks the event and hands ``(channel, event)`` to :meth:`Exporter.offer`: a deque
append, two counter bumps, maybe a wake-up. Everything else — ids, encoding (one msgspec call per
batch), grouping by session, cutting batches by count and bytes, HTTP, retries, acknowledgement —
happens in the exporter task, in queue order: a session's create_session goes out before its
events, and its final update_session after them. Events from other threads (the sync facade)
arrive already encoded, as bytes.

Why a deque and not ``asyncio.Queue``: ``put_nowait`` costs ~200 ns of a 2 us budget, and the bound
must apply to events only — session operations (create/update/agent) are few and must never be
dropped or wait, so they bypass it. Backpressure waiters are futures woken when a batch is taken.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from decimal import Decimal
from typing import NamedTuple

import msgspec

from .._config import Config
from ..api import _wire as wire
from ..api._client import ApiClient, SessionAuth
from ..errors import ApiError
from ..events import Event, describe_oversize, encode_event, finalize, wire_events
from ._spool import EVENT, Spool, SpoolRecord

log = logging.getLogger("agentops_async")

CREATE, UPDATE, AGENT = "create_session", "update_session", "create_agent"
_YIELD_EVERY = 64  # items the exporter handles between two yields to the event loop
QUEUE_FULL = "queue full (max_queue_size reached)"
CLOSED = "recorded after the client was closed"
SHUTDOWN = "not acknowledged before the shutdown timeout"
UNSENDABLE = "event could not be prepared for sending (internal error)"


class SessionChannel:
    """Exporter-side state of one session: its JWT, what was delivered, dropped, answered."""

    __slots__ = (
        "auth",
        "closed",
        "delivered",
        "dropped",
        "failure",
        "in_flight",
        "session_id",
        "session_url",
        "token_cost",
        "trace_id",
    )

    def __init__(self, session_id: str, trace_id: str | None = None) -> None:
        self.session_id = session_id
        self.trace_id = trace_id
        self.auth = SessionAuth(session_id)
        self.delivered = 0
        self.dropped = 0
        self.in_flight = 0  # events taken into the current batch and not yet accounted for
        self.failure: str | None = None  # why the session could not be created, if it could not
        self.session_url: str | None = None
        self.token_cost: Decimal | None = None
        self.closed = False


class Op:
    """A session lifecycle operation queued in order with the session's events."""

    __slots__ = ("body", "channel", "final", "kind")

    def __init__(self, kind: str, channel: SessionChannel, body: bytes, final: bool = False):
        self.kind = kind
        self.channel = channel
        self.body = body
        self.final = final


# An event of a session (checked, not yet encoded; or encoded, from another thread or the spool).
Payload = Event | bytes
# One event of a session, or a session operation.
Item = tuple[SessionChannel, Payload] | Op
# The events of one create_events request: finalized events, or already encoded ones.
Batch = list[Event | msgspec.Raw]


class Taken(NamedTuple):
    """Items taken out of the buffer together, by session in queue order, and how many."""

    entries: dict[SessionChannel, list[Payload | Op]]
    size: int  # items taken (events and operations)


class Run(NamedTuple):
    """A run of one session's events, ready to send: the events and their request body."""

    events: Batch
    body: bytes


# A batch ready to send: per session, its operations and runs of events, in order.
Steps = dict[SessionChannel, list[Op | Run]]


class Prepared(NamedTuple):
    """A batch taken and prepared: what it took, and its steps."""

    taken: Taken
    steps: Steps


class ExportStats(msgspec.Struct, frozen=True):
    """Counters of one client's exporter.

    Attributes:
        queued: Items accepted into the buffer (events and session operations).
        delivered: Events acknowledged by the API.
        dropped: Events that will never be delivered (each counted once, by reason).
        dropped_by_reason: ``dropped`` broken down by reason.
        pending: Items accepted and not yet resolved.
    """

    queued: int
    delivered: int
    dropped: int
    dropped_by_reason: dict[str, int]
    pending: int


class Exporter:
    """Owns the buffer, the export task and the API client of one AsyncClient on one loop."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, api: ApiClient) -> None:
        self.loop = loop
        self.api = api
        self._max_events = config.max_queue_size
        self._batch_size = config.max_batch_size
        self._batch_bytes = config.max_batch_bytes
        self._flush_interval = config.flush_interval
        self._block = config.backpressure == "block"
        self._block_timeout = config.backpressure_timeout
        self._max_concurrency = 8

        # The buffer: two deques kept in step (a payload and its session's channel), so that
        # buffering an event allocates nothing the garbage collector tracks (no tuple per event):
        # with 100k events queued, GC passes over tuples cost more than recording itself.
        self._buf: collections.deque[Payload | Op] = collections.deque()
        self._buf_channels: collections.deque[SessionChannel] = collections.deque()
        self._buffered_events = 0
        self._queued = 0  # items ever accepted
        self._resolved = 0  # items taken out and finished with (delivered or dropped)
        self._delivered = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._warned: set[str] = set()
        self._channels: dict[str, SessionChannel] = {}

        self._wake = asyncio.Event()  # the buffer went from empty to non-empty
        self._batch_ready = asyncio.Event()  # a full batch is buffered, or a flush is wanted
        self._flush_targets: list[tuple[int, asyncio.Future[None]]] = []
        self._room_waiters: collections.deque[asyncio.Future[None]] = collections.deque()

        self._thread_buf: collections.deque[tuple[SessionChannel, Payload]] = collections.deque()
        self._thread_wakeup = False
        self._loop_thread = threading.get_ident()

        self._task: asyncio.Task[None] | None = None
        self._closed = False

        # The event bound the hot path checks: max_queue_size, or 0 while items go to the spool
        # (so that offer() sends them to the slow path with no extra test of its own).
        self._limit = self._max_events
        self._spool = Spool(config.spool_dir, config.spool_max_bytes) if config.spool_dir else None
        # The batches taken from the buffer and not finished yet, by session (spooled again if
        # close cuts them): the one being sent, and the next one, prepared meanwhile.
        self._batches: list[Taken] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the export task (on the running loop); replay what a spool holds."""
        self._loop_thread = threading.get_ident()
        if self._spool is not None:
            left = self._spool.open()
            if left:
                self._queued += left  # resolved as they are replayed
                self._limit = 0
                self._wake.set()
        self._task = self.loop.create_task(self._run(), name="agentops_async-exporter")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    async def close(self, timeout: float) -> bool:
        """Deliver what is buffered (bounded by ``timeout``), stop the task, close HTTP.

        Returns True when every event queued before the call was resolved in time and nothing had
        to be cut at shutdown: each was delivered (acknowledged by the API), dropped earlier for
        a counted reason, or, with a spool, kept on disk for the next process. True does not
        mean that everything arrived: ``stats().dropped`` says what did not. False when the
        timeout cut events (counted as dropped) or the spool could not keep them.
        """
        if self._closed:
            return True
        done = await self.flush(timeout)
        self._closed = True
        self._limit = 0  # every later offer() takes the slow path, which refuses it
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and getattr(current, "cancelling", lambda: 0)():
                    raise  # our caller is being cancelled too, not just the exporter task
        self._drain_thread_buf()
        if self._spool is not None:
            lost = self._spool_unsent()
        else:
            lost = self._abandon_in_flight(SHUTDOWN) + self._buffered_events
            for item in self._buffered_items():
                if type(item) is tuple:
                    self.drop(item[0], SHUTDOWN)
        self._buffered_events = 0
        self._buf.clear()
        self._buf_channels.clear()
        self._batches = []
        self._resolved = self._queued
        self._release_flush_waiters()
        for fut in self._room_waiters:
            if not fut.done():
                fut.set_result(None)
        await self.api.close()
        return done and not lost

    def _spool_unsent(self) -> int:
        """At close: put the cut batch and the buffer back in front of the spool; count the rest.

        Events of the cut batch that did arrive are sent again by the next process; the server
        stores each event id once. Returns how many events could not be kept (counted dropped).
        """
        assert self._spool is not None
        unsent = [*self._batch_items(), *self._buffered_items()]
        kept = self._spool.prepend([_to_record(item) for item in unsent])
        lost = 0
        for item in unsent[kept:]:
            if type(item) is tuple:
                self.drop(item[0], "spool full (spool_max_bytes reached)")
                lost += 1
        for channel in self._batch_channels():
            channel.in_flight = 0
        self._spool.close()
        return lost

    # -- channels -----------------------------------------------------------------------------
    def open_channel(self, session_id: str, trace_id: str) -> SessionChannel:
        """Make the channel of a new session."""
        channel = SessionChannel(session_id, trace_id)
        self._channels[session_id] = channel
        return channel

    # -- producers ------------------------------------------------------------------------------
    def offer(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event if there is room (loop thread only); False when full."""
        buffered = self._buffered_events
        if buffered >= self._limit:
            return self._offer_slow(channel, data)
        self._buf.append(data)
        self._buf_channels.append(channel)
        self._buffered_events = buffered + 1
        self._queued += 1
        if not buffered:  # (a buffer holding only session operations has its wake-up set)
            self._wake.set()
        elif buffered + 1 == self._batch_size:  # a full batch: the exporter never waits above it
            self._batch_ready.set()
        return True

    def _offer_slow(self, channel: SessionChannel, data: Payload) -> bool:
        """The buffer is full, or items are going to the spool: spool the event if possible."""
        if self._closed or self._spool is None:
            return False
        if not self._spool.append(SpoolRecord(EVENT, channel.session_id, _encoded(channel, data))):
            self.drop(channel, "spool full (spool_max_bytes reached)")
            return True  # accounted for: do not wait for room or count it twice
        if self._limit:
            self._limit = 0
            self._warn_once("spooling", f"export buffer full: spooling to {self._spool.directory}")
        self._queued += 1
        return True

    def refuse(self, channel: SessionChannel) -> bool:
        """Count an event :meth:`offer` did not take (the client is closed, or the queue is
        full) as dropped, under that reason; returns False, for the caller to return."""
        self.drop(channel, CLOSED if self._closed else QUEUE_FULL)
        return False

    async def put(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event, waiting for room (backpressure) or dropping, as configured."""
        if self.offer(channel, data):
            return True
        if self._closed:
            return self.refuse(channel)
        if self._block:
            deadline = self.loop.time() + self._block_timeout
            while not self._closed:
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    break
                fut = self.loop.create_future()
                self._room_waiters.append(fut)
                try:
                    await asyncio.wait_for(fut, remaining)
                except asyncio.TimeoutError:
                    break
                except asyncio.CancelledError:
                    # The caller gave up: the event was counted as recorded, so count it here.
                    self.drop(channel, "cancelled while waiting for room in the queue")
                    raise
                finally:
                    if not fut.done():
                        fut.cancel()
                if self.offer(channel, data):
                    return True
        self.drop(channel, QUEUE_FULL)
        return False

    def enqueue_op(self, op: Op) -> None:
        """Queue a session operation; never dropped by the bound, never waits."""
        # Events other threads handed over before this call go first (e.g. before the final
        # update_session of end()), whatever the order their wake-up callbacks run in.
        self._drain_thread_buf()
        if self._closed:
            self._warn_once("closed", "a session operation arrived after the client was closed")
            return
        if self._limit == 0 and self._spool is not None:  # keep order behind spooled items
            record = SpoolRecord(op.kind, op.channel.session_id, op.body, op.final)
            self._spool.append(record, force=True)
            self._queued += 1
            return
        self._buf.append(op)
        self._buf_channels.append(op.channel)
        self._queued += 1
        if len(self._buf) == 1:
            self._wake.set()

    def submit_threadsafe(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event from any thread without waiting; False (counted) when full."""
        if threading.get_ident() == self._loop_thread:
            return self.offer(channel, data) or self.refuse(channel)
        if self._spool is None and (
            self._buffered_events + len(self._thread_buf) >= self._max_events or self._closed
        ):
            # Counted on the loop so that the counters have a single writer.
            self.loop.call_soon_threadsafe(self.refuse, channel)
            return False
        self._thread_buf.append((channel, data))
        if not self._thread_wakeup:
            self._thread_wakeup = True
            self.loop.call_soon_threadsafe(self._drain_thread_buf)
        return True

    def _drain_thread_buf(self) -> None:
        # Clear the flag before popping: a producer that appends after the last pop and sees the
        # flag down schedules another drain, so nothing is stranded.
        self._thread_wakeup = False
        buf = self._thread_buf
        reason = CLOSED if self._closed else QUEUE_FULL
        while buf:
            channel, data = buf.popleft()
            if not self.offer(channel, data):
                self.drop(channel, reason)

    # -- accounting -------------------------------------------------------------------------------
    def drop(self, channel: SessionChannel | None, reason: str, count: int = 1) -> None:
        """Count ``count`` events of ``channel`` that will not be delivered (loop thread)."""
        if channel is not None:
            channel.dropped += count
        self._count_dropped(count, reason)

    def _count_dropped(self, count: int, reason: str, detail: str | None = None) -> None:
        # ``reason`` is a stable key for the counters; ``detail`` (logged once) says more.
        self._dropped[reason] += count
        more = f" ({detail})" if detail else ""
        self._warn_once(
            reason,
            f"dropped {count} event(s): {reason}{more}; further drops for this reason are "
            "counted in stats, not logged",
        )

    def _account_dropped(
        self, channel: SessionChannel, count: int, reason: str, detail: str | None = None
    ) -> None:
        channel.dropped += count
        channel.in_flight -= count
        self._count_dropped(count, reason, detail)

    def _batch_items(self) -> list[Item]:
        """The batches taken and not finished, as items in order (for close and the spool)."""
        return [
            entry if type(entry) is Op else (channel, entry)  # type: ignore[misc]
            for taken in self._batches
            for channel, entries in taken.entries.items()
            for entry in entries
        ]

    def _batch_channels(self) -> set[SessionChannel]:
        """The sessions with items in the batches taken and not finished."""
        return {channel for taken in self._batches for channel in taken.entries}

    def _abandon_in_flight(self, reason: str) -> int:
        """Count every event of the batches taken not yet accounted for as dropped; how many."""
        lost = 0
        for channel in self._batch_channels():
            lost += channel.in_flight
            channel.dropped += channel.in_flight
            channel.in_flight = 0
        if lost:
            self._count_dropped(lost, reason)
        return lost

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("agentops_async: %s", message)

    def stats(self) -> ExportStats:
        """A snapshot of the counters."""
        return ExportStats(
            queued=self._queued,
            delivered=self._delivered,
            dropped=sum(self._dropped.values()),
            dropped_by_reason=dict(self._dropped),
            pending=self._queued - self._resolved,
        )

    # -- flush ------------------------------------------------------------------------------------
    async def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued before this call is resolved; False on timeout."""
        self._drain_thread_buf()
        target = self._queued
        if self._resolved >= target:
            return True
        if self._task is None or self._task.done():
            return False
        fut: asyncio.Future[None] = self.loop.create_future()
        self._flush_targets.append((target, fut))
        self._batch_ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return False
        return self._resolved >= target

    def _release_flush_waiters(self) -> None:
        still = []
        for target, fut in self._flush_targets:
            if self._resolved >= target or self._closed:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((target, fut))
        self._flush_targets = still

    # -- the export task --------------------------------------------------------------------------
    async def _run(self) -> None:
        ahead: Prepared | None = None
        while True:
            if ahead is None:
                if not await self._wait_for_items():
                    continue
                ahead = await self._take_and_prepare()
            current, ahead = ahead, None
            # With a full batch (or a flush) waiting, take and prepare it while this one is on
            # the wire: the server's work and ours overlap. Sending stays one batch at a time,
            # so each session's requests keep their order.
            preparing: asyncio.Task[Prepared] | None = None
            if self._buffered_events >= self._batch_size or (
                self._flush_targets and self._buffered_events
            ):
                preparing = self.loop.create_task(self._take_and_prepare())
            try:
                await self._ship(current.steps)
                if preparing is not None:
                    ahead = await preparing
            except asyncio.CancelledError:
                if preparing is not None:
                    preparing.cancel()  # what it took stays in self._batches, for close()
                    await asyncio.wait({preparing})
                raise
            except Exception:  # a bug here must not kill delivery for the rest of the process
                log.exception("agentops_async: exporter error; dropping the batch in flight")
                ahead = await self._prepared_or_none(preparing)
                self._abandon_batches(keep=ahead)
                continue
            self._batches.remove(current.taken)
            self._resolved += current.taken.size
            self._release_flush_waiters()

    @staticmethod
    async def _prepared_or_none(preparing: asyncio.Task[Prepared] | None) -> Prepared | None:
        """The next batch, prepared while the failed one was sent, if its preparation worked."""
        if preparing is None:
            return None
        await asyncio.wait({preparing})
        if preparing.cancelled() or preparing.exception() is not None:
            return None
        return preparing.result()

    def _abandon_batches(self, keep: Prepared | None) -> None:
        """After an exporter error: count the events of the batches taken (but ``keep``'s) that
        are not accounted for yet as dropped, and resolve those batches."""
        kept: collections.Counter[SessionChannel] = collections.Counter()
        if keep is not None:
            for channel, steps in keep.steps.items():
                kept[channel] += sum(len(step.events) for step in steps if type(step) is Run)
        lost = 0
        for channel in self._batch_channels():
            count = channel.in_flight - kept[channel]
            if count > 0:
                channel.in_flight -= count
                channel.dropped += count
                lost += count
        if lost:
            self._count_dropped(lost, "internal exporter error")
        for taken in [t for t in self._batches if keep is None or t is not keep.taken]:
            self._batches.remove(taken)
            self._resolved += taken.size
        self._release_flush_waiters()

    async def _wait_for_items(self) -> bool:
        """Wait until a batch should be taken (full, flushed, or the interval passed)."""
        if not self._buf and self._spool is not None and self._limit == 0:
            self._load_from_spool()
        if not self._buf:
            self._wake.clear()
            await self._wake.wait()
            return False
        if self._buffered_events < self._batch_size and not self._flush_targets:
            self._batch_ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._batch_ready.wait(), self._flush_interval)
        return True

    async def _take_and_prepare(self) -> Prepared:
        taken = self._take_batch()
        await asyncio.sleep(0)  # let the application run between taking and preparing
        return Prepared(taken, await self._prepare(taken.entries))

    def _load_from_spool(self) -> None:
        """Move the oldest spooled items into the (empty) buffer; end spooling when drained."""
        assert self._spool is not None
        for record in self._spool.read(self._batch_size):
            channel = self._channel_for(record.session_id)
            if record.kind == EVENT:
                self._buf.append(record.body)
                self._buffered_events += 1
            else:
                self._buf.append(Op(record.kind, channel, record.body, record.final))
            self._buf_channels.append(channel)
        if self._spool.empty:
            self._limit = self._max_events  # back to memory; the room waiters may go on
            self._wake_room_waiters()

    def _channel_for(self, session_id: str) -> SessionChannel:
        """The channel of a session, or a new one for a session replayed from the spool."""
        channel = self._channels.get(session_id)
        if channel is None:
            # No JWT yet: _send_events re-authorises with the API key before its first send.
            channel = self._channels[session_id] = SessionChannel(session_id)
        return channel

    def _wake_room_waiters(self) -> None:
        waiters = self._room_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _buffered_items(self) -> list[Item]:
        """What the buffer holds, as items (for close and the spool)."""
        return [
            payload if type(payload) is Op else (channel, payload)  # type: ignore[misc]
            for channel, payload in zip(self._buf_channels, self._buf, strict=True)
        ]

    def _take_batch(self) -> Taken:
        """Take up to a batch of events (and the operations among them) out of the buffer,
        grouped by session in queue order; it stays in ``self._batches`` until finished."""
        buf, channels = self._buf, self._buf_channels
        if len(buf) == self._buffered_events:  # events only (the common case): bulk moves
            count = min(len(buf), self._batch_size)
            if count == len(buf):
                payloads, owners = list(buf), list(channels)
                buf.clear()
                channels.clear()
            else:
                payloads = [buf.popleft() for _ in range(count)]
                owners = [channels.popleft() for _ in range(count)]
            if owners.count(owners[0]) == count:  # and one session
                owners[0].in_flight += count
                self._buffered_events -= count
                return self._taken({owners[0]: payloads}, count)
        else:
            payloads, owners = [], []
            events = 0
            while buf and events < self._batch_size:
                payload = buf.popleft()
                payloads.append(payload)
                owners.append(channels.popleft())
                if type(payload) is not Op:
                    events += 1
        batch: dict[SessionChannel, list[Payload | Op]] = {}
        events = 0
        for channel, payload in zip(owners, payloads, strict=True):
            entries = batch.get(channel)
            if entries is None:
                entries = batch[channel] = []
            entries.append(payload)
            if type(payload) is not Op:
                events += 1
                channel.in_flight += 1
        self._buffered_events -= events
        return self._taken(batch, len(payloads))

    def _taken(self, entries: dict[SessionChannel, list[Payload | Op]], count: int) -> Taken:
        taken = Taken(entries, count)
        self._batches.append(taken)
        self._wake_room_waiters()
        return taken

    async def _prepare(self, batch: dict[SessionChannel, list[Payload | Op]]) -> Steps:
        """Turn each session's part of a batch into steps: operations, and runs of events with
        their wire fields filled in and their request body encoded (a slice at a time).

        Never raises for what an event holds: an event that cannot be prepared or encoded is
        dropped (counted) and the rest of its run is sent.
        """
        steps: Steps = {}
        for channel, entries in batch.items():
            session_steps: list[Op | Run] = []
            run: list[Payload] = []
            for entry in entries:
                if type(entry) is Op:
                    if run:
                        await self._add_run(session_steps, channel, run)
                        run = []
                    session_steps.append(entry)
                else:
                    run.append(entry)  # type: ignore[arg-type]
            if run:
                await self._add_run(session_steps, channel, run)
            steps[channel] = session_steps
        return steps

    async def _add_run(
        self, steps: list[Op | Run], channel: SessionChannel, run: list[Payload]
    ) -> None:
        prepared = await self._prepare_run(channel, run)
        if prepared.events:  # (empty when every event of the run was dropped)
            steps.append(prepared)

    async def _prepare_run(self, channel: SessionChannel, run: list[Payload]) -> Run:
        """Wire fields and body of a run, a slice at a time (one pass: each slice is encoded
        right after its wire fields are filled in), yielding to the loop between slices."""
        events: Batch = []
        parts: list[bytes] = []
        session_id, trace_id = channel.session_id, channel.trace_id
        for start in range(0, len(run), _YIELD_EVERY):
            if start:
                await asyncio.sleep(0)  # keep each stretch of loop time short (latency)
            part = run[start : start + _YIELD_EVERY]
            try:
                wired = wire_events(part, session_id, trace_id)
            except Exception:  # some event holds what the wire cannot take: one at a time
                wired = self._wire_each(channel, part)
            kept, body = self._encode_slice(channel, wired)
            if kept:
                events += kept
                parts.append(body)
        await asyncio.sleep(0)  # the request machinery comes next: a stretch of its own
        return Run(events, parts[0] if len(parts) == 1 else wire.join_bodies(parts))

    def _wire_each(self, channel: SessionChannel, payloads: list[Payload]) -> Batch:
        """:func:`wire_events` one event at a time, dropping (counted) those that fail."""
        events: Batch = []
        for payload in payloads:
            try:
                events += wire_events((payload,), channel.session_id, channel.trace_id)
            except Exception as exc:
                self._drop_unsendable(channel, payload, exc)
        return events

    def _drop_unsendable(self, channel: SessionChannel, event: object, exc: Exception) -> None:
        what = type(event).__name__
        event_id = getattr(event, "id", None)
        detail = f"{what} {event_id}: {type(exc).__name__}: {exc}"
        if len(detail) > 300:
            detail = detail[:300] + "..."
        log.debug("agentops_async: could not prepare %s %s", what, event_id, exc_info=exc)
        self._account_dropped(channel, 1, UNSENDABLE, detail)

    async def _ship(self, steps: Steps) -> None:
        if len(steps) == 1:
            ((channel, session_steps),) = steps.items()
            await self._ship_session(channel, session_steps)
            return
        limit = asyncio.Semaphore(self._max_concurrency)

        async def bounded(channel: SessionChannel, session_steps: list[Op | Run]) -> None:
            async with limit:
                await self._ship_session(channel, session_steps)

        # Every session's part ends before an error is raised, so that nothing is still being
        # sent (and accounted for) when the caller counts what the error lost.
        results = await asyncio.gather(
            *(bounded(c, e) for c, e in steps.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _ship_session(self, channel: SessionChannel, steps: list[Op | Run]) -> None:
        """Send one session's part of the batch in order."""
        for step in steps:
            if type(step) is Op:
                await self._run_op(step)
            elif channel.closed:
                count = len(step.events)  # type: ignore[union-attr]
                self._account_dropped(channel, count, "event of an already-ended session")
            else:
                await self._send_events(channel, step.events, step.body)  # type: ignore[union-attr]

    async def _encode(self, channel: SessionChannel, events: Batch) -> tuple[Batch, bytes]:
        """The request body of ``events``: one msgspec call per slice, yielding between slices.

        Returns the events the body holds (those that could not be encoded are dropped, counted)
        and the body.
        """
        if len(events) <= _YIELD_EVERY:
            return self._encode_slice(channel, events)
        kept: Batch = []
        parts = []
        for start in range(0, len(events), _YIELD_EVERY):
            if start:
                await asyncio.sleep(0)
            part, body = self._encode_slice(channel, events[start : start + _YIELD_EVERY])
            if part:
                kept += part
                parts.append(body)
        await asyncio.sleep(0)  # the request machinery comes next: a stretch of its own
        return kept, wire.join_bodies(parts)

    def _encode_slice(self, channel: SessionChannel, events: Batch) -> tuple[Batch, bytes]:
        """One slice's body in one msgspec call; if msgspec refuses some event, each event is
        encoded on its own (:func:`encode_event` makes what it holds sendable) and kept as
        ``msgspec.Raw``, so that a retry or a split never encodes it again."""
        try:
            return events, wire.events_body(events)
        except Exception:
            return self._encode_each(channel, events)

    def _encode_each(self, channel: SessionChannel, events: Batch) -> tuple[Batch, bytes]:
        kept: Batch = []
        for event in events:
            if type(event) is msgspec.Raw:
                kept.append(event)
                continue
            try:
                kept.append(msgspec.Raw(encode_event(event)))
            except Exception as exc:
                self._drop_unsendable(channel, event, exc)
        return kept, wire.events_body(kept)

    async def _send_events(
        self, channel: SessionChannel, events: Batch, body: bytes | None = None
    ) -> None:
        """Send ``events`` (encoded as ``body`` when given), splitting what the server refuses."""
        if channel.failure is None and channel.auth.jwt is None:
            try:  # a session replayed from the spool by a new process: fetch its JWT
                await self.api.reauthorize(channel.auth)
            except ApiError as exc:
                channel.failure = str(exc)
        if channel.failure is not None:
            self._account_dropped(
                channel, len(events), "session could not be created", channel.failure
            )
            return
        if body is None:
            events, body = await self._encode(channel, events)
            if not events:
                return
        if len(body) > self._batch_bytes:
            await self._send_oversized(channel, events, len(body))
            return
        try:
            await self.api.create_events(channel.auth, body)
        except ApiError as exc:
            if len(events) > 1 and _refuses_content(exc):
                # Too large, or some event the server cannot take: bisect, so that only the
                # offending events are dropped and the rest of the batch still arrives.
                half = len(events) // 2
                await self._send_events(channel, events[:half])
                await self._send_events(channel, events[half:])
                return
            kind = "gave up after retries" if exc.retryable else f"refused (HTTP {exc.status})"
            self._account_dropped(channel, len(events), f"create_events {kind}", str(exc))
            return
        channel.delivered += len(events)
        channel.in_flight -= len(events)
        self._delivered += len(events)

    async def _send_oversized(self, channel: SessionChannel, events: Batch, size: int) -> None:
        """A batch whose body is above max_batch_bytes: send it in pieces that fit."""
        if len(events) == 1:
            event = events[0]
            detail = (
                describe_oversize(event, size, self._batch_bytes)
                if isinstance(event, Event)
                else f"{size:,} bytes"
            )
            self._account_dropped(
                channel, 1, f"event larger than max_batch_bytes ({self._batch_bytes} bytes)", detail
            )
            return
        # Events are of similar size in most batches: cut in as many pieces as the size says
        # (with a margin), and let each piece split again if it is still too large.
        pieces = min(len(events), -(-size * 5 // (self._batch_bytes * 4)))
        step = -(-len(events) // max(pieces, 2))
        for start in range(0, len(events), step):
            await self._send_events(channel, events[start : start + step])

    async def _run_op(self, op: Op) -> None:
        channel = op.channel
        try:
            if op.kind == CREATE:
                answer = await self.api.create_session(op.body)
                channel.auth.jwt = answer.jwt
                channel.session_url = answer.session_url
            elif channel.failure is not None:
                pass  # the session does not exist on the server; its loss is already counted
            elif op.kind == UPDATE:
                updated = await self.api.update_session(channel.auth, op.body)
                cost = wire.parse_token_cost(updated.token_cost)
                if cost is not None:
                    channel.token_cost = cost
            elif op.kind == AGENT:
                await self.api.create_agent(channel.auth, op.body)
        except ApiError as exc:
            if op.kind == CREATE:
                channel.failure = str(exc)
            self._warn_once(
                f"op:{op.kind}:{exc.status}",
                f"{op.kind} for session {channel.session_id} failed: {exc}",
            )
        finally:
            if op.final:
                channel.closed = True
                self._channels.pop(channel.session_id, None)


def _encoded(channel: SessionChannel, payload: Payload) -> bytes:
    """An event of ``channel`` as JSON bytes (encoded now if it was not yet)."""
    if type(payload) is bytes:
        return payload
    assert isinstance(payload, Event)
    finalize(payload, channel.session_id, channel.trace_id)
    return encode_event(payload)


def _to_record(item: Item) -> SpoolRecord:
    if type(item) is tuple:
        return SpoolRecord(EVENT, item[0].session_id, _encoded(item[0], item[1]))
    op: Op = item  # type: ignore[assignment]
    return SpoolRecord(op.kind, op.channel.session_id, op.body, op.final)


def _refuses_content(exc: ApiError) -> bool:
    """True when the server refused what was sent (not who sent it, nor its own availability)."""
    return not exc.retryable and exc.status is not None and exc.status not in (401, 403, 404)


class NullExporter:
    """Stands in for :class:`Exporter` when the client is disabled: everything is a no-op."""

    closed = False

    def open_channel(self, session_id: str, trace_id: str) -> SessionChannel:
        return SessionChannel(session_id, trace_id)

    def offer(self, channel: SessionChannel, data: Payload) -> bool:
        return True

    async def put(self, channel: SessionChannel, data: Payload) -> bool:
        return True

    def enqueue_op(self, op: Op) -> None:
        return None

    def submit_threadsafe(self, channel: SessionChannel, data: Payload) -> bool:
        return True

    def drop(self, channel: SessionChannel | None, reason: str, count: int = 1) -> None:
        return None

    def refuse(self, channel: SessionChannel) -> bool:
        return False

    async def flush(self, timeout: float | None) -> bool:
        return True

    async def close(self, timeout: float) -> bool:
        return True

    def stats(self) -> ExportStats:
        return ExportStats(queued=0, delivered=0, dropped=0, dropped_by_reason={}, pending=0)
