"""One retrieval shard: top-k with exclusions, the recency rule, the deleted set, versions.

:class:`ShardSearcher` is the logic the ``RetrievalShard`` Ray actor wraps. It
owns the shard's tables (one per embedding version it has been asked for),
the in-memory set of deleted post ids and the write lock.

Search contract (``search``): at most ``k`` posts of this shard, best cosine
first, none excluded by the caller, none deleted, none created before
``now_ms - max_post_age_ms``. The table keeps only the serving window (the
maintenance pass trims it), so the recency rule is a post-filter of a
``k·overfetch`` search; when filtering leaves fewer than ``k`` and the table
had more, the search is repeated with LanceDB's ``where`` prefilter, which is
exact about the rule but costs recall (see ``xserve.storage.lance.embeddings``).

Concurrency: searches run concurrently with each other and with one writer;
upserts, deletes and maintenance take the write lock, so the slow maintenance
pass (trim, compaction, index update) delays writes, never queries.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection

import numpy as np

from xserve.config import RetrievalConfig
from xserve.retrieval.merge import empty_hits, filter_hits, top_k
from xserve.retrieval.protocols import ShardTable
from xserve.storage.version_poll import PolledVersion
from xserve.schema import PostEmbeddings, ShardHits

__all__ = ["ShardSearcher"]


class _SearchPlan:
    """One search's sizes and filters, shared by the sync and async paths of :class:`ShardSearcher`.

    Deleted rows leave the table when they are deleted, so only the caller's
    excludes need room in ``fetch``; a late race (and many stale rows) is
    covered by the prefiltered fallback.
    """

    def __init__(self, owner: ShardSearcher, table: ShardTable | None, version: str | None, k: int, cutoff: int,
                 exclude_ids: Collection[int]):
        self.owner, self.table, self.version, self.k, self.cutoff = owner, table, version, k, cutoff
        deleted = list(owner._deleted)
        self.drop = set(exclude_ids).union(deleted) if deleted else exclude_ids
        self.fetch = math.ceil(k * owner.config.overfetch) + min(len(exclude_ids), k)

    def finish(self, cols: dict[str, np.ndarray]) -> ShardHits | None:
        """Filtered top-k, or None when filtering left fewer than k of a table that had more."""
        raw = _as_hits(cols, self.version)
        hits = filter_hits(raw, self.drop, self.cutoff)
        if len(hits) < self.k and len(raw) == self.fetch:
            self.owner.counters["fallbacks"] += 1
            return None
        return top_k(hits, self.k)

    def fallback_args(self) -> dict[str, int]:
        return {
            "limit": self.k + min(len(self.drop), self.k),
            "nprobes": 2 * self.owner.config.nprobes,
            "min_created_at_ms": self.cutoff,
        }

    def finish_fallback(self, cols: dict[str, np.ndarray]) -> ShardHits:
        return top_k(filter_hits(_as_hits(cols, self.version), self.drop, self.cutoff), self.k)


def _as_hits(cols: dict[str, np.ndarray], version: str | None) -> ShardHits:
    return ShardHits(
        cols["post_id"], cols["author_id"], cols["created_at_ms"], cols["score"], version or "", cols["in_reply_to_post_id"]
    )


class ShardSearcher:
    """Serves one shard; see the module docstring for the search contract.

    ``open_table(version)`` opens this shard's table of a complete embedding
    version; ``current_version()`` reads which version is current (``None``
    while there is none). Both are re-checked at most every
    ``config.version_poll_s`` seconds of ``monotonic()``.
    """

    def __init__(
        self,
        shard: int,
        open_table: Callable[[str], ShardTable],
        current_version: Callable[[], str | None],
        config: RetrievalConfig,
        max_post_age_ms: int,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if max_post_age_ms <= 0:
            raise ValueError(f"max_post_age_ms must be > 0, got {max_post_age_ms}")
        self.shard = shard
        self.config = config
        self.max_post_age_ms = max_post_age_ms
        self._open_table = open_table
        self.current_version = PolledVersion(current_version, config.version_poll_s, monotonic)
        self._tables: dict[str, ShardTable] = {}  # insertion order = open order; at most 2 kept
        self._deleted: dict[int, int] = {}  # post id → deleted_at_ms, kept one max age
        self._write_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._writes = 0  # upsert/delete calls since the last maintenance pass
        self.counters = {"searches": 0, "fallbacks": 0, "upserted": 0, "refused_old": 0, "deleted": 0, "maintenance_runs": 0}
        self.last_maintenance: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"ShardSearcher(shard={self.shard}, max_age_ms={self.max_post_age_ms})"

    # ------------------------------------------------------------------ versions

    def _table(self, version: str | None) -> tuple[str | None, ShardTable | None]:
        version = version or self.current_version()
        if version is None:
            return None, None
        table = self._tables.get(version)
        if table is None:
            with self._open_lock:
                table = self._tables.get(version)
                if table is None:
                    table = self._open_table(version)
                    with self._write_lock:  # deletes accepted before this version was built
                        if self._deleted:
                            table.delete(np.fromiter(self._deleted, dtype=np.int64))
                    self._tables[version] = table
                    while len(self._tables) > 2:  # current + the one in-flight queries may still use
                        self._tables.pop(next(iter(self._tables)))
        return version, table

    # ------------------------------------------------------------------ reads

    def search(
        self,
        vector: np.ndarray,
        k: int,
        now_ms: int,
        exclude_ids: Collection[int] = (),
        version: str | None = None,
    ) -> ShardHits:
        """This shard's top-``k`` under the contract in the module docstring."""
        plan = self._plan(k, now_ms, exclude_ids, version)
        if plan.table is None:
            return empty_hits()
        hits = plan.finish(plan.table.search(vector, plan.fetch))
        if hits is None:
            hits = plan.finish_fallback(plan.table.search(vector, **plan.fallback_args()))
        return hits

    async def search_async(
        self,
        vector: np.ndarray,
        k: int,
        now_ms: int,
        exclude_ids: Collection[int] = (),
        version: str | None = None,
    ) -> ShardHits:
        """:meth:`search` as a coroutine (the table's ``search_async``); same contract, same hits."""
        plan = self._plan(k, now_ms, exclude_ids, version)
        if plan.table is None:
            return empty_hits()
        hits = plan.finish(await plan.table.search_async(vector, plan.fetch))
        if hits is None:
            hits = plan.finish_fallback(await plan.table.search_async(vector, **plan.fallback_args()))
        return hits

    def _plan(self, k: int, now_ms: int, exclude_ids: Collection[int], version: str | None) -> _SearchPlan:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        version, table = self._table(version)
        if table is not None:
            self.counters["searches"] += 1
        return _SearchPlan(self, table, version, k, now_ms - self.max_post_age_ms, exclude_ids)

    # ------------------------------------------------------------------ writes

    def upsert(self, rows: PostEmbeddings, now_ms: int) -> int:
        """Write embeddings into the current version; returns rows written.

        Rows older than the max age (never retrievable) and deleted ids are
        dropped; a later row for the same id replaces the earlier one.
        """
        post_ids = np.asarray(rows.post_ids, dtype=np.int64)
        created = np.asarray(rows.created_at_ms, dtype=np.int64)
        keep = created >= now_ms - self.max_post_age_ms
        self.counters["refused_old"] += int((~keep).sum())
        if self._deleted:
            keep &= ~np.isin(post_ids, np.fromiter(self._deleted, dtype=np.int64))
        if not keep.any():
            return 0
        _, table = self._table(None)
        if table is None:
            raise RuntimeError(f"retrieval shard {self.shard}: no current embedding version to upsert into")
        with self._write_lock:
            n = table.upsert(
                post_ids[keep],
                np.asarray(rows.author_ids)[keep],
                created[keep],
                np.asarray(rows.vectors)[keep],
                rows.model_version,
                None if rows.in_reply_to_post_ids is None else np.asarray(rows.in_reply_to_post_ids)[keep],
            )
        self.counters["upserted"] += n
        self._writes += 1
        return n

    def delete(self, post_ids: Collection[int], now_ms: int) -> int:
        """Hide ``post_ids`` from every later search at once, then delete them from the tables."""
        ids = np.asarray(list(post_ids), dtype=np.int64)
        for pid in ids.tolist():
            self._deleted[pid] = now_ms
        with self._write_lock:
            for table in list(self._tables.values()):
                table.delete(ids)
        self.counters["deleted"] += len(ids)
        self._writes += 1
        return len(ids)

    def maintenance_due(self) -> bool:
        """True once enough writes piled up small unindexed fragments (each one slows every search)."""
        return self._writes >= self.config.optimize_after_writes

    def maintain(self, now_ms: int, trim: bool = True) -> dict[str, float]:
        """One pass on the current version, off the query path: trim aged-out rows (unless
        ``trim`` is False), then compact and fold new rows into the index (or retrain it)."""
        t0 = time.perf_counter()
        cutoff = now_ms - self.max_post_age_ms
        self._deleted = {p: t for p, t in self._deleted.items() if t >= cutoff}
        _, table = self._table(None)
        result: dict[str, float] = {}
        if table is not None:
            with self._write_lock:
                self._writes = 0
                result.update(table.maintain(cutoff if trim else None))
        result["seconds"] = time.perf_counter() - t0
        self.counters["maintenance_runs"] += 1
        self.last_maintenance = result
        return result

    def stats(self) -> dict[str, object]:
        version, table = self._table(None)
        return {
            "shard": self.shard,
            "version": version,
            "rows": table.num_rows() if table is not None else 0,
            "deleted_set": len(self._deleted),
            "last_maintenance": dict(self.last_maintenance),
            **self.counters,
        }
