"""Ray shells for Thunder: shard replicas, the one ingest writer, and the fan-out client.

* ``ThunderShard`` (one per shard x replica): a :class:`~xserve.thunder.replica.ShardReplica`
  behind an async actor. Store work runs on one worker thread (the store is
  single-threaded), so queries waiting for it are visible to the admission
  gate: a shard with ``max_concurrent_requests`` in flight answers
  :class:`~xserve.thunder.replica.ThunderAtCapacity` at once instead of
  queueing. Rebuilds from the event log on start (and on every Ray restart);
  trims on a timer inside the actor.
* ``ThunderIngest``: the single writer of the event log; runs the
  :class:`~xserve.thunder.ingest.Ingestor` with every shard replica as a sink,
  drops log segments past retention on a timer, and consumes Kafka when
  ``event_source = "kafka"``. It is also a consumer of the post catalog's logs
  (the source of truth for posts written through the HTTP API):
  :meth:`ThunderIngest.catch_up` ingests what the catalog logged since its
  watermark (``<data_dir>/thunder/catalog_watermark.json``), so a post the
  catalog acknowledged reaches Thunder even if the process that wrote it died
  before telling Thunder.
* :class:`ThunderClient`: plain async class for callers (the mixer's
  in-network source): fans one query out to only the shards owning followed
  authors, in parallel, round-robin over replicas, and merges.

Actors take only small constructor arguments (configs, ints, names): with
``max_restarts`` Ray must re-run the constructor, and arguments kept in the
object store can be lost (ray issue 53727).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import ray

from xserve.actors.calls import uncancelled
from xserve.actors.naming import NAMESPACE, ActorNames
from xserve.clock import now_ms
from xserve.config import StorageConfig, ThunderConfig
from xserve.schema import IngestResult, InNetworkRequest, LightPost, PostCreated, PostDeleted, PostEvent, QuotedPostDeleted
from xserve.storage.layout import DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.thunder.fanout import fan_out_merge, shards_to_ask
from xserve.thunder.ingest import Ingestor
from xserve.thunder.replica import ShardReplica, ThunderAtCapacity

__all__ = ["ThunderClient", "ThunderIngest", "ThunderShard", "event_log_dir", "open_event_log"]

log = logging.getLogger(__name__)



def event_log_dir(storage: StorageConfig) -> Path:
    """Where Thunder's post-event log lives in the data directory."""
    return DataDirLayout(storage.data_dir).thunder_events


def open_event_log(storage: StorageConfig, config: ThunderConfig, *, writer: bool, lock_wait_s: float = 0.0) -> EventLog:
    return EventLog(
        event_log_dir(storage), writer=writer, fsync=storage.fsync, segment_bytes=config.log_segment_bytes,
        lock_wait_s=lock_wait_s,
    )


class _Timer:
    """Runs ``fn`` every ``interval_s`` on the actor's event loop, started on first use."""

    def __init__(self, interval_s: float, fn: Callable[[], Any]) -> None:
        self.interval_s, self.fn, self.task = interval_s, fn, None

    def ensure(self) -> None:
        if self.task is None and self.interval_s > 0:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.fn()
            except Exception:  # a failed trim must not stop the timer
                log.exception("thunder timer task failed")


@ray.remote(max_restarts=-1, max_task_retries=3)
class ThunderShard:
    """One replica of one shard (see the module docstring)."""

    def __init__(self, config: ThunderConfig, storage: StorageConfig, shard: int, replica: int = 0) -> None:
        name = f"thunder shard {shard} replica {replica}"
        self._replica = ShardReplica(config, open_event_log(storage, config, writer=False), shard, now_ms, name)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="thunder-store")
        self._batch = msgspec.msgpack.Decoder(list[PostEvent])
        self._replica.rebuild()
        self._timer = _Timer(config.trim_interval_s, self.trim)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._timer.ensure()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def in_network_posts(self, req: InNetworkRequest, now_ms: int | None = None) -> list[LightPost]:
        with self._replica.gate:  # raises ThunderAtCapacity when full
            return await self._run(self._replica.in_network_posts, req, now_ms)

    async def apply(self, events: bytes, first_offset: int, next_offset: int, now_ms: int) -> int:
        """Apply a logged batch, msgpack-encoded (``_ShardSink``): far cheaper than pickling Structs."""
        return await self._run(self._apply, events, first_offset, next_offset, now_ms)

    def _apply(self, events: bytes, first_offset: int, next_offset: int, now_ms: int) -> int:
        return self._replica.apply(self._batch.decode(events), first_offset, next_offset, now_ms)

    async def trim(self, now_ms: int | None = None) -> int:
        return await self._run(self._replica.trim, now_ms)

    async def stats(self) -> dict[str, int]:
        return await self._run(self._replica.stats)


class _ShardSink:
    """An ingest sink over one shard actor; batches are put in the object store once for all sinks."""

    def __init__(self, name: str, shared: dict[str, Any]) -> None:
        self.name = name
        self._shared = shared
        self._handle: Any = None

    async def apply(self, events: list[PostEvent], first_offset: int, next_offset: int, now_ms: int) -> None:
        if self._shared.get("events") is not events:
            self._shared.update(events=events, ref=ray.put(msgspec.msgpack.encode(events)))
        if self._handle is None:
            self._handle = ray.get_actor(self.name, namespace=NAMESPACE)
        await self._handle.apply.remote(self._shared["ref"], first_offset, next_offset, now_ms)


@ray.remote(max_restarts=-1, max_task_retries=0)
class ThunderIngest:
    """The one writer of the event log (see the module docstring)."""

    def __init__(self, config: ThunderConfig, storage: StorageConfig, names: ActorNames) -> None:
        from xserve.actors.posts import catalog_tail

        self._config = config
        self._log = open_event_log(storage, config, writer=True, lock_wait_s=storage.lock_wait_s)
        self._catalog = catalog_tail(storage.data_dir, DataDirLayout(storage.data_dir).thunder_catalog_watermark)
        self._catch_up_lock = asyncio.Lock()
        self._committed_at = 0.0  # monotonic time of the last watermark commit
        # on its own too, so a post whose writer died before calling catch_up still arrives
        self._catch_up_timer = _Timer(config.catch_up_interval_s, self.catch_up)
        shared: dict[str, Any] = {}
        sinks = [
            _ShardSink(names.thunder_shard(s, r), shared) for s in range(config.num_shards) for r in range(config.replicas_per_shard)
        ]
        self._ingestor = Ingestor(config, self._log, sinks)
        self._timer = _Timer(config.trim_interval_s, self._drop_old_segments)
        self._kafka: Any = None

    async def _drop_old_segments(self) -> int:
        return self._log.drop_before(now_ms() - self._config.retention_ms - self._config.log_retention_slack_ms)

    async def ingest(self, items: Sequence[Any], now_ms: int | None = None) -> IngestResult:
        self._timer.ensure()
        self._catch_up_timer.ensure()
        return await self._ingestor.ingest(items, now_ms() if now_ms is None else now_ms)

    async def catch_up(self) -> int:
        """Ingest the post events the catalog logged since the watermark, then commit it; returns events read.

        Idempotent: an event ingested twice (a crash between ingest and commit)
        changes nothing in the shards. Events Thunder rejects (older than its
        retention, label changes it does not keep) are passed over. The
        watermark is committed at most every ``catch_up_interval_s`` (two
        fsyncs saved per post write; a crash re-reads at most that much).
        """
        self._timer.ensure()
        self._catch_up_timer.ensure()
        async with self._catch_up_lock:  # one reader of the tail at a time; a caller waiting here reads after
            entries = self._catalog.poll()
            positions = self._catalog.positions()
            events = [e for _, _, _, e in entries if isinstance(e, (PostCreated, PostDeleted, QuotedPostDeleted))]
            try:
                step = self._config.max_ingest_batch
                for i in range(0, len(events), step):
                    await self._ingestor.ingest(events[i : i + step], now_ms())
            except BaseException:
                self._catalog.rewind()  # read again next time: nothing is committed past what was ingested
                raise
            if time.monotonic() - self._committed_at >= self._config.catch_up_interval_s:
                self._catalog.commit(positions)
                self._committed_at = time.monotonic()
            return len(entries)

    async def start_kafka(self) -> None:
        """Consume the configured topic into the same ingest path (``event_source = "kafka"``)."""
        from xserve.thunder.kafka import KafkaEventSource

        if self._kafka is None:
            self._kafka = KafkaEventSource(self._config, self._ingestor.ingest, now_ms)
            await self._kafka.start()

    async def stats(self) -> dict[str, int]:
        out = dict(self._ingestor.counts)
        out["next_offset"] = self._log.next_offset
        out["catalog_watermark"] = sum(self._catalog.committed.values())
        if self._kafka is not None:
            out.update({f"kafka_{k}": v for k, v in self._kafka.counts.items()})
        return out


class ThunderClient:
    """Async client: queries fan out to the shards owning followed authors; writes go to the ingest actor.

    Satisfies the mixer's in-network Protocol: ``await client.in_network_posts(req)``.
    """

    def __init__(self, config: ThunderConfig, shards: Sequence[Sequence[Any]], ingest: Any) -> None:
        if len(shards) != config.num_shards:
            raise ValueError(f"expected {config.num_shards} shards of replicas, got {len(shards)}")
        self.config = config
        self._shards = [list(replicas) for replicas in shards]
        self._ingest = ingest
        self._turn = [itertools.count() for _ in shards]

    @classmethod
    def start(
        cls, config: ThunderConfig, storage: StorageConfig, num_cpus: float = 0, detached: bool = False
    ) -> ThunderClient:
        """Create (or attach to) the named shard and ingest actors; shards rebuild from the log.

        ``detached`` keeps the actors alive when their creator goes away (a Serve replica that is
        scaled down must not take the store with it); tests leave it off so the cluster cleans up.
        """
        names = ActorNames.of(storage.data_dir)
        opts = dict(num_cpus=num_cpus, namespace=NAMESPACE, get_if_exists=True, max_concurrency=config.max_concurrent_requests + 8)
        if detached:
            opts["lifetime"] = "detached"
        shards = [
            [
                ThunderShard.options(name=names.thunder_shard(s, r), **opts).remote(config, storage, s, r)
                for r in range(config.replicas_per_shard)
            ]
            for s in range(config.num_shards)
        ]
        ingest = ThunderIngest.options(name=names.thunder_ingest(), **opts).remote(config, storage, names)
        client = cls(config, shards, ingest)
        if config.event_source == "kafka":
            ray.get(ingest.start_kafka.remote())
        return client

    def actors(self) -> list[Any]:
        return [h for replicas in self._shards for h in replicas] + [self._ingest]

    async def ingest(self, items: Sequence[Any], now_ms: int | None = None) -> IngestResult:
        """Validate, log durably and apply ``items`` (see :class:`~xserve.thunder.ingest.Ingestor`)."""
        return await uncancelled(self._ingest.ingest.remote(list(items), now_ms))

    async def catch_up(self) -> int:
        """Have the ingest actor consume the post catalog's logs up to now (durable in Thunder on return)."""
        return await self._ingest.catch_up.remote()

    async def in_network_posts(self, req: InNetworkRequest, now_ms: int | None = None) -> list[LightPost]:
        targets = shards_to_ask(req, self.config)
        answers = await asyncio.gather(*(self._ask(s, req, now_ms) for s in targets))
        return fan_out_merge(answers, req, self.config)

    async def _ask(self, shard: int, req: InNetworkRequest, now_ms: int | None) -> list[LightPost]:
        replicas = self._shards[shard]
        start = next(self._turn[shard])
        # round-robin; a replica at capacity, or restarting after a crash, passes to the next
        for i in range(len(replicas)):
            try:
                return await uncancelled(replicas[(start + i) % len(replicas)].in_network_posts.remote(req, now_ms))
            except (ThunderAtCapacity, ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError):
                if i == len(replicas) - 1:
                    raise
        raise AssertionError("unreachable")

    async def stats(self) -> list[dict[str, int]]:
        """Each shard replica's stats (shard-major order), then the ingest actor's."""
        return list(await asyncio.gather(*(uncancelled(h.stats.remote()) for h in self.actors())))
