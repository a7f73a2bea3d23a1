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
