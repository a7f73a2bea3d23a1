"""Kafka as an event source, for clusters: a thin consumer feeding the one ingest path.

Messages carry one JSON-encoded :data:`~xserve.schema.PostEvent` each (the
same bytes the HTTP write path accepts). Each poll's messages go through
:meth:`~xserve.thunder.ingest.Ingestor.ingest` (validate, log durably,
apply); the consumer commits its Kafka offsets only after that returns, so
delivery is at-least-once and a redelivered event is a harmless duplicate.
Malformed messages are rejected and counted like any other bad event.

``aiokafka`` is an optional dependency (``pip install 'xserve[kafka]'``),
imported only when a consumer starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from xserve.config import ThunderConfig
from xserve.schema import IngestResult

__all__ = ["KafkaEventSource", "KafkaUnavailable"]

log = logging.getLogger(__name__)

IngestFn = Callable[[Sequence[Any], int], Awaitable[IngestResult]]


class KafkaUnavailable(RuntimeError):
    """event_source = "kafka" but the aiokafka client is not installed."""


class KafkaEventSource:
    """Consumes ``config.kafka_topic`` into ``ingest`` (an ``Ingestor.ingest``-like coroutine function)."""

    def __init__(self, config: ThunderConfig, ingest: IngestFn, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self._ingest = ingest
        self._clock_ms = clock_ms
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()  # messages / accepted / rejected / polls / errors

    def __repr__(self) -> str:
        c = self.config
        return f"KafkaEventSource(brokers={c.kafka_brokers!r}, topic={c.kafka_topic!r}, group={c.kafka_group!r})"

    async def handle(self, values: Sequence[bytes | None]) -> IngestResult:
        """Ingest one poll's message values; the broker-free core of the consumer."""
        result = await self._ingest(list(values), self._clock_ms())
        self.counts["messages"] += len(values)
        self.counts["accepted"] += result.accepted
        self.counts["rejected"] += len(result.rejected)
        for r in result.rejected:
            log.warning("kafka message rejected: %s", r.reason)
        return result

    async def start(self) -> None:
        try:
            from aiokafka import AIOKafkaConsumer
        except ImportError:
            raise KafkaUnavailable(
                "ThunderConfig.event_source is 'kafka' but aiokafka is not installed: pip install 'xserve[kafka]'"
            ) from None
        c = self.config
        self._consumer = AIOKafkaConsumer(
            c.kafka_topic,
            bootstrap_servers=c.kafka_brokers,
            group_id=c.kafka_group,
            enable_auto_commit=False,  # commit only what the ingest path has made durable
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                polled = await self._consumer.getmany(timeout_ms=500, max_records=self.config.kafka_batch_size)
                self.counts["polls"] += 1
                values = [m.value for msgs in polled.values() for m in msgs]
                for i in range(0, len(values), self.config.max_ingest_batch):
                    await self.handle(values[i : i + self.config.max_ingest_batch])
                if values:
                    await self._consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep consuming; uncommitted messages are redelivered
                self.counts["errors"] += 1
                log.exception("kafka poll/ingest failed")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
