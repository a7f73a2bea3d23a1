"""LiveIndexer: live posts reach the shards from the post catalog's logs, at least once, across crashes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.retrieval.factories import NOW_MS, encoder
from xserve.posts import CatalogEvent
from xserve.retrieval.batcher import UpsertBatcher
from xserve.retrieval.live import LiveIndexer
from xserve.schema import Post, PostCreated, PostDeleted, PostLabelsSet
from xserve.storage.log.event_log import EventLog
from xserve.storage.log.log_tail import LogTail

MAX_AGE = 48 * 3_600_000


class FakeShards:
    """Records what reached each shard, as the shard tables would hold it (upsert and delete idempotent)."""

    def __init__(self, fail_upserts: int = 0) -> None:
        self.rows: dict[str, set[int]] = {}
        self.deleted: set[int] = set()
        self.fail_upserts = fail_upserts
        self.version = "v1"

    async def upsert(self, shard: int, rows, now_ms: int) -> int:
        if self.fail_upserts:
            self.fail_upserts -= 1
            raise RuntimeError("shard unavailable")
        ids = {int(p) for p in rows.post_ids} - self.deleted
        self.rows.setdefault(self.version, set()).update(ids)
        return len(ids)

    async def delete(self, shard: int, ids: list[int], now_ms: int) -> int:
        self.deleted.update(ids)
        for held in self.rows.values():
            held.difference_update(ids)
        return len(ids)

    def held(self) -> set[int]:
        return self.rows.get(self.version, set())


def _indexer(tmp_path, shards: FakeShards, flush_size: int = 1000, max_buffered: int | None = None) -> LiveIndexer:
    tail = LogTail(tmp_path / "hydration", "shard-*-of-*", CatalogEvent, tmp_path / "embeddings" / "LIVE_WATERMARK.json")
    batcher = UpsertBatcher(encoder(), 2, flush_size, 60.0, "m", max_buffered)
    return LiveIndexer(batcher, tail, shards.upsert, shards.delete, lambda: shards.version, MAX_AGE, lambda: NOW_MS)


def _post(pid: int, age_ms: int = 1000) -> Post:
    return Post(post_id=pid, author_id=pid % 7 + 1, created_at_ms=NOW_MS - age_ms)


def _catalog(tmp_path, shard: int) -> EventLog:
    return EventLog(tmp_path / "hydration" / f"shard-{shard}-of-2", writer=True, fsync=False, event_type=CatalogEvent)


def run(coro):
    return asyncio.run(coro)


def test_a_crash_before_the_flush_loses_nothing_and_a_flush_commits(tmp_path):
    a, b = _catalog(tmp_path, 0), _catalog(tmp_path, 1)
    a.append([PostCreated(_post(1)), PostCreated(_post(2)), PostLabelsSet(1, (), NOW_MS)], NOW_MS)
    b.append([PostCreated(_post(3)), PostCreated(_post(4, age_ms=MAX_AGE + 1))], NOW_MS)  # 4: too old to retrieve
    shards = FakeShards()
    first = _indexer(tmp_path, shards)
    assert run(first.catch_up()) == 5 and len(first.batcher) == 3
    # the process dies here: the buffer is gone, nothing was committed
    second = _indexer(tmp_path, shards)
    run(second.catch_up())
    a.append([PostDeleted(2, NOW_MS)], NOW_MS)
    run(second.catch_up())  # a delete is applied at once and drops the buffered post
    assert 2 in shards.deleted and len(second.batcher) == 2
    assert run(second.flush()) == 2 and shards.held() == {1, 3}
    third = _indexer(tmp_path, shards)  # after a commit there is nothing to read again
    assert run(third.catch_up()) == 0 and len(third.batcher) == 0 and not third.due()
    a.append([PostLabelsSet(1, ("spam",), NOW_MS)], NOW_MS)  # nothing to buffer: only the watermark moves
    run(third.catch_up())
    assert third.due() and run(third.flush()) == 0 and not third.due()
    assert third.tail.committed == {"shard-0-of-2": 5, "shard-1-of-2": 2} and third.tail.meta == {"version": "v1"}


def test_a_failed_flush_commits_nothing_and_retries(tmp_path):
    _catalog(tmp_path, 0).append([PostCreated(_post(pid)) for pid in (10, 11)], NOW_MS)
    shards = FakeShards(fail_upserts=5)
    idx = _indexer(tmp_path, shards)
    run(idx.catch_up())
    with pytest.raises(RuntimeError):
        run(idx.flush())
    assert idx.tail.committed == {} and len(idx.batcher) == 2 and idx.tail.lag() == 2
    shards.fail_upserts = 0
    run(idx.flush())
    assert shards.held() == {10, 11} and idx.tail.lag() == 0


def test_a_new_embedding_version_gets_the_live_posts_again(tmp_path):
    log = _catalog(tmp_path, 0)
    log.append([PostCreated(_post(pid)) for pid in (20, 21)], NOW_MS)
    shards = FakeShards()
    idx = _indexer(tmp_path, shards)
    run(idx.catch_up())
    run(idx.flush())
    shards.version = "v2"  # a backfill switched the current version
    log.append([PostCreated(_post(22))], NOW_MS)
    run(idx.flush())
    assert shards.rows["v2"] == {20, 21, 22} and idx.tail.meta == {"version": "v2"}
    restarted = _indexer(tmp_path, shards)
    assert run(restarted.catch_up()) == 0


def test_every_event_is_read_once_per_flush_whatever_the_interleaving(tmp_path):
    """Oracle: after any interleaving of writes, reads, crashes and flushes, a final catch-up and flush
    leave the shards holding exactly the live, young, undeleted posts the catalog logged."""
    rng = np.random.default_rng(7)
    logs = [_catalog(tmp_path, 0), _catalog(tmp_path, 1)]
    shards = FakeShards()
    idx = _indexer(tmp_path, shards)
    created, deleted = set(), set()
    for step in range(200):
        op = rng.integers(0, 5)
        if op == 0:
            pid = step + 100
            logs[pid % 2].append([PostCreated(_post(pid))], NOW_MS)
            created.add(pid)
        elif op == 1 and created:
            pid = int(rng.choice(sorted(created)))
            logs[pid % 2].append([PostDeleted(pid, NOW_MS)], NOW_MS)
            deleted.add(pid)
        elif op == 2:
            run(idx.catch_up())
        elif op == 3:
            run(idx.flush())
        else:
            idx = _indexer(tmp_path, shards)  # a crash: the buffer is lost
    run(idx.catch_up())
    run(idx.flush())
    assert shards.held() == created - deleted


def test_while_flushes_fail_a_full_buffer_stops_reading_and_drops_nothing(tmp_path):
    log = _catalog(tmp_path, 0)
    shards = FakeShards(fail_upserts=100)
    indexer = _indexer(tmp_path, shards, flush_size=2, max_buffered=3)
    log.append([PostCreated(_post(i)) for i in (1, 2, 3)], NOW_MS)
    run(indexer.catch_up())
    log.append([PostCreated(_post(i)) for i in (4, 5)], NOW_MS)
    assert run(indexer.catch_up()) == 0  # full: posts 4 and 5 wait in the log
    with pytest.raises(RuntimeError):
        run(indexer.flush())
    assert len(indexer.batcher) == 3 and indexer.batcher.dropped == 0
    shards.fail_upserts = 0
    run(indexer.flush())
    run(indexer.catch_up())
    run(indexer.flush())
    assert shards.held() == {1, 2, 3, 4, 5}
