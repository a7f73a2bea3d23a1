"""Ray shells for Thunder: shard replicas and the one ingest writer.

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
  :meth:`ThunderIngest.catch_up` runs a :class:`~xserve.thunder.catch_up.CatalogCatchUp`.

The actors are created in :mod:`xserve.actors.stateful`; callers reach them
through :class:`xserve.deployments.clients.ThunderClient`.

Actors take only small constructor arguments (configs, ints, names): with
``max_restarts`` Ray must re-run the constructor, and arguments kept in the
object store can be lost (ray issue 53727).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import ray

from xserve import clock
from xserve.actors.naming import NAMESPACE, ActorNames
from xserve.config import StorageConfig, ThunderConfig
from xserve.schema import IngestResult, InNetworkRequest, LightPost, PostEvent
from xserve.storage.layout import DataDirLayout
from xserve.thunder.catch_up import CatalogCatchUp
from xserve.thunder.ingest import Ingestor, open_event_log
from xserve.thunder.replica import ShardReplica

__all__ = ["ThunderIngest", "ThunderShard"]

log = logging.getLogger(__name__)


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
        self._replica = ShardReplica(config, open_event_log(storage, config, writer=False), shard, clock.now_ms, name)
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
        shared: dict[str, Any] = {}
        sinks = [
            _ShardSink(names.thunder_shard(s, r), shared) for s in range(config.num_shards) for r in range(config.replicas_per_shard)
        ]
        self._ingestor = Ingestor(config, self._log, sinks)
        self._catalog = CatalogCatchUp(
            catalog_tail(storage.data_dir, DataDirLayout(storage.data_dir).thunder_catalog_watermark),
            self._ingestor.ingest,
            config.max_ingest_batch,
            config.catch_up_interval_s,
            clock.now_ms,
        )
        # on its own too, so a post whose writer died before calling catch_up still arrives
        self._catch_up_timer = _Timer(config.catch_up_interval_s, self.catch_up)
        self._timer = _Timer(config.trim_interval_s, self._drop_old_segments)
        self._kafka: Any = None

    async def _drop_old_segments(self) -> int:
        return self._log.drop_before(clock.now_ms() - self._config.retention_ms - self._config.log_retention_slack_ms)

    async def ingest(self, items: Sequence[Any], now_ms: int | None = None) -> IngestResult:
        self._timer.ensure()
        self._catch_up_timer.ensure()
        return await self._ingestor.ingest(items, clock.now_ms() if now_ms is None else now_ms)

    async def catch_up(self) -> int:
        """Ingest the post events the catalog logged since the watermark; returns events read (see
        :class:`~xserve.thunder.catch_up.CatalogCatchUp`: idempotent, committed at most every ``catch_up_interval_s``)."""
        self._timer.ensure()
        self._catch_up_timer.ensure()
        return await self._catalog.run()

    async def start_kafka(self) -> None:
        """Consume the configured topic into the same ingest path (``event_source = "kafka"``)."""
        from xserve.thunder.kafka import KafkaEventSource

        if self._kafka is None:
            self._kafka = KafkaEventSource(self._config, self._ingestor.ingest, clock.now_ms)
            await self._kafka.start()

    async def stats(self) -> dict[str, int]:
        out = dict(self._ingestor.counts)
        out["next_offset"] = self._log.next_offset
        out["catalog_watermark"] = self._catalog.watermark
        if self._kafka is not None:
            out.update({f"kafka_{k}": v for k, v in self._kafka.counts.items()})
        return out
