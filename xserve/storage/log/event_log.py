"""A durable, append-only log of events in the data directory.

One mechanism for every write path: Thunder's post events, and the user
store's and post catalog's events (each shard its own log directory). The
record type is a constructor argument (a Struct or a union of tagged Structs).

Layout: ``<directory>/<base_offset:020d>.seg`` segment files plus a ``LOCK``
file held (``flock``) by the one writer. Each record is framed as::

    u32 length | u32 crc32 | i64 offset | i64 appended_at_ms | payload (msgpack of one event)

little-endian; ``length`` counts the payload bytes, its top bit set means "more
records of this batch follow", and the CRC covers offset, time, that bit and the
payload. Offsets are consecutive integers from 0, so a reader can resume from
any offset.

Durability contract: :meth:`EventLog.append` returns only after the batch is
written and, when ``fsync`` is on, ``fsync``-ed (plus the directory when a new
segment was created), so an acknowledged event survives a crash or power
loss. A batch is all or nothing: a crash mid-write leaves a torn last batch
(a short frame, a CRC mismatch, or whole records of a batch whose last record
is missing); the writer detects it on open and truncates the segment back to
the end of the last whole batch, and readers (other processes, or
:class:`LogCursor`) treat it as the end of the log. A bad record *before* the
tail is corruption, not a crash, and raises :class:`EventLogCorrupt` naming the
file and byte position.

The writer lock is an ``flock``: the kernel releases it when its process dies,
even by ``kill -9``, so a restarted writer never finds a stale lock; a writer
that starts while its predecessor is still being torn down waits up to
``lock_wait_s`` for it, and two live writers are refused (:class:`EventLogLocked`).

Retention: :meth:`drop_before` deletes whole segments whose every record was
appended before a cutoff (and, optionally, lies below a consumer's offset); the
active segment is never dropped, so offsets keep counting on after it.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from xserve.schema import PostEvent

__all__ = ["EventLog", "EventLogCorrupt", "EventLogLocked", "LogCursor", "LogEntry"]

_HEADER = struct.Struct("<IIqq")
_CRC_PART = struct.Struct("<qq")
_MORE = 0x8000_0000  # length-field bit: another record of the same batch follows
_SUFFIX = ".seg"
_MAX_RECORD = 16 * 1024 * 1024  # a length beyond this is a torn or corrupt header, not a record

LogEntry = tuple[int, int, Any]  # (offset, appended_at_ms, event)


class EventLogCorrupt(RuntimeError):
    """A record in the middle of the log failed its length or CRC check."""


class EventLogLocked(RuntimeError):
    """Another process holds the log's writer lock."""


def _segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}{_SUFFIX}"


def _segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob(f"*{_SUFFIX}"):
        try:
            out.append((int(p.stem), p))
        except ValueError:
            continue
    return sorted(out)


def _crc(payload: bytes | memoryview, offset: int, at: int, more: bool) -> int:
    head = _CRC_PART.pack(offset, at) + (b"\x01" if more else b"")  # a batch's last record: the original framing
    return zlib.crc32(payload, zlib.crc32(head))


def _scan(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """Whole, CRC-valid batches of one segment, record by record: (start, end, offset, appended_at_ms, payload_start).

    Yields a batch's records only once its last record is whole too; stops at
    the first short or invalid frame or an unfinished batch. The caller
    compares the last ``end`` with the data length to see whether a tail was torn.
    """
    pos, n = 0, len(data)
    batch: list[tuple[int, int, int, int, int]] = []
    while pos + _HEADER.size <= n:
        field, crc, offset, at = _HEADER.unpack_from(data, pos)
        more, length = bool(field & _MORE), field & ~_MORE
        start = pos + _HEADER.size
        end = start + length
        if length > _MAX_RECORD or end > n:
            return
        if _crc(data[start:end], offset, at, more) != crc:
            return
        batch.append((pos, end, offset, at, start))
        if not more:
            yield from batch
            batch = []
        pos = end


class EventLog:
    """Append-only segmented log of ``event_type`` records (default :data:`~xserve.schema.PostEvent`).

    ``writer=True`` takes the directory's lock (one writer per log), repairs a
    torn tail and allows :meth:`append`/:meth:`drop_before`; readers may be
    many and may run in other processes while the writer appends.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        writer: bool = False,
        fsync: bool = True,
        segment_bytes: int = 64 * 1024 * 1024,
        event_type: Any = PostEvent,
        lock_wait_s: float = 0.0,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.writer = writer
        self.truncated_bytes = 0  # torn-tail bytes removed when this writer opened the log
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(event_type)
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._next_offset = 0
        self._active_base = 0
        self._active_size = 0
        if writer:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + lock_wait_s
            while True:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:  # a predecessor being torn down (actor restart)
                        time.sleep(0.05)
                        continue
                    os.close(self._lock_fd)
                    self._lock_fd = None
                    raise EventLogLocked(
                        f"event log {self.directory} is already open for writing by another process"
                        f" (waited {lock_wait_s:g} s)"
                    ) from None
            self._recover()

    def __repr__(self) -> str:
        return f"EventLog({str(self.directory)!r}, writer={self.writer}, next_offset={self.next_offset})"

    # ------------------------------------------------------------------ writer

    def _recover(self) -> None:
        segs = _segments(self.directory)
        if not segs:
            self._open_segment(0)
            return
        base, path = segs[-1]
        data = path.read_bytes()
        end, next_offset = 0, base
        for _, frame_end, offset, _, _ in _scan(data):
            end, next_offset = frame_end, offset + 1
        if end < len(data):
            self.truncated_bytes = len(data) - end
            with open(path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        self._next_offset = next_offset
        self._active_base = base
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._active_size = end

    def _open_segment(self, base: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(_segment_path(self.directory, base), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._active_base = base
        self._active_size = 0
        if self.fsync:  # make the new file's directory entry durable too
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def append(self, events: Sequence[Any], appended_at_ms: int, sync: bool | None = None) -> tuple[int, int]:
        """Write ``events`` as consecutive records, one all-or-nothing batch; returns ``(first_offset, next_offset)``.

        Returns only once the records are on disk (``fsync`` when configured;
        ``sync=False`` skips it for one batch of soft signals, ``sync=True``
        forces it).
        """
        if not self.writer or self._fd is None:
            raise RuntimeError("event log opened read-only (or closed): append needs writer=True")
        first = self._next_offset
        if not events:
            return first, first
        parts = []
        offset = first
        last = first + len(events) - 1
        for event in events:
            payload = self._encoder.encode(event)
            if len(payload) > _MAX_RECORD:
                raise ValueError(f"event at index {offset - first} encodes to {len(payload)} bytes (limit {_MAX_RECORD})")
            more = offset != last
            parts.append(_HEADER.pack(len(payload) | (_MORE if more else 0), _crc(payload, offset, appended_at_ms, more),
                                      offset, appended_at_ms))
            parts.append(payload)
            offset += 1
        blob = b"".join(parts)
        if self._active_size and self._active_size + len(blob) > self.segment_bytes:
            self._open_segment(first)
        view = memoryview(blob)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync if sync is None else sync:
            os.fsync(self._fd)
        self._active_size += len(blob)
        self._next_offset = offset
        return first, offset

    def drop_before(self, cutoff_ms: int, until_offset: int | None = None) -> int:
        """Delete segments whose records were all appended before ``cutoff_ms`` (and, given ``until_offset``, all
        have offsets below it: a consumer's watermark); returns how many."""
        if not self.writer:
            raise RuntimeError("event log opened read-only: drop_before needs writer=True")
        dropped = self._droppable(cutoff_ms, until_offset)
        for path in dropped:
            path.unlink()
        return len(dropped)

    def retention_boundary(self, cutoff_ms: int, until_offset: int | None = None) -> int:
        """The first offset :meth:`drop_before` with these arguments would keep: records below it go (a caller
        that must keep what they hold, such as a compaction folding them into a table, reads them first)."""
        segs = _segments(self.directory)
        dropped = len(self._droppable(cutoff_ms, until_offset))
        return segs[dropped][0] if dropped < len(segs) else self._next_offset

    def _droppable(self, cutoff_ms: int, until_offset: int | None) -> list[Path]:
        segs = _segments(self.directory)
        out = []
        for (_, path), (next_base, next_path) in zip(segs, segs[1:]):
            if next_base > self._active_base or (until_offset is not None and next_base > until_offset):
                break
            first_at = self._first_appended_at(next_path)  # the next segment's first record: after this one's last
            if first_at is None or first_at >= cutoff_ms:
                break
            out.append(path)
        return out

    @staticmethod
    def _first_appended_at(path: Path) -> int | None:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return None
        return _HEADER.unpack(head)[3]

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ readers

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets (writer), or the end as last read (reader)."""
        return self._next_offset

    def replay(self, apply: Callable[[Any], object]) -> int:
        """Call ``apply`` on every record's event, oldest first; returns how many (a restarted shard's rebuild)."""
        count = 0
        for _, _, event in self.read():
            apply(event)
            count += 1
        return count

    def read(
        self, from_offset: int = 0, until_offset: int | None = None, since_ms: int | None = None
    ) -> Iterator[LogEntry]:
        """Records with ``from_offset <= offset < until_offset`` (``None`` = to the end), in order.

        ``since_ms`` also skips records appended before that time (whole
        segments are skipped without reading them when the next one starts
        earlier). Segments already dropped are skipped silently: a reader that
        starts before the oldest kept record gets what is left. Decoding
        failures are corruption (the writer only logs validated events).
        """
        segs = _segments(self.directory)
        # start at the last segment that can hold from_offset / records since since_ms
        start = 0
        for i, (base, _) in enumerate(segs):
            if base <= from_offset:
                start = i
        if since_ms is not None:
            while start + 1 < len(segs):
                first_at = self._first_appended_at(segs[start + 1][1])
                if first_at is None or first_at > since_ms:
                    break
                start += 1
        decode = self._decoder.decode
        for i, (base, path) in enumerate(segs[start:], start):
            if until_offset is not None and base >= until_offset:
                return
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # dropped by the writer meanwhile
                continue
            end = 0
            for _, frame_end, offset, at, payload_start in _scan(data):
                end = frame_end
                if offset < from_offset:
                    continue
                if until_offset is not None and offset >= until_offset:
                    return
                if since_ms is not None and at < since_ms:
                    continue
                try:
                    event = decode(data[payload_start:frame_end])
                except msgspec.DecodeError as exc:
                    raise EventLogCorrupt(f"{path}: record at offset {offset} does not decode: {exc}") from None
                if not self.writer:
                    self._next_offset = offset + 1
                yield offset, at, event
            last = i == len(segs) - 1
            if end < len(data) and not last:
                raise EventLogCorrupt(f"{path}: bad record at byte {end} of {len(data)} (not the log's tail)")


class LogCursor:
    """Reads one log incrementally from ``offset``: each :meth:`poll` returns the whole batches appended since.

    Remembers the segment and byte position it stopped at, so a poll costs the
    new bytes only (``EventLog.read`` re-reads the active segment). A batch
    still being written is left for a later poll. Segments dropped by retention
    are skipped (the cursor moves on to the oldest kept record).
    """

    def __init__(self, directory: str | os.PathLike[str], event_type: Any = PostEvent, offset: int = 0) -> None:
        self.directory = Path(directory)
        self.offset = offset  # the next offset to return
        self._decoder = msgspec.msgpack.Decoder(event_type)
        self._segment: tuple[int, Path] | None = None
        self._pos = 0  # byte position in the segment of the first record not yet returned (or of an earlier one)

    def __repr__(self) -> str:
        return f"LogCursor({str(self.directory)!r}, offset={self.offset})"

    def seek(self, offset: int) -> None:
        self.offset, self._segment, self._pos = offset, None, 0

    def poll(self) -> list[LogEntry]:
        """The whole batches after :attr:`offset`, oldest first; advances :attr:`offset` past them."""
        out: list[LogEntry] = []
        retried = False
        while True:
            if self._segment is None:
                segs = _segments(self.directory)
                if not segs:
                    return out
                self._segment = next((s for s in reversed(segs) if s[0] <= self.offset), segs[0])
                self._pos = 0
            base, path = self._segment
            try:
                with open(path, "rb") as f:
                    f.seek(self._pos)
                    data = f.read()
            except FileNotFoundError:  # dropped by retention: restart from the oldest kept segment
                self._segment = None
                continue
            consumed = 0
            for _, end, offset, at, start in _scan(data):  # whole batches only
                consumed = end
                if offset < self.offset:
                    continue
                try:
                    out.append((offset, at, self._decoder.decode(data[start:end])))
                except msgspec.DecodeError as exc:
                    raise EventLogCorrupt(f"{path}: record at offset {offset} does not decode: {exc}") from None
                self.offset = offset + 1
            self._pos += consumed
            later = [s for s in _segments(self.directory) if s[0] > base]
            if not later:
                return out  # the active segment; a batch still being written is left for a later poll
            if self.offset < later[0][0]:
                if consumed or not retried:  # the writer finished this segment after our read: read on
                    retried = True
                    continue
                raise EventLogCorrupt(f"{path}: bad record at byte {self._pos} (not the log's tail)")
            self._segment, self._pos, retried = later[0], 0, False
