"""One shard replica's logic: a ThunderStore kept in step with the event log, behind an admission gate.

Pure (no Ray): the ``ThunderShard`` actor is a thin shell around
:class:`ShardReplica`, and tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Callable

from xserve.config import ThunderConfig
from xserve.schema import InNetworkRequest, LightPost, PostEvent
from xserve.thunder.ingest import ReadLog
from xserve.thunder.store import ThunderStore

__all__ = ["AdmissionGate", "ShardReplica", "ThunderAtCapacity"]


class ThunderAtCapacity(RuntimeError):
    """A shard refused a query because it already has its maximum in flight; retry (elsewhere)."""


class AdmissionGate:
    """Counts requests in flight and refuses one beyond ``limit`` at once (no queueing)."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.in_flight = 0
        self.rejected = 0

    def __enter__(self) -> AdmissionGate:
        if self.in_flight >= self.limit:
            self.rejected += 1
            raise ThunderAtCapacity(f"{self.name} at capacity ({self.in_flight} requests in flight), please retry")
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1


class ShardReplica:
    """A :class:`ThunderStore` for one shard, fed from the event log by offset.

    ``apply`` takes a batch with its log offsets ``[first, next)``: a batch
    already seen is skipped, an overlap applies only the new tail, and a gap
    (a batch this replica missed) is first filled from the log, so a replica
    never silently diverges. ``rebuild`` replays the log from the start (the
    log keeps the retention window plus slack), which is how a restarted
    replica gets back every acknowledged post and every delete.
    """

    def __init__(
        self, config: ThunderConfig, log: ReadLog, shard: int, clock_ms: Callable[[], int], name: str = ""
    ) -> None:
        self.config = config
        self.store = ThunderStore(config, shard, config.num_shards)
        self.log = log
        self.clock_ms = clock_ms
        self.name = name or f"thunder shard {shard}"
        self.next_offset = 0  # the first log offset not yet applied
        self.gate = AdmissionGate(config.max_concurrent_requests, self.name)

    def rebuild(self) -> int:
        """Replay the whole log into the store; returns the number of events read."""
        return self._catch_up(None)

    def _catch_up(self, until: int | None) -> int:
        batch: list[PostEvent] = []
        n = 0
        for offset, _, event in self.log.read(self.next_offset, until):
            batch.append(event)
            self.next_offset = offset + 1
            if len(batch) >= self.config.replay_batch_size:
                self.store.apply(batch, self.clock_ms())
                n += len(batch)
                batch = []
        if batch:
            self.store.apply(batch, self.clock_ms())
            n += len(batch)
        if until is not None:
            self.next_offset = max(self.next_offset, until)
        return n

    def apply(self, events: list[PostEvent], first_offset: int, next_offset: int, now_ms: int) -> int:
        """Apply a logged batch (see the class docstring); returns how many events were new."""
        if next_offset <= self.next_offset:
            return 0
        if first_offset > self.next_offset:
            self._catch_up(first_offset)
        new = events[self.next_offset - first_offset :] if first_offset < self.next_offset else events
        self.store.apply(new, now_ms)
        self.next_offset = next_offset
        return len(new)

    def in_network_posts(self, req: InNetworkRequest, now_ms: int | None = None) -> list[LightPost]:
        return self.store.in_network_posts(req, self.clock_ms() if now_ms is None else now_ms)

    def trim(self, now_ms: int | None = None) -> int:
        return self.store.trim(self.clock_ms() if now_ms is None else now_ms)

    def stats(self) -> dict[str, int]:
        return {
            **self.store.stats(),
            "next_offset": self.next_offset,
            "in_flight": self.gate.in_flight,
            "rejected_at_capacity": self.gate.rejected,
        }
