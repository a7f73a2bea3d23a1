"""The impression log (written by a user-store shard after a feed), live engagements, and impression negatives."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa

from xserve.clock import HOUR_MS
from xserve.config import LoopConfig, load_config
from xserve.loop.impressions import (ImpressionLog, feed_impressions, impression_arrays, read_impression_records,
                                     read_impressions, seen_feeds)
from xserve.loop.live_data import live_engagements, training_engagements
from xserve.loop.negatives import ImpressionNegatives, unengaged
from xserve.mixer.side_effects import ServedHistorySideEffect
from xserve.schema import (ACTIONS, Action, ActionScores, Engagement, EngagementRecorded, FeedSource, PostCandidate, ServedType,
                           UserUpserted)
from xserve.storage.layout import DataDirLayout
from xserve.users.shard import UserShard
from tests.mixer.fakes import InMemoryUserData, query

NOW = 1_800_000_000_000


def cand(post_id: int, version: str | None = "ranker-a", source=ServedType.RETRIEVAL) -> PostCandidate:
    c = PostCandidate(post_id=post_id, author_id=post_id + 1000, served_type=source, score=1.0 / post_id)
    c.action_scores, c.model_version = (ActionScores(favorite=0.5), version) if version else (None, None)
    return c


def test_a_feed_is_logged_with_positions_sources_request_id_version_and_predictions():
    store = InMemoryUserData()
    effect = ServedHistorySideEffect(store, log_impressions=True)
    asyncio.run(effect.launch(query(request_id="r-1"), [cand(3), cand(4, source=ServedType.IN_NETWORK)]))
    (feed,) = store.impressions
    assert (feed.request_id, feed.viewer_id, feed.served_at_ms, feed.model_version) == ("r-1", 1, query().now_ms, "ranker-a")
    assert [(i.post_id, i.position, i.served_type, i.source) for i in feed.impressions] == [
        (3, 0, ServedType.RETRIEVAL, FeedSource.RETRIEVAL), (4, 1, ServedType.IN_NETWORK, FeedSource.THUNDER)]
    assert feed.impressions[0].scores.favorite == 0.5 and store.served == [(1, [3, 4], query().now_ms)]
    assert effect.counts.as_dict() == {"served_feeds": 0, "logged_feeds": 1, "logged_impressions": 2, "failed_feeds": 0,
                                       "not_logged_feeds": 0}  # served_feeds is counted by the ingress
    # an in-network-only feed is logged too, but changes no served history
    asyncio.run(effect.launch(query(in_network_only=True), [cand(5)]))
    assert len(store.impressions) == 2 and len(store.served) == 1


def test_a_feed_scored_by_two_versions_would_name_both():
    assert feed_impressions("r", 1, NOW, [cand(1, "ranker-a"), cand(2, "ranker-b"), cand(3, None)]).model_version == \
        "ranker-a,ranker-b"


def test_the_shard_logs_impressions_and_retention_drops_whole_old_segments(tmp_path):
    loop = LoopConfig(impression_segment_bytes=512, impression_retention_ms=HOUR_MS, impression_sync_interval_s=0.0)
    log = ImpressionLog(tmp_path / "impressions/shard-0-of-1", loop)
    old = [feed_impressions(f"old-{i}", 7, NOW, [cand(i + 1)]) for i in range(20)]
    for f in old:
        log.append([f], NOW)  # small segments: several of them, all appended at NOW
    new = feed_impressions("new", 7, NOW + 2 * HOUR_MS, [cand(99)])
    log.append([new], NOW + 2 * HOUR_MS)  # the retention check runs: old segments past an hour go
    log.close()
    kept = list(read_impressions(tmp_path / "impressions"))
    assert log.dropped_segments > 0 and kept[-1] == new and len(kept) < len(old) + 1
    rows = impression_arrays(kept)
    assert rows["post_id"][-1] == 99 and rows["probs"].shape == (len(kept), len(ACTIONS)) and rows["request_id"][-1] == "new"


def one_shard_holding_user_7(tmp_path):
    """The config of one user-store shard over ``tmp_path``, and that shard, opened, with user 7 in it."""
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False},
                                             "serving": {"num_user_shards": 1}})
    shard = UserShard.open(cfg, 0, 1)
    shard.apply([UserUpserted(7)])
    return cfg, shard


def test_user_shard_records_served_ids_and_impressions_in_one_call_and_reopens(tmp_path):
    cfg, shard = one_shard_holding_user_7(tmp_path)
    from xserve.schema import Served

    shard.record_served(Served(7, (1, 2), NOW), feed_impressions("r", 7, NOW, [cand(1), cand(2)]))
    shard.close()
    reopened = UserShard.open(cfg, 0, 1)  # the impression log's writer lock was released; served ids replayed
    assert reopened.query_data(7, 10) is not None
    assert [f.request_id for f in read_impressions(DataDirLayout(tmp_path).impression_logs)] == ["r"]
    reopened.close()


def test_live_engagements_come_from_the_user_logs_once_with_their_request_id(tmp_path):
    cfg, shard = one_shard_holding_user_7(tmp_path)
    e = Engagement(7, 11, 8, Action.FAVORITE, NOW, prediction_request_id="r-1")
    shard.apply([EngagementRecorded(e), EngagementRecorded(e)])  # a retried write is one engagement
    shard.close()
    assert live_engagements(DataDirLayout(tmp_path).user_logs) == [e]


def test_training_reads_the_table_plus_new_live_rows(tmp_path):
    from xserve.storage import DataDir

    dd = DataDir(tmp_path, fsync=False)
    first = Engagement(7, 11, 8, Action.FAVORITE, NOW)
    from xserve.storage import engagements_to_table

    dd.write_engagements(engagements_to_table([first]))
    cfg, shard = one_shard_holding_user_7(tmp_path)
    live = Engagement(7, 12, 8, Action.REPLY, NOW + 5, prediction_request_id="r-2")
    shard.apply([EngagementRecorded(first), EngagementRecorded(live)])  # the first is in the table already
    shard.close()
    table, counts = training_engagements(tmp_path)
    assert counts == {"table": 1, "live": 2, "live_new": 1}
    assert table.column("post_id").to_pylist() == [11, 12] and table.column("action").to_pylist() == ["favorite", "reply"]


def test_training_sees_the_posts_created_through_the_api(tmp_path):
    """A post the server accepted (``POST /v1/posts``: the catalog's log) reaches training with its creation time,
    beside the posts table's; a deleted one does not."""
    from xserve.cli import _engagement_tables
    from xserve.posts.catalog import CatalogEvent
    from xserve.schema import Post, PostCreated, PostDeleted
    from xserve.storage import DataDir, engagements_to_table
    from xserve.storage.lance.tables import posts_to_table
    from xserve.storage.log.event_log import EventLog

    dd = DataDir(tmp_path, fsync=False)
    dd.write_posts(posts_to_table([Post(post_id=11, author_id=8, created_at_ms=NOW - 9)]))
    dd.write_engagements(engagements_to_table([Engagement(7, 11, 8, Action.FAVORITE, NOW)]))
    log = EventLog(DataDirLayout(tmp_path).catalog_log(0, 1), writer=True, fsync=False, event_type=CatalogEvent)
    log.append([PostCreated(Post(post_id=12, author_id=8, created_at_ms=NOW + 1, text="live")),
                PostCreated(Post(post_id=13, author_id=8, created_at_ms=NOW + 2))], NOW + 2)
    log.append([PostDeleted(post_id=13, deleted_at_ms=NOW + 3)], NOW + 3)
    log.close()
    _, posts, _, counts = _engagement_tables(str(tmp_path), live=True)
    assert posts.to_pylist() == [{"post_id": 11, "author_id": 8, "created_at_ms": NOW - 9, "text": ""},
                                 {"post_id": 12, "author_id": 8, "created_at_ms": NOW + 1, "text": "live"}]  # the ranker's content
    assert (counts["posts_table"], counts["posts_live"]) == (1, 1)


def test_unengaged_marks_only_impressions_without_any_engagement():
    got = unengaged(np.array([1, 1, 2, 2]), np.array([10, 11, 10, 12]), np.array([1, 2, 3]), np.array([10, 12, 10]))
    assert got.tolist() == [False, True, True, False]


def test_impression_negatives_come_from_the_users_own_recent_unengaged_impressions():
    corpus = np.array([11, 10, 12, 13])
    negs = ImpressionNegatives.build(np.array([1, 1, 1, 2]), np.array([10, 11, 12, 13]), np.array([100, 200, 300, 400]),
                                     np.array([1]), np.array([10]), corpus)  # user 1 engaged with post 10
    sampled = np.full((3, 2), -7)
    out = negs.replace(sampled, np.array([1, 2, 3]), np.array([[250, 150], [450, 390], [500, 500]]), 100,
                       np.random.default_rng(0))
    # user 1 at 250: post 11 (corpus index 0) served at 200; at 150 only the engaged post 10 -> sampled stays
    # user 2 at 450: post 13 (index 3) served at 400; at 390 nothing served yet; user 3 has no impressions
    assert out.tolist() == [[0, -7], [3, -7], [-7, -7]]
    for _ in range(20):  # never a post served after the reference time or before the window
        row = negs.replace(np.full((1, 4), -1), np.array([1]), np.array([[320, 320, 320, 320]]), 150,
                           np.random.default_rng(_))
        assert set(row.ravel().tolist()) <= {0, 2}  # posts 11 (t=200) and 12 (t=300), not 10 (engaged)


def test_a_seen_report_narrows_its_feed_to_what_was_on_screen_and_unreported_feeds_follow_the_setting():
    from xserve.schema import FeedSeen

    reported = feed_impressions("r-7", 7, NOW, [cand(1), cand(2), cand(3), cand(4)])
    silent = feed_impressions("s-7", 7, NOW, [cand(5), cand(6)])
    reports = [FeedSeen("r-7", 7, NOW + 1, (3, 1)),  # screen order: 3 above 1
               FeedSeen("r-7", 7, NOW + 2, (2, 99), first_position=2),  # the next chunk; 99 was never served
               FeedSeen("lost-7", 7, NOW + 3, (8,))]  # a feed whose record is not in the log
    feeds, counts = seen_feeds([reports[0], reported, silent, *reports[1:]])  # a report may precede its feed
    assert [(i.post_id, i.position) for i in feeds[0].impressions] == [(3, 0), (1, 1), (2, 2)]
    assert feeds[0].impressions[0].scores.favorite == 0.5  # the served predictions are kept
    assert feeds[1] == silent  # no report: every served post ("served", the default)
    assert counts == {"feeds": 2, "reported_feeds": 1, "served_impressions": 6, "seen_impressions": 3,
                      "seen_unmatched": 2}
    skipped, _ = seen_feeds([reported, silent, *reports], unreported="skip")
    assert [f.request_id for f in skipped] == ["r-7"]
    assert impression_arrays(skipped)["post_id"].tolist() == [3, 1, 2]


def test_the_shard_logs_seen_reports_beside_the_feeds_and_reopens(tmp_path):
    from xserve.schema import FeedSeen, Served

    cfg, shard = one_shard_holding_user_7(tmp_path)
    shard.record_served(Served(7, (1, 2), NOW), feed_impressions("r", 7, NOW, [cand(1), cand(2)]))
    assert shard.record_seen([FeedSeen("r", 7, NOW, (2,))])
    assert shard.stats()["impression_log"]["seen_reports"] == 1
    shard.close()
    reopened = UserShard.open(cfg, 0, 1)  # an old log of feeds only still reads: the records are tagged
    records = list(read_impression_records(DataDirLayout(tmp_path).impression_logs))
    assert [type(r).__name__ for r in records] == ["FeedImpressions", "FeedSeen"]
    assert [f.request_id for f in read_impressions(DataDirLayout(tmp_path).impression_logs)] == ["r"]
    reopened.close()
    off = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path / "off"), "fsync": False},
                                             "loop": {"log_impressions": False}})
    unlogged = UserShard.open(off, 0, 1)
    assert not unlogged.record_seen([FeedSeen("r", 7, NOW, (2,))])  # the API answers 409
    unlogged.close()
