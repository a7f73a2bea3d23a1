"""ShardSearcher on real LanceDB tables: recency rule, exclusions, deletes, upserts, versions."""

from __future__ import annotations

import numpy as np
import pytest

from tests.retrieval.factories import (
    MAX_AGE_MS, NOW_MS, exact, local_searchers, make_corpus, queries, recall, small_config, write_version,
)
from xserve.sharding import shard_array
from xserve.schema import PostEmbeddings
from xserve.storage.lance.embeddings import EmbeddingVersions


def _one_shard(tmp_path, corpus, **cfg):
    config = small_config(num_shards=1, **cfg)
    write_version(tmp_path, "v1", corpus, config)
    return local_searchers(tmp_path, config)[0]


def _rows(c, sl=slice(None)) -> PostEmbeddings:
    return PostEmbeddings(c["post_id"][sl], c["author_id"][sl], c["created_at_ms"][sl], c["vector"][sl], "m")


def test_search_matches_brute_force(tmp_path):
    corpus = make_corpus(2000)
    shard = _one_shard(tmp_path, corpus)
    rs = [recall(shard.search(q, 50, NOW_MS).post_ids, exact(corpus, q, 50).post_ids) for q in queries(corpus, 15)]
    assert np.mean(rs) >= 0.9


def test_recency_rule_never_returns_old_posts(tmp_path):
    # 60% of rows are past the max age (as right after a restart, before maintenance trims)
    corpus = make_corpus(1500, max_age_frac=2.5)
    shard = _one_shard(tmp_path, corpus)
    cutoff = NOW_MS - MAX_AGE_MS
    fresh = corpus["created_at_ms"] >= cutoff
    for q in queries(corpus, 10):
        hits = shard.search(q, 100, NOW_MS)
        assert len(hits) == 100, "the prefilter fallback fills k when stale rows crowd the window"
        assert (hits.created_at_ms >= cutoff).all()
        assert recall(hits.post_ids, exact(corpus, q, 100, fresh).post_ids) >= 0.6
    assert shard.counters["fallbacks"] > 0


def test_excluded_ids_never_returned(tmp_path):
    corpus = make_corpus(800)
    shard = _one_shard(tmp_path, corpus)
    q = queries(corpus, 1)[0]
    top = shard.search(q, 20, NOW_MS)
    excluded = set(top.post_ids[:10].tolist())
    again = shard.search(q, 20, NOW_MS, exclude_ids=excluded)
    assert len(again) == 20 and not excluded & set(again.post_ids.tolist())


def test_upsert_visible_and_delete_invisible_immediately(tmp_path):
    corpus = make_corpus(600)
    shard = _one_shard(tmp_path, corpus)
    new = make_corpus(5, seed=9, first_id=10_000)
    assert shard.upsert(_rows(new), NOW_MS) == 5
    for i in range(5):
        assert shard.search(new["vector"][i], 1, NOW_MS).post_ids[0] == new["post_id"][i]
    victim = int(new["post_id"][0])
    shard.delete([victim], NOW_MS)
    assert victim not in shard.search(new["vector"][0], 50, NOW_MS).post_ids
    assert shard.stats()["rows"] == 604, "deleted from the table too"
    assert shard.upsert(_rows(new, slice(0, 1)), NOW_MS) == 0, "a late upsert cannot resurrect a deleted post"


def test_replies_keep_their_parent(tmp_path):
    from xserve.retrieval.merge import hits_to_posts

    shard = _one_shard(tmp_path, make_corpus(300))
    new = make_corpus(2, seed=3, first_id=30_000)
    rows = PostEmbeddings(new["post_id"], new["author_id"], new["created_at_ms"], new["vector"], "m", np.array([77, 0]))
    shard.upsert(rows, NOW_MS)
    got = [hits_to_posts(shard.search(new["vector"][i], 1, NOW_MS))[0] for i in range(2)]
    assert [(p.post_id, p.in_reply_to_post_id) for p in got] == [(30_000, 77), (30_001, None)]


def test_upsert_refuses_posts_past_max_age(tmp_path):
    shard = _one_shard(tmp_path, make_corpus(100))
    old = make_corpus(4, first_id=50_000)
    old["created_at_ms"][:] = NOW_MS - MAX_AGE_MS - 1
    assert shard.upsert(_rows(old), NOW_MS) == 0
    assert shard.counters["refused_old"] == 4


def test_maintenance_trims_aged_out_rows(tmp_path):
    corpus = make_corpus(600)
    shard = _one_shard(tmp_path, corpus)
    later = NOW_MS + MAX_AGE_MS // 2  # half the posts age out
    shard.maintain(later)
    assert shard.stats()["rows"] == int((corpus["created_at_ms"] >= later - MAX_AGE_MS).sum())


def test_search_pins_the_requested_version(tmp_path):
    config = small_config(num_shards=2)
    old, new = make_corpus(300), make_corpus(300, encoder_seed=7)
    write_version(tmp_path, "old", old, config)
    write_version(tmp_path, "new", new, config, switch=False)
    shards = local_searchers(tmp_path, config)
    q = queries(old, 1)[0]
    owner0 = shard_array(old["post_id"], 2) == 0
    assert shards[0].search(q, 5, NOW_MS).version == "old"
    pinned = shards[0].search(q, 5, NOW_MS, version="new")
    assert pinned.version == "new"
    np.testing.assert_array_equal(pinned.post_ids, exact(new, q, 5, owner0).post_ids)
    EmbeddingVersions(tmp_path).switch("new")
    assert shards[0].search(q, 5, NOW_MS).version == "new"  # version_poll_s = 0: seen at once


def test_no_version_yet_returns_nothing(tmp_path):
    shard = local_searchers(tmp_path, small_config(num_shards=1))[0]
    assert len(shard.search(np.ones(32, np.float32) / np.sqrt(32), 10, NOW_MS)) == 0
    with pytest.raises(RuntimeError, match="no current embedding version"):
        shard.upsert(_rows(make_corpus(2)), NOW_MS)


def test_writes_make_a_light_maintenance_pass_due(tmp_path):
    corpus = make_corpus(600)
    shard = _one_shard(tmp_path, corpus, optimize_after_writes=3)
    new = make_corpus(6, seed=4, first_id=20_000)
    for i in range(3):
        assert not shard.maintenance_due()
        shard.upsert(_rows(new, slice(2 * i, 2 * i + 2)), NOW_MS)
    assert shard.maintenance_due()
    result = shard.maintain(NOW_MS, trim=False)
    assert result["trimmed"] == 0 and not shard.maintenance_due()
    assert shard.stats()["rows"] == 606
