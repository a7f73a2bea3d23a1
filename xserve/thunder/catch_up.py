"""``CatalogCatchUp``: Thunder as a consumer of the post catalog's logs (pure; the ingest actor runs it).

The post catalog logs (fsync) every post write before it acknowledges it, and
those logs are the source of truth for posts. Thunder reads them through a
:class:`~xserve.storage.log.log_tail.LogTail` from its watermark
(``<data_dir>/thunder/catalog_watermark.json``), so a post the catalog
acknowledged reaches Thunder even if the process that wrote it died before
telling Thunder. One :meth:`CatalogCatchUp.run`:

1. polls the tail: every whole batch the catalog logged since the last read;
2. ingests the post events among them (creates and deletes; Thunder keeps no
   labels) in batches of at most ``max_batch``; events the ingest rejects
   (older than Thunder's retention) are passed over;
3. if an ingest fails, rewinds the tail to the watermark and re-raises: the
   next run reads those events again, as nothing is committed past what was
   ingested;
4. commits the positions it read, at most every ``commit_interval_s`` (two
   fsyncs saved per post write; after a crash Thunder re-reads at most that
   much, and ingesting an event twice changes nothing in the shards).

Runs are serialised: a caller that arrives during a run reads after it, so
when ``run`` returns, everything the catalog logged before the call is in
Thunder.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from xserve.schema import PostCreated, PostDeleted, PostEvent, QuotedPostDeleted
from xserve.storage.log.log_tail import LogTail

__all__ = ["CatalogCatchUp", "Ingest"]

Ingest = Callable[[list[PostEvent], int], Awaitable[Any]]  # (events, now_ms): durable in Thunder on return


class CatalogCatchUp:
    """See the module docstring. ``clock_ms`` stamps the ingests; ``monotonic`` paces the commits."""

    def __init__(
        self,
        tail: LogTail,
        ingest: Ingest,
        max_batch: int,
        commit_interval_s: float,
        clock_ms: Callable[[], int],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.tail = tail
        self._ingest = ingest
        self.max_batch = max_batch
        self.commit_interval_s = commit_interval_s
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._lock = asyncio.Lock()  # one reader of the tail at a time
        self._committed_at = -math.inf  # monotonic time of the last commit: the first run commits

    def __repr__(self) -> str:
        return f"CatalogCatchUp(watermark={self.watermark}, commit_interval_s={self.commit_interval_s})"

    @property
    def watermark(self) -> int:
        """Catalog events committed as read, over every catalog log."""
        return sum(self.tail.committed.values())

    async def run(self) -> int:
        """Ingest what the catalog logged since the last read, then commit (when due); returns events read."""
        async with self._lock:
            entries = self.tail.poll()
            positions = self.tail.positions()
            events = [e for _, _, _, e in entries if isinstance(e, (PostCreated, PostDeleted, QuotedPostDeleted))]
            try:
                for i in range(0, len(events), self.max_batch):
                    await self._ingest(events[i : i + self.max_batch], self._clock_ms())
            except BaseException:
                self.tail.rewind()  # read again next time: nothing is committed past what was ingested
                raise
            if self._monotonic() - self._committed_at >= self.commit_interval_s:
                self.tail.commit(positions)
                self._committed_at = self._monotonic()
            return len(entries)
