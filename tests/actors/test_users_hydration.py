"""The user-store and hydration actors on the shared local Ray: wiring, durability across a restart."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import actor_is_dead, wait_until
from xserve.config import load_config
from xserve.schema import (
    Action,
    EdgeKind,
    EdgeSet,
    Engagement,
    EngagementRecorded,
    Post,
    PostCreated,
    PostDeleted,
    PostLabelsSet,
    UserUpserted,
    VisibilityLabel,
)

pytestmark = pytest.mark.ray


def config(tmp_path):
    return load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False}, "serving": {"num_user_shards": 2}})


def test_user_shards_write_read_and_rebuild_after_restart(ray_cluster, tmp_path):
    from xserve.actors.users import UserStoreShard
    from xserve.clock import now_ms
    from xserve.deployments.clients import UserStoreClient
    from xserve.mixer import ForYouQuery
    from xserve.mixer.query_hydrators import UserFeaturesQueryHydrator
    from xserve.users.writes import WriteRefused

    cfg = config(tmp_path)
    shards = [UserStoreShard.remote(cfg, i, 2) for i in range(2)]
    client = UserStoreClient(shards, history_length=8)

    async def scenario():
        await client.write([UserUpserted(u, f"u{u}") for u in range(1, 6)])
        await client.write([EdgeSet(1, u, EdgeKind.FOLLOW) for u in range(2, 6)])
        with pytest.raises(WriteRefused) as refused:
            await client.write([EdgeSet(1, 99, EdgeKind.FOLLOW)])
        assert refused.value.status == 404 and "99" in str(refused.value)
        with pytest.raises(WriteRefused):  # one bad event refuses the whole batch
            await client.write([EdgeSet(2, 3, EdgeKind.BLOCK), EdgeSet(2, 77, EdgeKind.BLOCK)])
        await client.write([EngagementRecorded(Engagement(1, 10, 2, Action.FAVORITE, 1_000))])
        await client.record_served(1, [10, 11], now_ms())  # served now: within serving.max_served_age_ms
        features = await client.user_features(1)
        history = await client.engagement_history(1, 8)
        profiles = await client.profiles([2, 3, 99])
        data = await client.query_data(1)
        # the prefetched answer, carried in the query, is used instead of a call
        query = ForYouQuery(viewer_id=1, request_id="r-1", now_ms=2_000, viewer_data=data)
        assert await UserFeaturesQueryHydrator(client).hydrate(query) is data.features
        return features, history, profiles, data

    features, history, profiles, data = asyncio.run(scenario())
    assert features.followed_user_ids == {2, 3, 4, 5}
    assert [h.post_id for h in history] == [10]
    assert set(profiles) == {2, 3} and profiles[2].followers_count == 1
    assert data.served_ids == (10, 11)
    blocked = asyncio.run(client.user_features(2)).blocked_user_ids
    assert blocked == frozenset()

    for s in shards:
        ray_cluster.kill(s)
    shards = [UserStoreShard.remote(cfg, i, 2) for i in range(2)]
    again = UserStoreClient(shards, history_length=8)
    assert asyncio.run(again.user_features(1)) == features
    assert asyncio.run(again.profiles([2]))[2].followers_count == 1
    for s in shards:
        ray_cluster.kill(s)


def test_hydration_shards_live_posts_labels_deletes_and_restart(ray_cluster, tmp_path):
    from xserve.actors.posts import PostCatalogShard
    from xserve.deployments.clients import PostCatalogClient, UserStoreClient
    from xserve.posts import RequestPostCache

    cfg = config(tmp_path)
    shards = [PostCatalogShard.remote(cfg, i, 2, 0) for i in range(2)]
    client = PostCatalogClient(shards, UserStoreClient([], 8))
    posts = [Post(post_id=i, author_id=1, created_at_ms=0, text=f"p{i}") for i in range(1, 7)]

    async def scenario():
        await client.write([PostCreated(p) for p in posts])
        await client.write([PostLabelsSet(2, (VisibilityLabel.SPAM,)), PostDeleted(3, 5)])
        cache = RequestPostCache()  # one request's lookups
        a, b = await asyncio.gather(cache.get([1, 2, 3, 4], client.get_posts), cache.get([1, 2], client.get_posts))
        return a, b

    a, b = asyncio.run(scenario())
    assert set(a) == {1, 2, 4} and set(b) == {1, 2}
    assert a[2].labels == (VisibilityLabel.SPAM,)
    for s in shards:
        ray_cluster.kill(s)
    shards = [PostCatalogShard.remote(cfg, i, 2, 0) for i in range(2)]
    again = PostCatalogClient(shards, UserStoreClient([], 8))
    got = asyncio.run(again.get_posts(range(1, 7)))
    assert set(got) == {1, 2, 4, 5, 6} and got[2].labels == (VisibilityLabel.SPAM,)
    for s in shards:
        ray_cluster.kill(s)


def test_viewer_data_falls_back_to_the_last_answer_when_the_shard_is_gone(ray_cluster, tmp_path):
    from xserve.actors.users import UserStoreShard
    from xserve.deployments.clients import UserStoreClient, UserStoreUnavailable
    from xserve.users.last_known import LastKnownViewers

    cfg = config(tmp_path)
    shard = UserStoreShard.remote(cfg, 0, 1)
    client = UserStoreClient([shard], history_length=8, last_known=LastKnownViewers(1 << 20))

    async def scenario():
        await client.write([UserUpserted(u, f"u{u}") for u in (1, 2, 3)])
        await client.write([EdgeSet(1, 2, EdgeKind.FOLLOW), EdgeSet(1, 3, EdgeKind.BLOCK)])
        fresh, stale = await client.viewer_data(1, 5.0, 10.0)
        assert not stale and fresh.features.blocked_user_ids == {3}
        assert await client.viewer_data(99, 5.0, 10.0) == (None, False)  # unknown: not an outage
        ray_cluster.kill(shard, no_restart=True)  # gone for good: every call fails
        wait_until(lambda: actor_is_dead(shard), 30, "the killed user-store shard to be dead")
        again, stale = await client.viewer_data(1, 0.2, 1.0)
        assert stale and again == fresh  # the viewer's blocks are still known
        with pytest.raises(UserStoreUnavailable, match="user 2"):  # never asked for before: nothing to serve
            await client.viewer_data(2, 0.2, 1.0)

    asyncio.run(scenario())
