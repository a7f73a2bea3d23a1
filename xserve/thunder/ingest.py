"""The one ingest API for post events: validate, log durably, acknowledge, apply.

Every writer (the HTTP write path, the Kafka consumer, scripts, tests) calls
:meth:`Ingestor.ingest`. Its contract:

1. each item is validated at the edge (msgspec decode with the schema's
   bounds, then the time window); a bad item is rejected with a reason
   (``invalid: ...``, ``future: ...``, ``stale: ...``), counted, and never
   reaches the log or a shard, and never fails the rest of the batch. An
   event stamped in the future by at most ``max_clock_skew_ms`` (the writer's
   clock ahead of ours) is not bad: its time is clamped to now, and counted
   (``clamped_future``), so a post the API acknowledged is never lost to skew;
2. the accepted events are appended to the event log, ``fsync``-ed when
   configured, *before* anything else happens: the returned
   :class:`~xserve.schema.IngestResult` is the acknowledgement, and an
   acknowledged event survives any crash;
3. they are then applied to every sink (shard replicas) with their log
   offsets; a sink that fails is reported in ``lagging_shards`` and catches
   up from the log (offset gap or restart), so the write still succeeds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import msgspec

from xserve.config import StorageConfig, ThunderConfig
from xserve.schema import (
    IngestRejection,
    IngestResult,
    PostCreated,
    PostDeleted,
    PostEvent,
    QuotedPostDeleted,
)
from xserve.storage.layout import DataDirLayout
from xserve.storage.log.event_log import EventLog

__all__ = ["AppendLog", "EventSink", "Ingestor", "ReadLog", "for_shards", "open_event_log"]


def open_event_log(storage: StorageConfig, config: ThunderConfig, *, writer: bool, lock_wait_s: float = 0.0) -> EventLog:
    """Thunder's post-event log in the data directory: one writer (the ingest), any number of readers."""
    return EventLog(
        DataDirLayout(storage.data_dir).thunder_events, writer=writer, fsync=storage.fsync,
        segment_bytes=config.log_segment_bytes, lock_wait_s=lock_wait_s,
    )


class ReadLog(Protocol):
    """Read side of the event log (``xserve.storage.log.event_log.EventLog`` satisfies it)."""

    def read(self, from_offset: int = 0, until_offset: int | None = None) -> Iterator[tuple[int, int, PostEvent]]: ...


class AppendLog(Protocol):
    """Write side of the event log: durable on return."""

    writer: bool

    @property
    def next_offset(self) -> int: ...

    def append(self, events: Sequence[PostEvent], appended_at_ms: int) -> tuple[int, int]: ...


class EventSink(Protocol):
    """Something that applies logged events (a shard replica, or its actor handle adapter)."""

    name: str

    async def apply(self, events: list[PostEvent], first_offset: int, next_offset: int, now_ms: int) -> None: ...


def _event_time(event: PostEvent) -> tuple[str, int]:
    match event:
        case PostCreated(post=post):
            return "created_at_ms", post.created_at_ms
        case PostDeleted(deleted_at_ms=t) | QuotedPostDeleted(deleted_at_ms=t):
            return "deleted_at_ms", t
    raise TypeError(type(event).__name__)  # unreachable: decode only yields PostEvent


def _clamped(event: PostEvent, now_ms: int) -> PostEvent:
    """``event`` with its time (creation or deletion) set to ``now_ms``."""
    if isinstance(event, PostCreated):
        return PostCreated(msgspec.structs.replace(event.post, created_at_ms=now_ms))
    return msgspec.structs.replace(event, deleted_at_ms=now_ms)


def for_shards(event: PostEvent) -> PostEvent:
    """The event as shards need it: a create without its text (Thunder never reads it)."""
    if isinstance(event, PostCreated) and event.post.text:
        return PostCreated(msgspec.structs.replace(event.post, text=""))
    return event


class Ingestor:
    """Validates, logs and fans out post events (see the module docstring). One per event log."""

    def __init__(self, config: ThunderConfig, log: AppendLog, sinks: Sequence[EventSink] = ()) -> None:
        if not log.writer:
            raise ValueError("the ingestor needs the event log opened with writer=True")
        self.config = config
        self.log = log
        self.sinks = list(sinks)
        self.counts: Counter[str] = Counter()  # accepted / clamped_future / rejected_<kind> / sink_errors
        self._json = msgspec.json.Decoder(PostEvent)
        self._encoder = msgspec.json.Encoder()

    def __repr__(self) -> str:
        return f"Ingestor(log={self.log!r}, sinks={[s.name for s in self.sinks]})"

    def _decode(self, item: Any) -> PostEvent:
        if isinstance(item, (bytes, bytearray, memoryview, str)):
            return self._json.decode(item)
        if isinstance(item, (PostCreated, PostDeleted, QuotedPostDeleted)):
            # Structs built in Python skip the Meta bounds: re-check them on the wire form.
            return self._json.decode(self._encoder.encode(item))
        if isinstance(item, dict):
            return msgspec.convert(item, PostEvent)
        raise msgspec.ValidationError(
            f"expected a post event (JSON bytes or str, dict, or PostEvent), got {type(item).__name__}"
        )

    def validate(self, items: Sequence[Any], now_ms: int) -> tuple[list[PostEvent], list[IngestRejection]]:
        """Split ``items`` into accepted events (future ones within the skew clamped to now) and rejections
        (with reasons); counts both, and the clamped."""
        if len(items) > self.config.max_ingest_batch:
            raise ValueError(
                f"ingest batch of {len(items)} events exceeds max_ingest_batch={self.config.max_ingest_batch}; split it"
            )
        cutoff = now_ms - self.config.retention_ms
        skew = self.config.max_clock_skew_ms
        accepted: list[PostEvent] = []
        rejected: list[IngestRejection] = []
        clamped = 0
        for i, item in enumerate(items):
            try:
                event = self._decode(item)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                rejected.append(IngestRejection(i, f"invalid: {exc}"))
                continue
            field, t = _event_time(event)
            if t > now_ms + skew:
                rejected.append(
                    IngestRejection(i, f"future: {field} {t} is more than max_clock_skew_ms={skew} after now ({now_ms})")
                )
            elif t < cutoff:
                rejected.append(
                    IngestRejection(i, f"stale: {field} {t} is older than retention ({self.config.retention_ms} ms)")
                )
            elif t > now_ms:
                accepted.append(_clamped(event, now_ms))
                clamped += 1
            else:
                accepted.append(event)
        self.counts["accepted"] += len(accepted)
        if clamped:
            self.counts["clamped_future"] += clamped
        for r in rejected:
            self.counts["rejected_" + r.reason.split(":", 1)[0]] += 1
        return accepted, rejected

    async def ingest(self, items: Sequence[Any], now_ms: int) -> IngestResult:
        """Validate, append durably, then apply to every sink; the result is the acknowledgement."""
        accepted, rejected = self.validate(items, now_ms)
        if not accepted:
            return IngestResult(0, tuple(rejected), self.log.next_offset, self.log.next_offset)
        first, nxt = self.log.append(accepted, now_ms)  # durable before anyone sees it
        light = [for_shards(e) for e in accepted]
        results = await asyncio.gather(
            *(sink.apply(light, first, nxt, now_ms) for sink in self.sinks), return_exceptions=True
        )
        lagging = tuple(s.name for s, r in zip(self.sinks, results) if isinstance(r, BaseException))
        if lagging:
            self.counts["sink_errors"] += len(lagging)
        return IngestResult(len(accepted), tuple(rejected), first, nxt, lagging)
