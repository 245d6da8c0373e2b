"""The exporter: a bounded buffer drained in batches by one asyncio task per client.

``record()`` checks the event and hands ``(channel, event)`` to :meth:`Exporter.offer`: a deque
append, a few counter bumps, maybe a wake-up. Everything else — ids, encoding (one msgspec call
per batch), grouping by session, cutting batches by count and bytes, acknowledgement — happens in
the exporter task, in queue order: a session's creation goes out before its events, and its final
update after them.

Several requests in flight (``max_concurrent_exports``, K): the buffer is cut into K lanes, and
each session is given one as it starts (in turn, so that a few long sessions use them all). A lane
is a buffer, its batches taken and not finished, and a loop that keeps one request on the wire
while it prepares the next batch; with K > 1 each lane's loop is a child task of the export task
(which owns them: cancelling it cancels and awaits them). A session's items are only ever in its
lane, so they go out in order; the bound, the counters, flush waiters and the spool are shared.
Lanes resolve their items in order but not in step with each other, so ``flush()`` waits for a
count per lane rather than a total.

Events from other threads (the sync facade) arrive already encoded, as bytes. The protocol
(requests, retries, what an answer means) belongs to the export target (:mod:`._targets`): the
exporter hands it each cut batch and accounts for what it reports.

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
from collections.abc import Callable
from decimal import Decimal
from typing import NamedTuple

import msgspec

from .._config import Config
from .._hooks import FILTERED, Hooks
from ..events import Event, _encode_event, _finalize, _wire_events
from ._otel import quiet_context
from ._spool import EVENT, FORMAT_VERSION, Spool, SpoolRecord, decode_op, encode_op
from ._targets import (
    SESSION_CREATED,
    EventRun,
    ExportBatch,
    ExportTarget,
    SessionOp,
    SessionPart,
)

log = logging.getLogger("agentops_async")

_YIELD_EVERY = 64  # items the exporter handles between two yields to the event loop
QUEUE_FULL = "queue full (max_queue_size reached)"
SHUTDOWN = "not acknowledged before the shutdown timeout"
AFTER_CLOSE = "recorded after the client was closed"
LOOP_CLOSED = "event loop closed before delivery"
SPOOL_FULL = "spool full (spool_max_bytes reached)"
UNSENDABLE = "event could not be prepared for sending (internal error)"
ENDED = "event of an already-ended session"


class SessionChannel(msgspec.Struct, gc=False, eq=False):
    """Exporter-side state of one session: what was delivered, dropped, answered.

    Not tracked by the garbage collector (``gc=False``): it holds only strings and numbers
    (a ``flush_session()`` waiter's future is kept by the exporter, not here), so it can never
    be part of a reference cycle. A service has one per request queued for up to a flush
    interval, and each tracked object queued that long is carried into the older generations,
    whose collections cost a busy service milliseconds each. Compared by identity.
    """

    session_id: str
    trace_id: str | None = None
    # The exporter lane (an index) that sends everything of this session, in order.
    lane: int = 0
    delivered: int = 0
    dropped: int = 0
    filtered: int = 0  # dropped by before_send on purpose: not lost
    in_flight: int = 0  # events taken into the current batch and not yet accounted for
    failure: str | None = None  # why the session could not be created, if it could not
    session_url: str | None = None
    token_cost: Decimal | None = None
    closed: bool = False
    # True once the session's final update is resolved (sent, or counted as dropped): by then
    # every event of the session queued before it is resolved too (a session's items go out
    # in order); a flush_session() waiting for that is woken then.
    settled: bool = False


class Op(SessionOp, kw_only=True, gc=False, eq=False):
    """A session operation queued in order with the session's events, with its channel.

    Built as ``Op(kind, snapshot, final, channel=channel)`` (the channel by keyword).
    """

    channel: SessionChannel
    resolved: bool = False  # sent (or its failure counted): never taken back or counted again


# An event of a session (checked, not yet encoded; or encoded, from another thread or the spool).
Payload = Event | bytes
# One event of a session, or a session operation.
Item = tuple[SessionChannel, Payload] | Op
# The events of one run: finalized events, or already encoded ones.
Batch = list[Event | msgspec.Raw]


class Taken(NamedTuple):
    """Items taken out of the buffer together, by session in queue order, and how many."""

    entries: dict[SessionChannel, list[Payload | Op]]
    size: int  # items taken (events and operations)


class Prepared(NamedTuple):
    """A batch taken and prepared: what it took, and the batch for the target."""

    taken: Taken
    batch: ExportBatch
    channels: dict[str, SessionChannel]  # the channels of the batch's sessions, by session id


class _Lane:
    """One lane of the exporter: the buffered items of its sessions and its batches taken and
    not finished. A lane has one request on the wire at a time (and its next batch prepared
    meanwhile), and a session always uses the same lane: so a session's requests go in order,
    whatever the other lanes do (``max_concurrent_exports`` lanes in all)."""

    __slots__ = ("batch_ready", "batches", "buf", "channels", "events", "index", "resolved", "wake")

    def __init__(self, index: int) -> None:
        self.index = index
        # Two deques kept in step (a payload and its session's channel), so that buffering an
        # event allocates nothing the garbage collector tracks (no tuple per event): with 100k
        # events queued, GC passes over tuples cost more than recording itself.
        self.buf: collections.deque[Payload | Op] = collections.deque()
        self.channels: collections.deque[SessionChannel] = collections.deque()
        self.events = 0  # events in ``buf`` (the rest are session operations)
        self.batches: list[Taken] = []  # taken from ``buf`` and not finished, oldest first
        self.resolved = 0  # items of this lane finished with (delivered or dropped)
        self.wake = asyncio.Event()  # ``buf`` went from empty to non-empty
        self.batch_ready = asyncio.Event()  # a full batch is buffered, or a flush is wanted

    def accepted(self) -> int:
        """Items that ever entered this lane (resolved, or held in its buffer and batches)."""
        return self.resolved + len(self.buf) + sum(taken.size for taken in self.batches)


class _FlushWaiter:
    """A flush(): done when every lane has resolved what it held when the flush began (and what
    the spool held then, once it has been read back into the lanes)."""

    __slots__ = ("fut", "lanes", "queued", "spool_mark")

    def __init__(self, queued: int, spool_mark: int, lanes: list[int] | None) -> None:
        self.queued = queued  # items ever accepted, when the flush began
        self.spool_mark = spool_mark  # spool records that must have been read back first
        self.lanes = lanes  # per lane: items it must have resolved (None: known once read back)
        self.fut: asyncio.Future[None] | None = None


class ExportStats(msgspec.Struct, frozen=True):
    """Counters of one client's exporter.

    Attributes:
        queued: Items accepted into the buffer (events and session operations).
        delivered: Events acknowledged by the API.
        dropped: Events that will never be delivered (each counted once, by reason).
        dropped_by_reason: ``dropped`` broken down by reason.
        pending: Items accepted and not yet resolved.
        ops_dropped: Session operations (create/update session, create agent) that never reached
            the API.
        sessions_not_ended: Sessions whose final update never reached the API: the server
            shows them RUNNING.
        spooled: Events that ``close()`` left in the disk spool, for the next process using the
            same ``spool_dir`` (not lost, not delivered yet).
        filtered: Events that ``before_send`` dropped on purpose (returned None): not lost, not
            in ``dropped``.
        sessions_sampled_out: Sessions that ``sample_rate`` left out (nothing of them is sent).
    """

    queued: int
    delivered: int
    dropped: int
    dropped_by_reason: dict[str, int]
    pending: int
    ops_dropped: int = 0
    sessions_not_ended: int = 0
    spooled: int = 0
    filtered: int = 0
    sessions_sampled_out: int = 0


class Exporter:
    """Owns the buffer, the export task and the export target of one AsyncClient on one loop."""

    def __init__(
        self, config: Config, loop: asyncio.AbstractEventLoop, target: ExportTarget
    ) -> None:
        self.loop = loop
        self.target = target
        self._max_events = config.max_queue_size
        self._batch_size = config.max_batch_size
        self._batch_bytes = config.max_batch_bytes
        self._flush_interval = config.flush_interval
        self._block = config.backpressure == "block"
        self._block_timeout = config.backpressure_timeout
        # before_send and redaction, run when a batch is prepared (None: nothing to run)
        self.hooks = Hooks.from_config(config.before_send, config.redact_secrets)
        self._filtered = 0
        self._sampled_out = 0

        # The buffer, in lanes (one request in flight each); sessions are spread over them in
        # turn. ``_buffered_events`` counts the events of every lane: the bound applies to all.
        self._lanes = [_Lane(index) for index in range(config.max_concurrent_exports)]
        self._next_lane = 0
        self._buffered_events = 0
        self._queued = 0  # items ever accepted
        self._resolved = 0  # items taken out and finished with (delivered or dropped)
        target.watch_pending(lambda: self._queued - self._resolved)  # for the outage warning
        self._delivered = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._ops_dropped = 0
        self._sessions_not_ended = 0
        self._spooled = 0  # events left in the spool by close()
        self._spooled_ops = 0
        self._closing = False  # close() sums up its drops in one warning of its own
        self._loop_ending = False  # the loop cancelled our task: it is shutting down
        self._warned: set[str] = set()
        self._channels: dict[str, SessionChannel] = {}

        self._flush_targets: list[_FlushWaiter] = []
        # The channels with a flush_session() waiting, and the future it waits on.
        self._session_waiters: dict[SessionChannel, asyncio.Future[None]] = {}
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
        self._spool_read = 0  # spool records read back into the lanes (for flush())
        self._unyielded = 0  # items prepared since the exporter last yielded to the loop

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the export task (on the running loop); replay what a spool holds."""
        self._loop_thread = threading.get_ident()
        if self._spool is not None:
            left = self._spool.open()
            if left:
                self._queued += left  # resolved as they are replayed
                for lane in self._lanes:
                    lane.wake.set()
        self._spawn()

    def _spawn(self) -> None:
        """Start a new export task on ``self.loop``, watched by :meth:`_task_ended`."""
        # While the spool holds items, new ones queue behind them (limit 0: the slow path).
        spooling = self._spool is not None and not self._spool.empty
        self._limit = 0 if spooling else self._max_events
        self._loop_ending = False
        # In a quiet context, whoever starts it: none of the caller's context variables (its
        # session, its span) and OTel instrumentation suppressed, so our requests are no spans.
        task = quiet_context().run(
            self.loop.create_task, self._run(), name="agentops_async-exporter"
        )
        task.add_done_callback(self._task_ended)
        self._task = task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """Done-callback of the export task. Only :meth:`close` ends it on purpose: any other
        end is accounted for here, so that the task never dies silently."""
        if task is not self._task or self._closed:
            return
        self._task = None
        self._limit = 0  # offer() takes the slow path, which starts a new task
        if task.cancelled():
            # Cancelled by someone else: typically asyncio.run() (or a test runner) finishing
            # with the client still open. Nothing is lost yet: what the batches held goes back
            # in front of the buffer, for the next task on this loop, on the client's next loop
            # (reattach), or at interpreter exit.
            self._loop_ending = _loop_is_ending(self.loop, task)
            self._requeue(self._reclaim_all())
            self.target.close_now()  # the loop may close next: nothing can be awaited any more
            held = self._queued - self._resolved
            if held:
                # A loop shutting down with the client open is the pytest and asyncio.run()
                # pattern, handled (INFO); a live loop cancelling our task is a surprise.
                log.log(
                    logging.INFO if self._loop_ending else logging.WARNING,
                    "agentops_async: the exporter task was cancelled with %d item(s) pending "
                    "(%s); they are kept and sent by a new task when the client is next used, "
                    "or at interpreter exit",
                    held,
                    "its event loop is shutting down before `await client.close()`"
                    if self._loop_ending
                    else "by someone else, on a running loop",
                )
        else:
            exc = task.exception()
            reason = f"exporter task failed ({type(exc).__name__})"
            lost = self._drop_items(self._reclaim_all(), reason, warn=False)
            log.warning(
                "agentops_async: the exporter task failed; %d event(s) of the batches in flight "
                "are dropped (counted as %r); a new task takes over at the next call",
                lost,
                reason,
                exc_info=exc,
            )
        self._release_flush_waiters(everyone=True)
        self._wake_room_waiters()

    def _ensure_running(self) -> bool:
        """Make sure an export task serves this exporter: start a new one after an unexpected
        end, or move to the running loop when ours has closed. False when none can run now."""
        if self._task is not None and not self.loop.is_closed():
            return True
        if self._closed:
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # sync code, outside any loop
            return False
        if running is self.loop:
            if self._loop_ending:
                return False  # the loop is shutting down: a new task would be destroyed pending
            log.info("agentops_async: starting a new exporter task")
            self._spawn()
        elif self.loop.is_closed():
            self.reattach(running)
        else:
            return False
        return True

    def reattach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move this exporter to ``loop`` (the running one) after its own loop has closed.

        What it held carries over and is delivered from the new loop: the buffer, the batches
        taken and not finished, events handed over by other threads, the sessions' channels
        and the counters (the target keeps what it knows of each session, such as JWTs).
        Events keep their ids, so whatever had reached the server before is stored once.
        """
        if self._task is not None:  # the loop closed without cancelling it (loop.close() alone)
            self._task = None
            self._requeue(self._reclaim_all())
        self.target.close_now()
        held = self._queued - self._resolved + len(self._thread_buf)
        self.loop = loop
        self._loop_thread = threading.get_ident()
        # Futures of the closed loop: whoever awaited them went away with it.
        self._flush_targets = []
        self._room_waiters.clear()
        for lane in self._lanes:
            lane.wake = asyncio.Event()
            lane.batch_ready = asyncio.Event()
            if lane.buf:
                lane.wake.set()
            if lane.events >= self._batch_size:
                lane.batch_ready.set()
        self._spawn()
        self._drain_thread_buf()
        if held:
            log.info(
                "agentops_async: the client's previous event loop closed with %d item(s) "
                "pending; delivering them from this loop",
                held,
            )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closed

    async def close(self, timeout: float) -> bool:
        """Deliver what is buffered (bounded by ``timeout``), stop the task, close HTTP.

        What could not be delivered in time is counted as dropped (or, with a spool, written to
        it for the next process) and summed up in one log line.

        Returns:
            True when everything accepted before the call was resolved within ``timeout`` (each
            event acknowledged by the API, or dropped earlier and counted in :meth:`stats`) and
            close() itself had to drop or spool nothing (no event, no session operation).
        """
        if self._closed:
            return True
        before = self._dropped.copy()
        ops_before, not_ended_before = self._ops_dropped, self._sessions_not_ended
        done = await self.flush(timeout)
        self._closed = self._closing = True
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
        unsent = [*self._reclaim_all(), *self._take_buffered()]
        if self._spool is not None:
            self._spool_unsent(unsent)
        else:
            self._drop_items(unsent, SHUTDOWN)
        self._resolved = self._queued
        self._release_flush_waiters()
        for channel in list(self._session_waiters):
            self._settle(channel)  # spooled or dropped: nothing more happens to it here
        for fut in self._room_waiters:
            if not fut.done():
                fut.set_result(None)
        await self.target.close()
        lost = self._report_close(before, ops_before, not_ended_before)
        self._closing = False
        return done and not lost and not self._spooled

    def _report_close(self, before: collections.Counter[str], ops: int, not_ended: int) -> bool:
        """One warning with everything close() could not deliver, one line about the spool;
        True when close() lost something."""
        lost = self._dropped - before
        lost_events = sum(lost.values())
        lost_ops = self._ops_dropped - ops
        if lost_events or lost_ops:
            message = f"close() could not deliver {lost_events:,} event(s)"
            if lost:
                message += " (" + ", ".join(f"{n:,} {r}" for r, n in lost.most_common()) + ")"
            if lost_ops:
                message += (
                    f" and {lost_ops:,} session operation(s) "
                    f"({self._sessions_not_ended - not_ended:,} session(s) left RUNNING on the "
                    "server)"
                )
            total = sum(self._dropped.values())
            if total != lost_events:
                message += f"; {total:,} event(s) dropped in all since the client started"
            log.warning("agentops_async: %s; see client.stats", message)
        if self._spool is not None and self._spooled + self._spooled_ops:
            log.info(
                "agentops_async: close(): %d event(s) and %d session operation(s) are in the "
                "spool %s, for the next process that uses it",
                self._spooled,
                self._spooled_ops,
                self._spool.directory,
            )
        return bool(lost_events or lost_ops)

    def _spool_unsent(self, unsent: list[Item]) -> None:
        """At close: put what was not delivered in front of the spool; count what does not fit.

        Operations whose fate is unknown (sent when close cut the batch) are sent again by the
        next process; the server treats them as the same operation.
        """
        assert self._spool is not None
        if self.hooks is not None:  # what goes to disk goes through the hooks first
            unsent = [item for item in unsent if self._passes_hooks(item)]
        kept = self._spool.prepend([_to_record(item) for item in unsent])
        self._drop_items(unsent[kept:], SPOOL_FULL)
        self._spooled = self._spool.events
        self._spooled_ops = self._spool.records - self._spool.events
        self._spool.close()

    # -- channels -----------------------------------------------------------------------------
    def open_channel(self, session_id: str, trace_id: str) -> SessionChannel:
        """Make the channel of a new session."""
        channel = SessionChannel(session_id, trace_id, lane=self._lane_for_new_session())
        self._channels[session_id] = channel
        return channel

    def _lane_for_new_session(self) -> int:
        """Lanes are given to sessions in turn: a few long sessions spread over all of them."""
        lane = self._next_lane % len(self._lanes)
        self._next_lane += 1
        return lane

    # -- producers ------------------------------------------------------------------------------
    def offer(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event if there is room (loop thread only); False when full."""
        buffered = self._buffered_events
        if buffered >= self._limit:
            return self._offer_slow(channel, data)
        lane = self._lanes[channel.lane]
        buf = lane.buf
        if not buf:
            lane.wake.set()
        buf.append(data)
        lane.channels.append(channel)
        self._buffered_events = buffered + 1
        self._queued += 1
        events = lane.events = lane.events + 1
        if events == self._batch_size:  # a full batch: the lane never waits above it
            lane.batch_ready.set()
        return True

    def _offer_slow(self, channel: SessionChannel, data: Payload) -> bool:
        """The buffer is full, items are going to the spool, or no export task runs."""
        if self._closed:
            return False
        if self._task is None or self.loop.is_closed():
            if self._ensure_running():
                return self.offer(channel, data)
            if self.loop.is_closed():
                return False  # no loop left to deliver from (see refuse())
            # The loop is shutting down (its tasks are being cancelled): keep the event, within
            # the bound (or behind what is spooled), for the client's next loop or exit.
            if self._spool is None or self._spool.empty:
                if self._buffered_events >= self._max_events:
                    return False
                lane = self._lanes[channel.lane]
                lane.buf.append(data)
                lane.channels.append(channel)
                lane.events += 1
                self._buffered_events += 1
                self._queued += 1
                return True
        if self._spool is None:
            return False
        if self.hooks is not None and type(data) is not bytes:  # before it is written to disk
            result = self.hooks.apply(data)  # type: ignore[arg-type]
            if type(result) is str:
                self.count_not_sent(channel, result)
                return True  # accounted for
            data = result  # type: ignore[assignment]
        if not self._spool.append(
            SpoolRecord(EVENT, channel.session_id, _encoded(channel, data), version=FORMAT_VERSION)
        ):
            self.drop(channel, SPOOL_FULL)
            return True  # accounted for: do not wait for room or count it twice
        if self._limit:
            self._limit = 0
            self._warn_once("spooling", f"export buffer full: spooling to {self._spool.directory}")
        self._queued += 1
        return True

    async def put(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event that did not fit: spool it, drop it, or wait for room, as configured.

        With ``backpressure="drop"`` (the default) this never suspends: a request handler's
        ``await record()`` must not wait on the network, least of all during an outage.
        """
        if self.offer(channel, data):
            return True
        if self._closed or self._task is None or self.loop.is_closed():
            self.refuse(channel)  # nothing would ever make room
            return False
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
        self.refuse(channel)
        return False

    def enqueue_op(self, op: Op) -> None:
        """Queue a session operation; never dropped by the bound, never waits."""
        # Events other threads handed over before this call go first (e.g. before the final
        # update_session of end()), whatever the order their wake-up callbacks run in.
        self._drain_thread_buf()
        if self._closed:
            self._warn_once("closed", "a session operation arrived after the client was closed")
            self._drop_op(op)
            return
        self._ensure_running()  # else it waits in the buffer for the next loop, or exit
        if self._spool is not None and not self._spool.empty:  # keep order behind spooled items
            self._spool.append(_to_record(op), force=True)
            self._queued += 1
            return
        lane = self._lanes[op.channel.lane]
        lane.buf.append(op)
        lane.channels.append(op.channel)
        self._queued += 1
        if len(lane.buf) == 1:
            lane.wake.set()

    def submit_threadsafe(self, channel: SessionChannel, data: Payload) -> bool:
        """Buffer one event from any thread without waiting; False (counted) when full."""
        if threading.get_ident() == self._loop_thread:
            if self.offer(channel, data):
                return True
            self.refuse(channel)
            return False
        if self._closed or self.loop.is_closed():
            self._call_on_loop(self.refuse, channel)
            return False
        full = self._buffered_events + len(self._thread_buf) >= self._max_events
        if self._spool is None and full:
            self._call_on_loop(self.drop, channel, QUEUE_FULL)
            return False
        self._thread_buf.append((channel, data))
        if not self._thread_wakeup:
            self._thread_wakeup = True
            # The loop may close meanwhile: the event then waits in _thread_buf for reattach()
            # or exit, which drain it.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._drain_thread_buf)
        return True

    def _call_on_loop(self, func: Callable[..., None], *args: object) -> None:
        """Run ``func`` on the loop (the counters have a single writer), or here when it closed."""
        try:
            self.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop is closed: nothing else writes the counters now
            func(*args)

    def _drain_thread_buf(self) -> None:
        # Clear the flag before popping: a producer that appends after the last pop and sees the
        # flag down schedules another drain, so nothing is stranded.
        self._thread_wakeup = False
        buf = self._thread_buf
        while buf:
            channel, data = buf.popleft()
            if not self.offer(channel, data):
                self.refuse(channel)

    # -- accounting -------------------------------------------------------------------------------
    def refuse(self, channel: SessionChannel) -> None:
        """Count an event that could not be buffered, with the reason why."""
        if self._closed:
            self.drop(channel, AFTER_CLOSE)
        elif self.loop.is_closed():
            self.drop(channel, LOOP_CLOSED)
        else:
            channel.dropped += 1
            self._count_dropped(1, QUEUE_FULL, _queue_full_hint(self._block, self._block_timeout))

    def drop(self, channel: SessionChannel | None, reason: str, count: int = 1) -> None:
        """Count ``count`` events of ``channel`` that will not be delivered (loop thread)."""
        if channel is not None:
            channel.dropped += count
        self._count_dropped(count, reason)

    def _count_dropped(self, count: int, reason: str, detail: str | None = None) -> None:
        # ``reason`` is a stable key for the counters; ``detail`` (logged once) says more.
        self._dropped[reason] += count
        if self._closing:
            return  # close() sums its drops up in one warning
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

    def _drop_op(self, op: Op) -> None:
        """Count a session operation that will never reach the API."""
        self._ops_dropped += 1
        if op.final:
            if op.channel.failure is None:
                self._sessions_not_ended += 1  # the server shows the session RUNNING
            self._settle(op.channel)

    def _drop_items(self, items: list[Item], reason: str, warn: bool = True) -> int:
        """Count ``items`` (events and operations) as dropped for ``reason``, and resolved;
        returns how many events they held."""
        self._resolved += len(items)
        events = 0
        for item in items:
            if type(item) is tuple:
                item[0].dropped += 1
                self._lanes[item[0].lane].resolved += 1
                events += 1
            else:
                self._drop_op(item)  # type: ignore[arg-type]
                self._lanes[item.channel.lane].resolved += 1  # type: ignore[union-attr]
        if events:
            if warn:
                self._count_dropped(events, reason)
            else:
                self._dropped[reason] += events
        return events

    def _reclaim_all(self) -> list[Item]:
        """:meth:`_reclaim_batches` of every lane (a session's items are all in one lane)."""
        items: list[Item] = []
        for lane in self._lanes:
            items += self._reclaim_batches(lane)
        return items

    def _reclaim_batches(self, lane: _Lane, keep: Taken | None = None) -> list[Item]:
        """Take back, in queue order, what the unfinished batches have not finished with.

        A session's part of the batches is sent in order, one batch at a time: the events not
        accounted for yet (delivered or dropped; ``channel.in_flight`` of them) are the last ones
        of its part; they are taken back with the operations not resolved yet (one cut while on
        the wire is sent again: create/update session set the same state again, and event ids
        make a re-sent event stored once). Empties ``lane.batches`` but for ``keep`` (the
        newest batch, prepared and not sent: it stays in flight); what is not taken back is
        resolved.
        """
        batches = [taken for taken in lane.batches if taken is not keep]
        lane.batches = [keep] if keep is not None else []
        staying: collections.Counter[SessionChannel] = collections.Counter()
        if keep is not None:
            for channel, entries in keep.entries.items():
                staying[channel] = sum(1 for entry in entries if type(entry) is not Op)
        unsent: list[dict[SessionChannel, int]] = [{} for _ in batches]
        left: dict[SessionChannel, int] = {}
        for index in range(len(batches) - 1, -1, -1):  # the newest batch is the least sent
            for channel, entries in batches[index].entries.items():
                remaining = left.setdefault(channel, channel.in_flight - staying[channel])
                events = sum(1 for entry in entries if type(entry) is not Op)
                unsent[index][channel] = min(events, remaining)
                left[channel] = remaining - unsent[index][channel]
        items: list[Item] = []
        finished = 0
        for taken, plan in zip(batches, unsent, strict=True):
            kept = 0
            for channel, entries in taken.entries.items():
                skip = sum(1 for entry in entries if type(entry) is not Op) - plan[channel]
                first = 0
                if skip:
                    seen = 0
                    for position, entry in enumerate(entries):
                        if type(entry) is not Op:
                            seen += 1
                            if seen == skip:
                                first = position + 1
                                break
                for entry in entries[first:]:
                    if type(entry) is not Op:
                        items.append((channel, entry))  # type: ignore[arg-type]
                        kept += 1
                    elif not entry.resolved:
                        items.append(entry)
                        kept += 1
            finished += taken.size - kept
        for channel in left:
            channel.in_flight = staying[channel]
        self._resolved += finished
        lane.resolved += finished
        return items

    def _requeue(self, items: list[Item]) -> None:
        """Put ``items`` back in front of the buffer, in order."""
        for item in reversed(items):
            if type(item) is tuple:
                channel, payload = item
                lane = self._lanes[channel.lane]
                lane.events += 1
                self._buffered_events += 1
            else:
                op: Op = item  # type: ignore[assignment]
                channel, payload = op.channel, op  # type: ignore[assignment]
                lane = self._lanes[channel.lane]
            lane.buf.appendleft(payload)
            lane.channels.appendleft(channel)

    def _take_buffered(self) -> list[Item]:
        """Empty the buffer; returns what it held, as items in order."""
        items = self._buffered_items()
        for lane in self._lanes:
            lane.buf.clear()
            lane.channels.clear()
            lane.events = 0
        self._buffered_events = 0
        return items

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
            ops_dropped=self._ops_dropped,
            sessions_not_ended=self._sessions_not_ended,
            spooled=self._spooled,
            filtered=self._filtered,
            sessions_sampled_out=self._sampled_out,
        )

    def count_sampled_out(self) -> None:
        """Count a session that sampling left out (loop thread)."""
        self._sampled_out += 1

    def count_not_sent(self, channel: SessionChannel, reason: str) -> None:
        """Count an event the hooks did not let through before it was queued (loop thread):
        filtered by before_send, or dropped for ``reason`` when a hook failed."""
        if reason == FILTERED:
            channel.filtered += 1
            self._filtered += 1
        else:  # the hooks logged it (once, with the traceback)
            channel.dropped += 1
            self._dropped[reason] += 1

    def not_sent_threadsafe(self, channel: SessionChannel, reason: str) -> None:
        """:meth:`count_not_sent` from any thread."""
        if threading.get_ident() == self._loop_thread:
            self.count_not_sent(channel, reason)
        else:
            self._call_on_loop(self.count_not_sent, channel, reason)

    # -- flush ------------------------------------------------------------------------------------
    async def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued before this call is resolved; False on timeout."""
        self._ensure_running()
        self._drain_thread_buf()
        if self._closed:  # close() resolved everything (delivered, dropped or spooled)
            return self._resolved >= self._queued
        waiter = self._flush_waiter()
        if self._flushed(waiter):
            return True
        if self._task is None or self._task.done():
            return False
        fut: asyncio.Future[None] = self.loop.create_future()
        waiter.fut = fut
        self._flush_targets.append(waiter)
        for lane in self._lanes:
            lane.batch_ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return False
        if self._closed:  # close() resolved everything (delivered, dropped or spooled)
            return self._resolved >= waiter.queued
        return self._flushed(waiter)

    def _flush_waiter(self) -> _FlushWaiter:
        """What a flush() beginning now waits for. Lanes resolve their items in order, but not
        in step with each other: so a flush waits for a count per lane, not for a total (which
        a busy lane's newer items could reach first). Spooled items join the lanes when they are
        read back: a flush that begins while the spool holds items counts the lanes then."""
        spooled = self._spool.records if self._spool is not None else 0
        lanes = None if spooled else [lane.accepted() for lane in self._lanes]
        return _FlushWaiter(self._queued, self._spool_read + spooled, lanes)

    def _flushed(self, waiter: _FlushWaiter) -> bool:
        if self._spool_read < waiter.spool_mark:
            return False
        if waiter.lanes is None:  # the spool has been read back up to the flush: count now
            waiter.lanes = [lane.accepted() for lane in self._lanes]
        return all(
            lane.resolved >= target for lane, target in zip(self._lanes, waiter.lanes, strict=True)
        )

    async def flush_session(self, channel: SessionChannel, timeout: float | None) -> bool:
        """Wait until the ended session of ``channel`` is resolved: its events and its final
        update_session acknowledged by the API or counted as dropped. Other sessions' items are
        not waited for. False on timeout (what is pending keeps being sent)."""
        self._ensure_running()
        self._drain_thread_buf()
        if channel.settled:
            return True
        if self._closed or self._task is None or self._task.done():
            return False
        done = self._session_waiters.get(channel)
        if done is None:
            done = self._session_waiters[channel] = self.loop.create_future()
        self._lanes[channel.lane].batch_ready.set()  # send now, not at the next flush interval
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except asyncio.TimeoutError:
            return False
        return channel.settled

    def _settle(self, channel: SessionChannel) -> None:
        """The session of ``channel`` is resolved: wake its flush_session() waiter, if any."""
        channel.settled = True
        done = self._session_waiters.pop(channel, None)
        if done is not None and not done.done():
            done.set_result(None)

    def _release_flush_waiters(self, everyone: bool = False) -> None:
        still = []
        for waiter in self._flush_targets:
            if everyone or self._closed or self._flushed(waiter):
                if waiter.fut is not None and not waiter.fut.done():
                    waiter.fut.set_result(None)
            else:
                still.append(waiter)
        self._flush_targets = still

    # -- the export task --------------------------------------------------------------------------
    async def _run(self) -> None:
        """The export task: one lane, or a child task per lane, owned here (cancelling the
        export task cancels them and waits for them; a lane that fails fails it)."""
        if len(self._lanes) == 1:
            await self._run_lane(self._lanes[0])
            return
        tasks = [
            self.loop.create_task(
                self._run_lane(lane), name=f"agentops_async-exporter-lane-{lane.index}"
            )
            for lane in self._lanes
        ]
        try:
            # A lane never returns: one that ends failed, or was cancelled on its own.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # Their batches are reclaimed once the export task has ended: wait for every lane,
            # even if this task is cancelled again meanwhile.
            while not all(task.done() for task in tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(tasks)
        failures = [t.exception() for t in tasks if not t.cancelled() and t.exception()]
        if failures:
            raise failures[0]  # type: ignore[misc]
        # Someone cancelled a lane's task alone: end as if the export task had been cancelled
        # (what the lanes held is kept, and the next call starts a new task).
        raise asyncio.CancelledError

    async def _run_lane(self, lane: _Lane) -> None:
        ahead: Prepared | None = None
        while True:
            if ahead is None:
                if not await self._wait_for_items(lane):
                    continue
                ahead = await self._take_and_prepare(lane)
            current, ahead = ahead, None
            # With a full batch (or a flush) waiting, take and prepare it while this one is on
            # the wire: the server's work and ours overlap. Sending stays one batch at a time
            # per lane, so each session's requests keep their order.
            preparing: asyncio.Task[Prepared] | None = None
            if lane.events >= self._batch_size or (self._flush_targets and lane.events):
                preparing = self.loop.create_task(self._take_and_prepare(lane))
            try:
                await self._ship(current)
                if preparing is not None:
                    ahead = await preparing
            except asyncio.CancelledError:
                if preparing is not None:
                    preparing.cancel()  # what it took stays in lane.batches, for close()
                    await asyncio.wait({preparing})
                raise
            except Exception:  # a bug here must not kill delivery for the rest of the process
                log.exception("agentops_async: exporter error; dropping the batch in flight")
                ahead = await self._prepared_or_none(preparing)
                keep = ahead.taken if ahead is not None else None
                self._drop_items(self._reclaim_batches(lane, keep), "internal exporter error")
                self._release_flush_waiters()
                continue
            lane.batches.remove(current.taken)
            self._resolved += current.taken.size
            lane.resolved += current.taken.size
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

    async def _wait_for_items(self, lane: _Lane) -> bool:
        """Wait until a batch of ``lane`` should be taken (full, flushed, or the interval
        passed)."""
        # Spooled items are newer than any buffered one: they are read back (into their
        # sessions' lanes) once every lane's buffer is empty, which also keeps memory at one
        # read's worth.
        if (
            not lane.buf
            and self._spool is not None
            and self._limit == 0
            and not any(other.buf for other in self._lanes)
        ):
            self._load_from_spool()
        if not lane.buf:
            lane.wake.clear()
            await lane.wake.wait()
            return False
        if lane.events < self._batch_size and not self._flush_targets and not self._session_waiters:
            lane.batch_ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(lane.batch_ready.wait(), self._flush_interval)
        return True

    async def _take_and_prepare(self, lane: _Lane) -> Prepared:
        taken = self._take_batch(lane)
        await asyncio.sleep(0)  # let the application run between taking and preparing
        return await self._prepare(taken)

    def _load_from_spool(self) -> None:
        """Move the oldest spooled items into the (empty) buffer; end spooling when drained."""
        assert self._spool is not None
        for record in self._spool.read(self._batch_size):
            self._spool_read += 1
            channel = self._channel_for(record.session_id)
            lane = self._lanes[channel.lane]
            if record.kind == EVENT:
                lane.buf.append(record.body)
                lane.events += 1
                self._buffered_events += 1
            else:
                op = decode_op(record)
                if op is None:  # unreadable (logged): resolved, as if sent
                    self._resolved += 1
                    continue
                kind, snapshot = op
                lane.buf.append(Op(kind, snapshot, record.final, channel=channel))
            lane.channels.append(channel)
            lane.wake.set()
        if self._spool.empty:
            self._limit = self._max_events  # back to memory; the room waiters may go on
            self._wake_room_waiters()

    def _channel_for(self, session_id: str) -> SessionChannel:
        """The channel of a session, or a new one for a session replayed from the spool."""
        channel = self._channels.get(session_id)
        if channel is None:
            # The target learns of it with its first step (the v2 target re-authorises).
            channel = SessionChannel(session_id, lane=self._lane_for_new_session())
            self._channels[session_id] = channel
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
            for lane in self._lanes
            for channel, payload in zip(lane.channels, lane.buf, strict=True)
        ]

    def _take_batch(self, lane: _Lane) -> Taken:
        """Take up to a batch of events (and the operations among them) out of the lane's
        buffer, grouped by session in queue order; it stays in ``lane.batches`` until
        finished."""
        buf, channels = lane.buf, lane.channels
        if len(buf) == lane.events:  # events only (the common case): bulk moves
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
                lane.events -= count
                return self._taken(lane, {owners[0]: payloads}, count)
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
        lane.events -= events
        return self._taken(lane, batch, len(payloads))

    def _taken(
        self, lane: _Lane, entries: dict[SessionChannel, list[Payload | Op]], count: int
    ) -> Taken:
        taken = Taken(entries, count)
        lane.batches.append(taken)
        self._wake_room_waiters()
        return taken

    async def _prepare(self, taken: Taken) -> Prepared:
        """Turn each session's part of a batch into the target's steps: operations, and runs of
        events with their wire fields filled in and encoded by the target (a slice at a time).

        Never raises for what an event holds: an event that cannot be prepared or encoded is
        dropped (counted) and the rest of its run is sent.
        """
        batch: ExportBatch = []
        channels: dict[str, SessionChannel] = {}
        for channel, entries in taken.entries.items():
            steps: list[SessionOp | EventRun] = []
            run: list[Payload] = []
            ended = False  # the session's final update is among the steps already
            for entry in entries:
                if type(entry) is Op:
                    if run:
                        await self._add_run(steps, channel, run, ended)
                        run = []
                    steps.append(entry)
                    ended = ended or entry.final
                else:
                    run.append(entry)  # type: ignore[arg-type]
            if run:
                await self._add_run(steps, channel, run, ended)
            if steps:
                batch.append(SessionPart(channel.session_id, channel.trace_id, tuple(steps)))
            channels[channel.session_id] = channel
        if self._unyielded:  # the request machinery comes next: a stretch of its own
            self._unyielded = 0
            await asyncio.sleep(0)
        return Prepared(taken, batch, channels)

    async def _add_run(
        self,
        steps: list[SessionOp | EventRun],
        channel: SessionChannel,
        run: list[Payload],
        ended: bool,
    ) -> None:
        if ended:
            self._account_dropped(channel, len(run), ENDED)
            return
        prepared = await self._prepare_run(channel, run)
        if prepared.events:  # (empty when every event of the run was dropped)
            steps.append(prepared)

    async def _prepare_run(self, channel: SessionChannel, run: list[Payload]) -> EventRun:
        """Wire fields and encoding of a run, a slice at a time (one pass: each slice is encoded
        right after its wire fields are filled in), yielding to the loop between slices."""
        events: Batch = []
        parts: list[bytes] = []
        session_id, trace_id = channel.session_id, channel.trace_id
        for start in range(0, len(run), _YIELD_EVERY):
            if self._unyielded >= _YIELD_EVERY:
                # Keep each stretch of loop time short (latency), counted across runs: a batch
                # of many small sessions (a service's requests) yields every few sessions, not
                # after each one (a loop iteration costs as much as preparing a small run).
                self._unyielded = 0
                await asyncio.sleep(0)
            part = run[start : start + _YIELD_EVERY]
            self._unyielded += len(part) + 1  # its events, and the run's own fixed cost
            if self.hooks is not None:
                part = self._apply_hooks(channel, part)
            try:
                wired = _wire_events(part, session_id, trace_id)
            except Exception:  # some event holds what the wire cannot take: one at a time
                wired = self._wire_each(channel, part)
            kept, body = self._encode_slice(channel, wired)
            if kept:
                events += kept
                parts.append(body)
        if not events:
            return EventRun((), b"")
        return EventRun(tuple(events), self.target.join_encoded(parts))

    def _apply_hooks(self, channel: SessionChannel, part: list[Payload]) -> list[Payload]:
        """The events of ``part`` that the hooks let through (changed as they said); the others
        are counted (filtered, or dropped when a hook failed) and resolved with their batch.
        Encoded events (bytes) went through the hooks where they were encoded."""
        hooks = self.hooks
        assert hooks is not None
        if hooks.before_send is None and hooks.redact_all(part):
            return part  # redaction only, and nothing failed: the common case, one loop
        kept: list[Payload] = []
        session_id = channel.session_id
        for payload in part:
            if type(payload) is bytes:
                kept.append(payload)
                continue
            event: Event = payload  # type: ignore[assignment]
            event.session_id = session_id  # for before_send to see
            result = hooks.apply(event)
            if type(result) is str:
                channel.in_flight -= 1
                self.count_not_sent(channel, result)
            else:
                kept.append(result)  # type: ignore[arg-type]
        return kept

    def _passes_hooks(self, item: Item) -> bool:
        """At close: False (counted) for a queued event the hooks do not let through."""
        if type(item) is not tuple or type(item[1]) is bytes:
            return True
        assert self.hooks is not None
        channel, event = item
        result = self.hooks.apply(event)  # type: ignore[arg-type]
        if type(result) is str:
            self.count_not_sent(channel, result)
            return False
        return True

    def _wire_each(self, channel: SessionChannel, payloads: list[Payload]) -> Batch:
        """:func:`_wire_events` one event at a time, dropping (counted) those that fail."""
        events: Batch = []
        for payload in payloads:
            try:
                events += _wire_events((payload,), channel.session_id, channel.trace_id)
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

    def _encode_slice(self, channel: SessionChannel, events: Batch) -> tuple[Batch, bytes]:
        """One slice's encoding in one call to the target; if it refuses some event, each event
        is made sendable on its own (:func:`_encode_event`) and kept as ``msgspec.Raw``, so
        that a retry or a split never encodes it again."""
        try:
            return events, self.target.encode_events(channel.session_id, channel.trace_id, events)
        except Exception:
            return self._encode_each(channel, events)

    def _encode_each(self, channel: SessionChannel, events: Batch) -> tuple[Batch, bytes]:
        kept: Batch = []
        for event in events:
            if type(event) is msgspec.Raw:
                kept.append(event)
                continue
            try:
                kept.append(msgspec.Raw(_encode_event(event)))
            except Exception as exc:
                self._drop_unsendable(channel, event, exc)
        if not kept:
            return kept, b""
        try:
            return kept, self.target.encode_events(channel.session_id, channel.trace_id, kept)
        except Exception as exc:  # the target cannot encode even these: drop them, counted
            for event in kept:
                self._drop_unsendable(channel, event, exc)
            return [], b""

    async def _ship(self, prepared: Prepared) -> None:
        """Hand the batch to the target; account for what it reports."""
        batch = prepared.batch
        for part in batch:  # the sessions that ended since the batch was prepared
            channel = prepared.channels[part.session_id]
            if channel.closed:
                for step in part.steps:
                    if type(step) is EventRun:
                        self._account_dropped(channel, len(step.events), ENDED)
                part.steps = tuple(step for step in part.steps if type(step) is not EventRun)
        if batch:
            await self.target.send(batch, _Report(self, prepared.channels))

    def _op_done(self, op: SessionOp) -> None:
        """``op`` was sent or its failure counted: never sent again or counted twice."""
        assert isinstance(op, Op)
        op.resolved = True
        if op.final:
            channel = op.channel
            channel.closed = True
            self._channels.pop(channel.session_id, None)
            self._settle(channel)


class _Report:
    """What a target reports about one batch, applied to the exporter's accounting."""

    __slots__ = ("_channels", "_exporter")

    def __init__(self, exporter: Exporter, channels: dict[str, SessionChannel]) -> None:
        self._exporter = exporter
        self._channels = channels

    def delivered(self, session_id: str, count: int) -> None:
        channel = self._channels[session_id]
        channel.delivered += count
        channel.in_flight -= count
        self._exporter._delivered += count

    def dropped(self, session_id: str, count: int, reason: str, detail: str | None = None) -> None:
        self._exporter._account_dropped(self._channels[session_id], count, reason, detail)

    def op_sent(
        self,
        op: SessionOp,
        *,
        session_url: str | None = None,
        token_cost: Decimal | None = None,
    ) -> None:
        assert isinstance(op, Op)
        if session_url is not None:
            op.channel.session_url = session_url
        if token_cost is not None:
            op.channel.token_cost = token_cost
        self._exporter._op_done(op)

    def op_failed(self, op: SessionOp, reason: str, detail: str | None = None) -> None:
        assert isinstance(op, Op)
        exporter = self._exporter
        # An operation of a session that could not be created: its loss is counted already.
        if op.kind == SESSION_CREATED or op.channel.failure is None:
            exporter._drop_op(op)
            exporter._warn_once(f"op:{reason}", detail or f"{reason} (session {op.session_id})")
        exporter._op_done(op)

    def session_failed(self, session_id: str, reason: str) -> None:
        self._channels[session_id].failure = reason


def _queue_full_hint(block: bool, timeout: float) -> str:
    """What the queue-full warning says about why, and what to do."""
    waited = (
        f"waited backpressure_timeout={timeout:g}s for room"
        if block
        else "record() does not wait (backpressure='drop')"
    )
    fixes = "raise max_queue_size, or set spool_dir to keep events on disk during outages"
    if not block:
        fixes += ", or backpressure='block' to wait for room (never in a request path)"
    return f"{waited}; the API is unreachable or slower than recording: {fixes}"


def _encoded(channel: SessionChannel, payload: Payload) -> bytes:
    """An event of ``channel`` as JSON bytes (encoded now if it was not yet)."""
    if type(payload) is bytes:
        return payload
    assert isinstance(payload, Event)
    _finalize(payload, channel.session_id, channel.trace_id)
    return _encode_event(payload)


def _event_record(channel: SessionChannel, payload: Payload) -> SpoolRecord:
    return SpoolRecord(EVENT, channel.session_id, _encoded(channel, payload), False, FORMAT_VERSION)


def _to_record(item: Item) -> SpoolRecord:
    if type(item) is tuple:
        return SpoolRecord(
            EVENT, item[0].session_id, _encoded(item[0], item[1]), version=FORMAT_VERSION
        )
    op: Op = item  # type: ignore[assignment]
    return encode_op(op.kind, op.snapshot, op.final)


def _loop_is_ending(loop: asyncio.AbstractEventLoop, cancelled: asyncio.Task[None]) -> bool:
    """True when every other task of ``loop`` is done or being cancelled too: the loop is
    shutting down (asyncio.run() cancels all remaining tasks before it closes the loop)."""
    others = [task for task in asyncio.all_tasks(loop) if task is not cancelled]
    # Python 3.10 cannot tell a task being cancelled: assume the loop is ending (the safe side:
    # a new task is then started on the client's next loop, or at exit, not on this one).
    return all(task.done() or getattr(task, "cancelling", lambda: 1)() for task in others)


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

    def refuse(self, channel: SessionChannel) -> None:
        return None

    async def flush(self, timeout: float | None) -> bool:
        return True

    async def flush_session(self, channel: SessionChannel, timeout: float | None) -> bool:
        return True

    async def close(self, timeout: float) -> bool:
        return True

    hooks = None

    def count_sampled_out(self) -> None:
        return None

    def count_not_sent(self, channel: SessionChannel, reason: str) -> None:
        return None

    def not_sent_threadsafe(self, channel: SessionChannel, reason: str) -> None:
        return None

    def stats(self) -> ExportStats:
        return ExportStats(queued=0, delivered=0, dropped=0, dropped_by_reason={}, pending=0)
