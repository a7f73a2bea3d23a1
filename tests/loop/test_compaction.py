"""``xserve compact``: the user logs folded and rewritten, a reopened shard unchanged, expired segments gone."""

from __future__ import annotations

from xserve.clock import HOUR_MS
from xserve.config import load_config
from xserve.loop.compaction import compact, recover
from xserve.schema import Action, EdgeKind, EdgeSet, Engagement, EngagementRecorded, MutedKeywordsSet, Served
from xserve.storage import DataDir
from xserve.storage.layout import DataDirLayout
from xserve.users.shard import UserShard

NOW = 1_800_000_000_000


def test_compaction_folds_engagements_drops_old_served_keeps_the_rest_and_a_reopened_shard_is_unchanged(tmp_path):
    dd = DataDir(tmp_path, fsync=False)
    dd.write_users({"user_id": [7, 8], "screen_name": ["a", "b"], "followers_count": [0, 0], "created_at_ms": [1, 1]})
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False},
                                             "serving": {"num_user_shards": 1}, "loop": {"log_impressions": False}})
    shard = UserShard.open(cfg, 0, 1)
    events = [EngagementRecorded(Engagement(7, 100 + i, 8, Action.FAVORITE, NOW + i)) for i in range(50)]
    shard.apply(events)
    shard.apply([EdgeSet(7, 8, EdgeKind.FOLLOW), MutedKeywordsSet(7, ("spoiler",))])
    shard.apply([Served(7, (1, 2), NOW - 100 * HOUR_MS)], checked=True)  # long expired
    shard.apply([Served(7, (3,), NOW + 60)], checked=True)
    before = shard.query_data(7, 100)
    shard.close()
    log_dir = DataDirLayout(tmp_path).user_log(0, 1)
    size_before = sum(f.stat().st_size for f in log_dir.glob("*.seg"))

    report = compact(cfg, NOW + 100)
    assert report.counts["user_log_engagements_folded"] == 50 and report.counts["user_log_served_dropped"] == 1
    assert dd.count("engagements") == 50
    assert sum(f.stat().st_size for f in log_dir.glob("*.seg")) < size_before / 3
    reopened = UserShard.open(cfg, 0, 1, clock_ms=lambda: NOW + 100)
    after = reopened.query_data(7, 100)
    assert after.history == before.history and after.features == before.features
    assert after.served_ids == (3,)
    reopened.close()
    assert compact(cfg, NOW + 100).counts["user_log_engagements_folded"] == 0  # nothing left to fold
    assert dd.count("engagements") == 50


def test_a_log_held_by_a_running_shard_is_left_alone_and_said_so(tmp_path):
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False},
                                             "serving": {"num_user_shards": 1}})
    shard = UserShard.open(cfg, 0, 1)  # holds its log's and its impression log's locks, as while serving
    report = compact(cfg, NOW)
    assert any("held by the running app" in s for s in report.skipped)
    shard.close()


def test_recover_finishes_a_swap_cut_off_between_its_renames(tmp_path):
    (tmp_path / ".compact-shard-0-of-1").mkdir()
    (tmp_path / ".old-shard-0-of-1").mkdir()  # the old log was moved away, the new one not yet in place
    (tmp_path / ".compact-shard-1-of-2").mkdir()
    (tmp_path / "shard-1-of-2").mkdir()  # the rewrite had not been swapped: the old log stays
    recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0-of-1", "shard-1-of-2"]


def test_compaction_keeps_the_request_id_and_migrates_a_table_written_without_the_column(tmp_path):
    import lancedb
    import pyarrow as pa

    from xserve.storage.lance.tables import ENGAGEMENTS_SCHEMA

    dd = DataDir(tmp_path, fsync=False)
    dd.write_users({"user_id": [7, 8], "screen_name": ["a", "b"], "followers_count": [0, 0], "created_at_ms": [1, 1]})
    old = pa.schema([f for f in ENGAGEMENTS_SCHEMA if f.name != "prediction_request_id"])  # before the column
    lancedb.connect(tmp_path).create_table("engagements", data=pa.Table.from_pylist(
        [{"user_id": 7, "post_id": 99, "author_id": 8, "action": "favorite", "timestamp_ms": NOW - 1, "dwell_ms": 0,
          "product_surface": 1, "post_created_at_ms": None}], schema=old))
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False},
                                             "serving": {"num_user_shards": 1}, "loop": {"log_impressions": False}})
    shard = UserShard.open(cfg, 0, 1)
    shard.apply([EngagementRecorded(Engagement(7, 100, 8, Action.FAVORITE, NOW, prediction_request_id="req-1"))])
    shard.close()

    assert compact(cfg, NOW + 100).counts["user_log_engagements_folded"] == 1
    folded = dd.read_engagements(columns=["post_id", "prediction_request_id"]).to_pylist()
    assert folded == [{"post_id": 99, "prediction_request_id": None}, {"post_id": 100, "prediction_request_id": "req-1"}]


def test_expired_engagements_free_their_disk(tmp_path):
    """Retention deletes the engagements past ``loop.engagement_retention_ms`` and the table's files shrink with
    them (a LanceDB delete alone only marks rows)."""
    dd = DataDir(tmp_path, fsync=False)
    n = 20_000
    dd.write_engagements({"user_id": [7] * n, "post_id": list(range(1, n + 1)), "author_id": [8] * n,
                          "action": ["favorite"] * n, "timestamp_ms": [NOW - 100 * HOUR_MS] * (n - 10) + [NOW] * 10})
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False},
                                             "loop": {"engagement_retention_ms": HOUR_MS}})
    table_dir = DataDirLayout(tmp_path).table("engagements")
    size_before = sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file())
    report = compact(cfg, NOW + 100)
    assert report.counts["engagements_expired"] == n - 10 and dd.count("engagements") == 10
    assert sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file()) < size_before / 4


def test_catalog_logs_fold_into_the_posts_table_and_a_restarted_catalog_still_reads_every_acknowledged_post(tmp_path):
    """Segments older than the catalog's live window are folded (posts in, labels set, deletions out) and dropped,
    never past a consumer's watermark; a restarted shard and training read the same posts as before."""
    import json

    from xserve.actors.posts import open_catalog
    from xserve.loop.live_data import accepted_posts
    from xserve.schema import Post, PostCreated, PostDeleted, PostLabelsSet, VisibilityLabel
    from xserve.storage.lance.tables import posts_to_table

    layout = DataDirLayout(tmp_path)
    DataDir(tmp_path, fsync=False).write_posts(posts_to_table([Post(post_id=1, author_id=5, created_at_ms=NOW - 900 * HOUR_MS),
                                                               Post(post_id=2, author_id=5, created_at_ms=NOW - 900 * HOUR_MS)]))
    cfg = load_config(environ={}, overrides={"storage": {"data_dir": str(tmp_path), "fsync": False, "catalog_segment_bytes": 256}})
    old, new = NOW - 100 * HOUR_MS, NOW - HOUR_MS  # past the 48 h window, within it
    catalog, log, _, _ = open_catalog(cfg, 0, 1, old)
    writes = [[PostCreated(Post(post_id=p, author_id=6, created_at_ms=old, text=f"old {p}"))] for p in range(10, 20)]
    writes += [[PostLabelsSet(1, (VisibilityLabel.SPAM,))], [PostDeleted(2, old)], [PostDeleted(11, old)],
               [PostLabelsSet(12, (VisibilityLabel.SPAM,))]]
    for events in writes:
        log.append(events, old)  # acknowledged: in the log (256-byte segments: several of them)
    for events in ([PostCreated(Post(post_id=30, author_id=6, created_at_ms=new))], [PostDeleted(10, new)]):
        log.append(events, new)
    log.close()
    acknowledged = [1, 12, 13, 14, 15, 16, 17, 18, 19, 30]  # 2, 10, 11 deleted
    before, _ = accepted_posts(tmp_path)
    catalog_logs = sum(f.stat().st_size for f in layout.catalog_logs.rglob("*.seg"))

    layout.thunder_catalog_watermark.parent.mkdir(parents=True)
    layout.thunder_catalog_watermark.write_text(json.dumps({"offsets": {"shard-0-of-1": 3}}))
    held_back = compact(cfg, NOW)  # Thunder has read only 3 records: nothing past them goes
    assert held_back.counts["catalog_segments_dropped"] <= 3 and held_back.counts["catalog_posts_folded"] <= 3
    layout.thunder_catalog_watermark.write_text(json.dumps({"offsets": {"shard-0-of-1": 16}}))
    report = compact(cfg, NOW)
    assert report.counts["catalog_segments_dropped"] > 0
    # deleted: 2 (seeded) and 11 (created in the segments the held-back run folded); labelled: 1 (seeded)
    assert report.counts["catalog_posts_deleted"] == 2 and report.counts["catalog_labels_folded"] == 1
    assert sum(f.stat().st_size for f in layout.catalog_logs.rglob("*.seg")) < catalog_logs / 2

    restarted, log, _, _ = open_catalog(cfg, 0, 1, NOW)  # as the shard actor starts
    got = restarted.get([1, 2, 10, 11, 12, 13, 19, 30])
    assert sorted(got) == [1, 12, 13, 19, 30]
    assert got[1].labels == got[12].labels == (VisibilityLabel.SPAM,) and got[13].text == "old 13"
    assert log.next_offset == 16  # offsets count on: the consumers' watermarks still point at the same records
    log.close()
    after, counts = accepted_posts(tmp_path)
    assert sorted(after.column("post_id").to_pylist()) == sorted(before.column("post_id").to_pylist()) == acknowledged
    for posts in (before, after):  # labels as last set, from the log before and from the table after
        labels = dict(zip(posts.column("post_id").to_pylist(), posts.column("labels").to_pylist()))
        assert labels[1] == labels[12] == ["spam"] and labels[13] == []
    assert counts["live"] < 10  # most now come from the table
