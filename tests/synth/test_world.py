"""The synthetic world: determinism, structural invariants, realistic-ish statistics, ground-truth signal."""

from __future__ import annotations

import numpy as np
import pytest

from xserve.schema import NEGATIVE_ACTIONS, Action
from xserve.synth.world import WORLD_SIZES, affinity, generate_world

NOW_MS = 1_790_000_000_000
HOUR_MS = 3_600_000


def tiny(seed: int = 0):
    return generate_world(WORLD_SIZES["tiny"], np.random.default_rng(seed), NOW_MS, seed=seed)


@pytest.fixture(scope="module")
def world():
    return tiny(0)


def _nullable(posts, name):
    """A nullable id column as int64 with -1 for null."""
    return np.array([-1 if v is None else v for v in posts[name]], dtype=np.int64)


def _tables_equal(a, b) -> bool:
    return all(
        a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k], dtype=object), np.asarray(b[k], dtype=object))
                                     for k in a)
        for a, b in ((a.users, b.users), (a.posts, b.posts), (a.edges, b.edges), (a.engagements, b.engagements))
    )


def test_same_seed_same_world_and_different_seed_different(world):
    again = tiny(0)
    assert _tables_equal(world, again)
    assert all(np.array_equal(world.ground_truth[k], again.ground_truth[k]) for k in world.ground_truth)
    assert not _tables_equal(world, tiny(1))


def test_sizes_near_spec(world):
    spec = WORLD_SIZES["tiny"]
    counts = world.counts()
    assert counts["users"] == spec.num_users and counts["posts"] == spec.num_posts
    assert abs(counts["engagements"] - spec.num_engagements) < 0.1 * spec.num_engagements


def test_follower_counts_are_heavy_tailed(world):
    followers = np.sort(world.users["followers_count"])[::-1]
    top_decile_share = followers[: len(followers) // 10].sum() / followers.sum()
    assert top_decile_share > 0.35 and followers[0] > 5 * max(np.median(followers), 1)
    kinds = world.edges["kind"]
    follow_targets = world.edges["target_id"][kinds == "follow"]
    assert np.array_equal(np.bincount(follow_targets - 1, minlength=len(followers)), world.users["followers_count"])
    assert set(kinds) == {"follow", "subscribe", "mute", "block"}
    assert not np.any(world.edges["user_id"] == world.edges["target_id"])


def test_posts_cover_media_kinds_and_recency(world):
    posts = world.posts
    created = posts["created_at_ms"]
    assert created.max() <= NOW_MS and created.min() >= NOW_MS - 7 * 24 * HOUR_MS
    assert np.mean(created >= NOW_MS - 48 * HOUR_MS) > 0.3
    durations = np.array([d for d in posts["video_duration_ms"] if d is not None])
    assert (durations < 10_000).sum() > 10 and (durations > 10_000).sum() > 10
    assert posts["has_photo"].sum() > 100 and posts["subscription_only"].sum() > 0
    assert sum(bool(labels) for labels in posts["labels"]) > 0
    assert np.all(np.diff(posts["post_id"]) > 0) and np.all(np.diff(created) >= 0)  # ids follow time


def test_replies_reposts_and_quotes_reference_earlier_posts(world):
    posts = world.posts
    pid = posts["post_id"]
    index = {p: i for i, p in enumerate(pid.tolist())}
    parent = _nullable(posts, "in_reply_to_post_id")
    conv = _nullable(posts, "conversation_id")
    repost = _nullable(posts, "repost_of_post_id")
    quote = _nullable(posts, "quote_of_post_id")
    assert (parent > 0).sum() > 300 and (repost > 0).sum() > 100 and (quote > 0).sum() > 50
    for i in np.flatnonzero(parent > 0):
        j = index[parent[i]]
        assert j < i and posts["in_reply_to_user_id"][i] == posts["author_id"][j]
        root = conv[j] if conv[j] > 0 else pid[j]  # the parent's conversation, or the parent is the root
        assert conv[i] == root
    for i in np.flatnonzero(repost > 0):
        j = index[repost[i]]
        assert j < i and repost[j] < 0 and posts["repost_of_user_id"][i] == posts["author_id"][j]
        assert posts["text"][i] == ""
    assert all(index[q] < i for i, q in enumerate(quote) if q > 0)
    assert np.all(conv[(parent < 0)] < 0)  # only replies belong to another post's conversation


def test_engagements_are_consistent_with_posts(world):
    posts, eng = world.posts, world.engagements
    index = np.searchsorted(posts["post_id"], eng["post_id"])
    assert np.array_equal(posts["post_id"][index], eng["post_id"])
    assert np.array_equal(posts["author_id"][index], eng["author_id"])
    assert np.array_equal(posts["created_at_ms"][index], eng["post_created_at_ms"])
    assert np.all(eng["timestamp_ms"] >= eng["post_created_at_ms"]) and np.all(eng["timestamp_ms"] <= NOW_MS)
    assert np.all(np.diff(eng["timestamp_ms"]) >= 0)
    assert not np.any(eng["user_id"] == eng["author_id"])
    action = eng["action"]
    video = np.array([d is not None for d in posts["video_duration_ms"]])[index]
    quote = np.array([q is not None for q in posts["quote_of_post_id"]])[index]
    assert np.all(posts["has_photo"][index][action == "photo_expand"])
    assert np.all(video[action == "video_quality_view"]) and np.all(quote[action == "quoted_click"])
    # issue 17: a video_open, profile_click or click row carries that action's own duration (watch, visit, click dwell)
    timed = np.isin(action, ["dwell", "video_open", "profile_click", "click"])
    assert np.array_equal(eng["dwell_ms"] > 0, timed)
    assert np.all(video[action == "video_open"]) and np.all(posts["has_link"][index][action == "link_open"])
    video_ms = np.array([d or 0 for d in posts["video_duration_ms"]])[index]
    watched = action == "video_open"
    assert watched.any() and np.all(eng["dwell_ms"][watched] <= np.maximum(video_ms[watched], 300))
    assert set(np.unique(eng["product_surface"])) <= set(range(8)) and len(np.unique(eng["product_surface"])) >= 5
    # Subscriber-only posts are engaged with by subscribers only.
    subs = set(zip(world.edges["user_id"][world.edges["kind"] == "subscribe"].tolist(),
                   world.edges["target_id"][world.edges["kind"] == "subscribe"].tolist()))
    only = posts["subscription_only"][index]
    assert all((u, a) in subs for u, a in zip(eng["user_id"][only].tolist(), eng["author_id"][only].tolist()))


def test_action_rates_are_plausible(world):
    action = world.engagements["action"]
    n = world.num_impressions
    rate = {a: np.sum(action == a.value) / n for a in Action}
    assert 0.02 < rate[Action.FAVORITE] < 0.08 and rate[Action.DWELL] > rate[Action.CLICK] > rate[Action.FAVORITE]
    for negative in NEGATIVE_ACTIONS:
        assert 0 < rate[negative] < 0.01, negative
    assert rate[Action.REPORT] < rate[Action.NOT_INTERESTED]
    # follow/mute/block actions leave edges behind
    edges = set(zip(world.edges["user_id"].tolist(), world.edges["target_id"].tolist(), world.edges["kind"].tolist()))
    eng = world.engagements
    for act, kind in (("follow_author", "follow"), ("mute_author", "mute"), ("block_author", "block")):
        m = action == act
        assert all((u, a, kind) in edges for u, a in zip(eng["user_id"][m].tolist(), eng["author_id"][m].tolist()))


def test_ground_truth_signal_is_in_the_engagements(world):
    eng = world.engagements
    aff = affinity(world.ground_truth, eng["user_id"], eng["post_id"])
    lo, hi = np.quantile(aff, [0.25, 0.75])
    action = eng["action"]
    fav_hi = np.mean(action[aff >= hi] == "favorite")
    fav_lo = np.mean(action[aff <= lo] == "favorite")
    negative = np.isin(action, [a.value for a in NEGATIVE_ACTIONS])
    assert fav_hi > 1.5 * fav_lo
    assert negative[aff <= lo].mean() > 2 * negative[aff >= hi].mean()
    # People see and engage with their interests more than at random.
    rng = np.random.default_rng(0)
    shuffled = affinity(world.ground_truth, eng["user_id"], rng.permutation(eng["post_id"]))
    assert aff.mean() > 1.5 * shuffled.mean()
    assert world.ground_truth["user_interests"].shape == (200, world.spec.num_topics)


def test_engagements_are_unique_on_the_table_key(world):
    eng = world.engagements
    keys = set(zip(eng["user_id"].tolist(), eng["post_id"].tolist(), eng["action"].tolist(),
                   eng["timestamp_ms"].tolist()))
    assert len(keys) == len(eng["user_id"])
