"""CatalogCatchUp: Thunder reading the post catalog's logs (real logs, tail, ingestor and replicas; no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from tests.thunder.factories import HOUR, NOW, created, deleted, ids, post, request
from tests.thunder.test_ingest import CFG, ReplicaSink, replicas
from xserve.posts import CatalogEvent
from xserve.schema import PostLabelsSet
from xserve.storage.layout import SHARD_LOG_GLOB, DataDirLayout
from xserve.storage.log.event_log import EventLog
from xserve.storage.log.log_tail import LogTail
from xserve.thunder.catch_up import CatalogCatchUp
from xserve.thunder.fanout import fan_out_merge
from xserve.thunder.ingest import Ingestor


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Thunder:
    """The real ingest path in process: an Ingestor writing Thunder's log and two shard replicas; ``calls`` records
    each ingest's size, ``fail_next`` makes the next ingest raise before anything is logged."""

    def __init__(self, tmp_path) -> None:
        self.log = EventLog(tmp_path / "thunder", writer=True, fsync=False)
        self.replicas = replicas(self.log)
        self.ingestor = Ingestor(CFG, self.log, [ReplicaSink(r) for r in self.replicas])
        self.calls: list[int] = []
        self.fail_next = False

    async def ingest(self, events, now_ms):
        self.calls.append(len(events))
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("ingest actor restarting")
        return await self.ingestor.ingest(events, now_ms)

    def posts(self, *authors: int) -> set[int]:
        req = request(authors)
        return set(ids(fan_out_merge([r.in_network_posts(req, NOW) for r in self.replicas], req, CFG)))


def catalog(tmp_path) -> list[EventLog]:
    layout = DataDirLayout(tmp_path)
    return [EventLog(layout.catalog_log(s, 2), writer=True, fsync=False, event_type=CatalogEvent) for s in range(2)]


def tail(tmp_path) -> LogTail:
    layout = DataDirLayout(tmp_path)
    return LogTail(layout.catalog_logs, SHARD_LOG_GLOB, CatalogEvent, layout.thunder_catalog_watermark)


def catch_up(tmp_path, thunder: Thunder, clock: Clock, max_batch: int = 100, interval_s: float = 1.0) -> CatalogCatchUp:
    return CatalogCatchUp(tail(tmp_path), thunder.ingest, max_batch, interval_s, lambda: NOW, clock)


def test_ingests_the_catalogs_post_events_and_commits_the_watermark(tmp_path):
    logs, thunder, clock = catalog(tmp_path), Thunder(tmp_path), Clock()
    logs[0].append(created(post(1, 5)) + [PostLabelsSet(1, (), NOW)], NOW)
    logs[1].append(created(post(2, 6), post(3, 6, NOW - 100 * HOUR)), NOW)  # 3: beyond Thunder's retention
    reader = catch_up(tmp_path, thunder, clock)
    assert asyncio.run(reader.run()) == 4  # every entry read; the label change is not Thunder's
    assert thunder.calls == [3] and thunder.posts(5, 6) == {1, 2}
    assert reader.watermark == 4 and asyncio.run(reader.run()) == 0
    logs[0].append([deleted(1)], NOW)
    clock.now = 1.0
    assert asyncio.run(reader.run()) == 1 and thunder.posts(5, 6) == {2}
    assert catch_up(tmp_path, thunder, clock).watermark == 5  # committed durably: a new reader starts there


def test_ingests_in_batches_of_at_most_max_batch(tmp_path):
    logs, thunder = catalog(tmp_path), Thunder(tmp_path)
    logs[0].append(created(*(post(i, 5, NOW - HOUR + i) for i in range(1, 8))), NOW)
    assert asyncio.run(catch_up(tmp_path, thunder, Clock(), max_batch=3).run()) == 7
    assert thunder.calls == [3, 3, 1] and len(thunder.posts(5)) == 7
    with pytest.raises(ValueError, match="max_batch"):
        catch_up(tmp_path, thunder, Clock(), max_batch=0)


def test_a_failed_ingest_rewinds_so_the_next_run_reads_the_events_again(tmp_path):
    logs, thunder, clock = catalog(tmp_path), Thunder(tmp_path), Clock()
    logs[1].append(created(post(2, 6)), NOW)
    reader = catch_up(tmp_path, thunder, clock)
    thunder.fail_next = True
    with pytest.raises(ConnectionError):
        asyncio.run(reader.run())
    assert reader.watermark == 0 and thunder.posts(6) == set()
    clock.now = 5.0
    assert asyncio.run(reader.run()) == 1  # read again
    assert thunder.posts(6) == {2} and reader.watermark == 1


def test_commits_at_most_every_interval_and_a_crash_rereads_only_the_uncommitted(tmp_path):
    logs, thunder, clock = catalog(tmp_path), Thunder(tmp_path), Clock()
    reader = catch_up(tmp_path, thunder, clock, interval_s=1.0)
    logs[0].append(created(post(1, 5)), NOW)
    assert asyncio.run(reader.run()) == 1 and reader.watermark == 1  # the first run commits
    clock.now = 0.5
    logs[0].append(created(post(4, 5)), NOW)
    assert asyncio.run(reader.run()) == 1 and thunder.posts(5) == {1, 4}
    assert reader.watermark == 1  # ingested, not committed yet
    # a crash now: a new reader starts from the watermark and ingests post 4 again (idempotent)
    restarted = catch_up(tmp_path, thunder, clock)
    assert asyncio.run(restarted.run()) == 1 and thunder.posts(5) == {1, 4}
    clock.now = 1.0
    assert asyncio.run(reader.run()) == 0 and reader.watermark == 2  # due: what it read is committed


def test_a_run_that_starts_during_another_returns_after_it(tmp_path):
    logs, thunder = catalog(tmp_path), Thunder(tmp_path)
    logs[0].append(created(post(1, 5)), NOW)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def held_ingest(events, now_ms):
        entered.set()
        await gate.wait()
        return await thunder.ingest(events, now_ms)

    reader = CatalogCatchUp(tail(tmp_path), held_ingest, 100, 1.0, lambda: NOW, Clock())

    async def scenario():
        first = asyncio.ensure_future(reader.run())
        await entered.wait()  # the first run is inside its ingest
        second = asyncio.ensure_future(reader.run())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not second.done()  # it waits for the first: when it returns, post 1 is in Thunder
        gate.set()
        return await first, await second

    assert asyncio.run(scenario()) == (1, 0)
    assert thunder.posts(5) == {1}
