"""An optional, bounded disk spool for outages longer than the in-memory buffer.

Off by default (``spool_dir=None``). When the export buffer is full, new items (events and session
operations, in order) are appended to segment files in ``spool_dir`` instead of being dropped;
once the API answers again they are read back, oldest first, and delivered. On ``close()`` what
could not be delivered in time is written back in front of the spool, so that the next process
using the same directory replays it. Beyond ``spool_max_bytes`` events are dropped and counted,
as without a spool.

File format: segments named ``<seq>.spool``; each record is a 4-byte big-endian length followed by
a msgpack array ``[kind, session_id, body, final, version]``. The spool is target-neutral (a spool
written while sending to one protocol is replayed by another): an event's body is the SDK's own
JSON encoding of the event; a session operation's body is the msgpack encoding of its
:class:`~._targets.SessionSnapshot` or :class:`~._targets.AgentSnapshot`. Version 1 records
(no ``version`` element, written before the target seam) hold v2 request bodies for operations:
they are converted to snapshots when read back, or skipped with a warning when unreadable. One
process at a time owns a directory (an advisory ``flock`` on ``lock``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from pathlib import Path
from typing import IO

import msgspec

from ..errors import ConfigError
from ._targets import (
    AGENT_ADDED,
    OP_KINDS,
    SESSION_CREATED,
    SESSION_UPDATED,
    AgentSnapshot,
    SessionSnapshot,
)

log = logging.getLogger("agentops_async")

EVENT = "e"
FORMAT_VERSION = 2  # 1: operations held v2 request bodies (before the export-target seam)
_HEADER = struct.Struct(">I")
_OFFSET = 2**40  # segment numbers go below zero when records are put back in front


class SpoolRecord(msgspec.Struct, array_like=True, frozen=True):
    """One spooled item: an encoded event (``kind="e"``) or a session operation."""

    kind: str
    session_id: str
    body: bytes
    final: bool = False
    version: int = 1  # absent in records written before versions: 1


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(SpoolRecord).decode


class Spool:
    """Append-only segment files, read back oldest first, bounded in bytes."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self.records = 0  # records written and not yet read back
        self.events = 0  # of which events (the rest are session operations)
        self._segments: list[int] = []  # sequence numbers on disk, oldest first
        self._writer: IO[bytes] | None = None
        self._writer_seq: int | None = None
        self._reader: IO[bytes] | None = None
        self._reader_seq: int | None = None
        self._lock: IO[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> int:
        """Take the directory, find what an earlier process left; returns its record count."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.directory / "lock", "wb")  # noqa: SIM115 - held until close
        except OSError as exc:
            raise ConfigError(f"spool_dir={str(self.directory)!r} is not usable: {exc}") from None
        try:
            import fcntl

            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock, documented
            pass
        except OSError:
            self._lock.close()
            self._lock = None
            raise ConfigError(
                f"spool_dir={str(self.directory)!r} is in use by another process: give each "
                "process its own spool directory"
            ) from None
        for path in self.directory.glob("*.spool"):
            try:
                self._segments.append(int(path.stem) - _OFFSET)
            except ValueError:
                continue
        self._segments.sort()
        for seq in self._segments:
            path = self._path(seq)
            self.bytes_used += path.stat().st_size
            for frame in self._frames(path):
                self.records += 1
                self.events += _is_event(frame)
        if self.records:
            log.info(
                "agentops_async: replaying %d spooled items from %s", self.records, self.directory
            )
        return self.records

    def close(self) -> None:
        """Flush and close the files; delete the directory's segments only when all were read."""
        for handle in (self._writer, self._reader):
            if handle is not None:
                handle.close()
        self._writer = self._reader = None
        self._writer_seq = self._reader_seq = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def empty(self) -> bool:
        """True when nothing is waiting on disk."""
        return self.records == 0

    # -- writing --------------------------------------------------------------------------------
    def append(self, record: SpoolRecord, *, force: bool = False) -> bool:
        """Add ``record`` at the end; False (nothing written) when it would pass the cap.

        ``force`` writes past the cap: for session operations, which are small and must keep
        their place behind the session's spooled events.
        """
        frame = _frame(record)
        if self.bytes_used + len(frame) > self.max_bytes and not force:
            return False
        if self._writer is None:
            seq = (self._segments[-1] + 1) if self._segments else 0
            self._segments.append(seq)
            self._writer_seq = seq
            self._writer = open(self._path(seq), "ab")  # noqa: SIM115 - kept open while spilling
        self._writer.write(frame)
        self.bytes_used += len(frame)
        self.records += 1
        self.events += record.kind == EVENT
        return True

    def prepend(self, records: list[SpoolRecord]) -> int:
        """Put ``records`` in front of everything spooled (they are older); returns how many fit."""
        frames = []
        size = events = 0
        for record in records:
            frame = _frame(record)
            if self.bytes_used + size + len(frame) > self.max_bytes:
                break
            frames.append(frame)
            size += len(frame)
            events += record.kind == EVENT
        if not frames:
            return 0
        seq = (self._segments[0] - 1) if self._segments else 0
        with open(self._path(seq), "wb") as handle:
            handle.write(b"".join(frames))
            handle.flush()
            os.fsync(handle.fileno())
        self._segments.insert(0, seq)
        self.bytes_used += size
        self.records += len(frames)
        self.events += events
        return len(frames)

    def sync(self) -> None:
        """Push written records to the operating system (and the disk)."""
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())

    # -- reading --------------------------------------------------------------------------------
    def read(self, max_events: int) -> list[SpoolRecord]:
        """Take up to ``max_events`` events (and the operations between them), oldest first."""
        out: list[SpoolRecord] = []
        events = 0
        while events < max_events and self._segments:
            if self._reader is None:
                seq = self._segments[0]
                if seq == self._writer_seq and self._writer is not None:
                    self._writer.flush()
                self._reader_seq = seq
                self._reader = open(self._path(seq), "rb")  # noqa: SIM115 - kept while reading
            record = self._next(self._reader)
            if record is None:
                self._finish_segment()
                continue
            out.append(record)
            self.records -= 1
            if record.kind == EVENT:
                events += 1
                self.events -= 1
        return out

    def _finish_segment(self) -> None:
        assert self._reader is not None and self._reader_seq is not None
        seq = self._reader_seq
        self._reader.close()
        self._reader = None
        self._reader_seq = None
        if seq == self._writer_seq:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            self._writer_seq = None
        path = self._path(seq)
        with contextlib.suppress(OSError):
            self.bytes_used -= path.stat().st_size
            path.unlink()
        self._segments.remove(seq)
        if not self._segments:
            self.bytes_used = 0

    # -- helpers --------------------------------------------------------------------------------
    def _path(self, seq: int) -> Path:
        # Sortable names for negative (prepended) and positive sequence numbers.
        return self.directory / f"{seq + _OFFSET:015d}.spool"

    def _frames(self, path: Path) -> list[bytes]:
        frames = []
        with open(path, "rb") as handle:
            while (record := self._next_raw(handle)) is not None:
                frames.append(record)
        return frames

    @staticmethod
    def _next_raw(handle: IO[bytes]) -> bytes | None:
        header = handle.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack(header)
        payload = handle.read(length)
        if len(payload) < length:  # a torn write at a crash: ignore the tail
            return None
        return payload

    def _next(self, handle: IO[bytes]) -> SpoolRecord | None:
        while (payload := self._next_raw(handle)) is not None:
            try:
                return _decode(payload)
            except msgspec.DecodeError:
                log.warning("agentops_async: skipping a corrupt spool record")
        return None


_encode_snapshot = msgspec.msgpack.Encoder().encode
_decode_session = msgspec.msgpack.Decoder(SessionSnapshot).decode
_decode_agent = msgspec.msgpack.Decoder(AgentSnapshot).decode


def encode_op(kind: str, snapshot: SessionSnapshot | AgentSnapshot, final: bool) -> SpoolRecord:
    """The spool record of a session operation."""
    body = _encode_snapshot(snapshot)
    return SpoolRecord(kind, snapshot.session_id, body, final, FORMAT_VERSION)


def decode_op(record: SpoolRecord) -> tuple[str, SessionSnapshot | AgentSnapshot] | None:
    """The kind and snapshot of a spooled operation; None (logged) when it cannot be read."""
    try:
        if record.version >= 2:
            if record.kind not in OP_KINDS:
                raise ValueError(f"unknown operation kind {record.kind!r}")
            if record.kind == AGENT_ADDED:
                return record.kind, _decode_agent(record.body)
            return record.kind, _decode_session(record.body)
        return _from_v2_body(record)
    except (msgspec.DecodeError, ValueError, TypeError, KeyError) as exc:
        log.warning(
            "agentops_async: skipping a spooled session operation that cannot be read "
            "(%s, session %s, format version %d): %s",
            record.kind,
            record.session_id,
            record.version,
            exc,
        )
        return None


_V1_KINDS = {"create_session": SESSION_CREATED, "update_session": SESSION_UPDATED}
_V1_STATES = {"Success": "SUCCEEDED", "Fail": "FAILED", "Indeterminate": "INDETERMINATE"}


class _V1Session(msgspec.Struct):
    session_id: str
    init_timestamp: str
    end_state: str = "Indeterminate"
    tags: list[str] = []
    end_timestamp: str | None = None
    end_state_reason: str | None = None
    video: str | None = None
    host_env: dict[str, object] | None = None
    trace_id: str | None = None
    event_counts: dict[str, int] | None = None


class _V1Envelope(msgspec.Struct):
    session: _V1Session


class _V1Agent(msgspec.Struct):
    id: str
    name: str


_decode_v1_session = msgspec.json.Decoder(_V1Envelope).decode
_decode_v1_agent = msgspec.json.Decoder(_V1Agent).decode


def _from_v2_body(record: SpoolRecord) -> tuple[str, SessionSnapshot | AgentSnapshot]:
    """A version 1 record (a v2 request body) as a snapshot."""
    if record.kind == "create_agent":
        agent = _decode_v1_agent(record.body)
        return AGENT_ADDED, AgentSnapshot(
            session_id=record.session_id, agent_id=agent.id, name=agent.name
        )
    kind = _V1_KINDS.get(record.kind)
    if kind is None:
        raise ValueError(f"unknown operation kind {record.kind!r}")
    body = _decode_v1_session(record.body).session
    state = _V1_STATES.get(body.end_state, "INDETERMINATE") if record.final else "RUNNING"
    return kind, SessionSnapshot(
        session_id=body.session_id,
        trace_id=body.trace_id or "",
        span_id=body.session_id.replace("-", "")[:16],  # (v1 kept no root span id)
        init_timestamp=body.init_timestamp,
        end_timestamp=body.end_timestamp,
        state=state,
        end_state_reason=body.end_state_reason,
        tags=tuple(body.tags),
        host_env=body.host_env,
        video=body.video,
        event_counts=body.event_counts,
    )


def _is_event(payload: bytes) -> bool:
    try:
        return _decode(payload).kind == EVENT
    except msgspec.DecodeError:
        return False


def _frame(record: SpoolRecord) -> bytes:
    payload = _encode(record)
    return _HEADER.pack(len(payload)) + payload
