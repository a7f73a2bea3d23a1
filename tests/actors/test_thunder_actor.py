"""Thunder on Ray: fan-out == unsharded store, restart recovery from the log, backpressure."""

import asyncio
import time

import pytest

from tests.thunder.factories import HOUR, created, deleted, ids, post, request
from xserve.config import StorageConfig, ThunderConfig
from xserve.thunder.refs import carry_refs
from xserve.thunder.store import ThunderStore

pytestmark = pytest.mark.ray

# Time enough for any shard on a loaded 2-core box (a restarting one included): these tests assert exact answers,
# so no shard may be left out for being slow (the default, 0.25 s, is for feeds).
PATIENT = 60.0


def _now() -> int:
    return time.time_ns() // 1_000_000


def _world(now: int):
    """Posts of 12 authors incl. cross-author replies and reposts (carrying refs), plus deletes."""
    posts = []
    for i in range(1, 121):
        a, t = i % 12 + 1, now - i * 60_000
        if i % 5 == 0:
            parent = i + 3  # older post by another author
            posts.append(post(i, a, t, reply_to=parent, reply_user=(i + 3) % 12 + 1, conv=parent))
        elif i % 7 == 0:
            posts.append(post(i, a, t, repost_of=i + 2, repost_user=(i + 2) % 12 + 1))
        else:
            posts.append(post(i, a, t, conv=i, video_ms=30_000 if i % 3 == 0 else None))
    return created(*carry_refs(posts)) + [deleted(9, now - 1000), deleted(44, now - 1000)]


def _start(cfg: ThunderConfig, storage: StorageConfig):
    """Thunder's actors for ``storage``'s data directory (created, or attached to), behind a client."""
    from xserve.actors.naming import ActorNames
    from xserve.actors.stateful import thunder_actors
    from xserve.deployments.clients import ThunderClient

    actors = thunder_actors(cfg, storage, ActorNames.of(storage.data_dir))
    return ThunderClient(cfg, actors.shards, actors.ingest)


def _stop(client):
    import ray

    for h in client.actors():
        ray.kill(h, no_restart=True)


def test_fanout_equals_unsharded_and_survives_restarts(ray_cluster, tmp_path):

    ray = ray_cluster
    cfg = ThunderConfig(num_shards=3, replicas_per_shard=2, trim_interval_s=0.5, shard_timeout_s=PATIENT)
    storage = StorageConfig(data_dir=str(tmp_path), fsync=True)
    client = _start(cfg, storage)
    now = _now()
    events = _world(now)
    res = asyncio.run(client.ingest(events + [b"garbage"], now_ms=now))
    assert res.accepted == len(events) and res.lagging_shards == ()
    assert [r.index for r in res.rejected] == [len(events)]

    oracle = ThunderStore(cfg)
    oracle.apply(events, now)
    reqs = [
        request(range(1, 13), viewer=3),
        request([2, 5, 7], viewer=6, max_results=7),
        request(range(1, 13), video_only=True),
        request([4], exclude={4, 16, 28}),
    ]

    def answers():
        return [ids(asyncio.run(client.in_network_posts(r, now_ms=now)).posts) for r in reqs]

    expected = [ids(oracle.in_network_posts(r, now)) for r in reqs]
    assert answers() == answers() == expected  # twice: both replicas of each shard answer
    assert any(expected) and 9 not in expected[0] and 44 not in expected[0]

    # kill one replica of every shard: Ray restarts it, it rebuilds from the log
    for replicas in client._shards:
        ray.kill(replicas[0], no_restart=False)
    ray.kill(client._ingest, no_restart=False)
    assert answers() == answers() == expected  # the surviving replicas answer while the others restart
    _wait_until_restarted(client)
    assert answers() == answers() == expected
    # the restarted ingest reopens the log (lock released) and keeps offsets
    res = asyncio.run(client.ingest([deleted(1, now - 500)], now_ms=now))
    assert (res.accepted, res.first_offset) == (1, len(events))
    assert 1 not in ids(asyncio.run(client.in_network_posts(reqs[0], now_ms=now)).posts)

    # a whole restart: every actor gone, new ones on the same data directory
    _stop(client)
    client = _start(cfg, storage)
    oracle.apply([deleted(1, now - 500)], now)
    assert answers() == [ids(oracle.in_network_posts(r, now)) for r in reqs]
    stats = asyncio.run(client.stats())
    assert stats[-1]["next_offset"] == len(events) + 1
    _stop(client)


def test_shard_at_capacity_answers_retry_at_once(ray_cluster, tmp_path):
    from xserve.thunder.replica import ThunderAtCapacity

    # slow queries on purpose: every post of every author is collected and sorted
    cfg = ThunderConfig(num_shards=1, max_concurrent_requests=1, max_original_posts_per_author=1000, shard_timeout_s=PATIENT)
    client = _start(cfg, StorageConfig(data_dir=str(tmp_path), fsync=False))
    now = _now()
    authors = range(1, 2001)
    for start in range(0, 40_000, 10_000):
        evs = created(*(post(i, i % 2000 + 1, now - HOUR + i) for i in range(start + 1, start + 10_001)))
        asyncio.run(client.ingest(evs, now_ms=now))
    req = request(authors)

    async def burst():
        return await asyncio.gather(*(client.in_network_posts(req) for _ in range(8)), return_exceptions=True)

    out = asyncio.run(burst())
    refused = [r for r in out if isinstance(r, Exception)]
    served = [r.posts for r in out if not isinstance(r, Exception)]
    assert refused and served, out
    assert all(isinstance(r, ThunderAtCapacity) and "at capacity" in str(r) and "retry" in str(r) for r in refused)
    assert all(len(r) == cfg.max_posts_to_return for r in served)
    _stop(client)


def test_a_dead_shard_is_left_out_and_named_the_other_shards_posts_still_come(ray_cluster, tmp_path):
    from tests.conftest import actor_is_dead, wait_until
    from xserve.sharding import shard_for

    cfg = ThunderConfig(num_shards=2, shard_timeout_s=PATIENT)
    client = _start(cfg, StorageConfig(data_dir=str(tmp_path), fsync=False))
    now = _now()
    authors = range(1, 9)
    assert {shard_for(a, 2) for a in authors} == {0, 1}
    asyncio.run(client.ingest(created(*(post(a, a, now - a) for a in authors)), now_ms=now))
    dead = client._shards[1][0]
    ray_cluster.kill(dead, no_restart=True)
    wait_until(lambda: actor_is_dead(dead), 30, "the killed shard to be dead")
    answer = asyncio.run(client.in_network_posts(request(authors), now_ms=now))
    assert answer.left_out == ("thunder_shard_1",)
    assert ids(answer.posts) == [a for a in authors if shard_for(a, 2) == 0]  # post a by author a, a ms old
    _stop(client)


def _wait_until_restarted(client, timeout_s=60.0):
    """Every actor answers again (a restart takes seconds on a loaded 2-core machine)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get([a.stats.remote() for a in client.actors()])
            return
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.ActorDiedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_ingest_consumes_the_post_catalogs_logs_from_its_watermark(ray_cluster, tmp_path):
    """A post the catalog logged reaches Thunder by catch_up (also after a restart), exactly once in effect."""
    from xserve.actors.posts import catalog_log_dir
    from xserve.posts import CatalogEvent
    from xserve.schema import PostLabelsSet
    from xserve.storage.log.event_log import EventLog

    cfg = ThunderConfig(num_shards=2, catch_up_interval_s=0, shard_timeout_s=PATIENT)  # no timer: only explicit catch-ups
    storage = StorageConfig(data_dir=str(tmp_path), fsync=False)
    now = _now()
    catalog = [EventLog(catalog_log_dir(tmp_path, s, 2), writer=True, fsync=False, event_type=CatalogEvent) for s in range(2)]
    catalog[0].append(created(post(1, 5, now - HOUR)) + [PostLabelsSet(1, (), now)], now)
    catalog[1].append(created(post(2, 6, now - HOUR), post(3, 6, now - 100 * HOUR)), now)  # 3: beyond retention
    client = _start(cfg, storage)
    assert asyncio.run(client.catch_up()) == 4
    assert set(ids(asyncio.run(client.in_network_posts(request([5, 6]), now_ms=now)).posts)) == {1, 2}
    assert asyncio.run(client.catch_up()) == 0

    # the process dies after the catalog logged more, before Thunder read it
    catalog[0].append([deleted(1, now)], now)
    catalog[1].append(created(post(4, 6, now - 1000)), now)
    _stop(client)
    client = _start(cfg, storage)
    assert asyncio.run(client.catch_up()) == 2  # only what came after the watermark
    assert set(ids(asyncio.run(client.in_network_posts(request([5, 6]), now_ms=now)).posts)) == {2, 4}
    assert asyncio.run(client.stats())[-1]["next_offset"] == 4  # 1, 2, then the delete and 4: none twice
    _stop(client)
    for log in catalog:
        log.close()
