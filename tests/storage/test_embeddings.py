"""EmbeddingShard and EmbeddingVersions against real LanceDB tables in tmp_path."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from tests.retrieval.factories import DIM, NOW_MS, exact, make_corpus, queries, recall, small_config, write_version
from xserve.storage.lance.embeddings import EmbeddingShard, EmbeddingVersions, VersionError


def _shard(tmp_path, **cfg) -> EmbeddingShard:
    return EmbeddingShard.open(tmp_path / "v1", 0, DIM, small_config(**cfg), create=True)


def _put(shard: EmbeddingShard, c: dict, rows=slice(None), upsert=False) -> int:
    fn = shard.upsert if upsert else shard.append
    return fn(c["post_id"][rows], c["author_id"][rows], c["created_at_ms"][rows], c["vector"][rows], "m1")


@pytest.mark.parametrize("index_type", ["IVF_FLAT", "IVF_PQ"])
def test_ann_recall_against_brute_force(tmp_path, index_type):
    corpus = make_corpus(3000)
    shard = _shard(tmp_path, index_type=index_type, pq_sub_vectors=8, refine_factor=5)
    _put(shard, corpus)
    assert shard.build_index()
    recalls = []
    for q in queries(corpus, 20):
        got = shard.search(q, 50)
        truth = exact(corpus, q, 50)
        recalls.append(recall(got["post_id"], truth.post_ids))
        assert np.all(np.diff(got["score"]) <= 1e-6), "results are best first"
    assert np.mean(recalls) >= 0.9


def test_scores_are_cosine(tmp_path):
    corpus = make_corpus(200)
    shard = _shard(tmp_path)
    _put(shard, corpus)
    q = queries(corpus, 1)[0]
    got = shard.search(q, 5)
    by_id = dict(zip(corpus["post_id"].tolist(), corpus["vector"]))
    np.testing.assert_allclose(got["score"], [by_id[p] @ q for p in got["post_id"]], atol=1e-4)


def test_unindexed_rows_are_searched(tmp_path):
    corpus = make_corpus(1200)
    shard = _shard(tmp_path)
    _put(shard, corpus, slice(0, 1000))
    assert shard.build_index()
    _put(shard, corpus, slice(1000, None))  # after the index: unindexed fragment
    assert shard.num_unindexed_rows() == 200
    for i in (1000, 1100, 1199):
        got = shard.search(corpus["vector"][i], 1)
        assert got["post_id"][0] == corpus["post_id"][i]


def test_upsert_dedupes_batch_and_replaces_rows(tmp_path):
    corpus = make_corpus(10)
    shard = _shard(tmp_path)
    _put(shard, corpus, upsert=True)
    new_vec = corpus["vector"][::-1].copy()  # post i gets another post's vector
    ids = np.concatenate([corpus["post_id"], corpus["post_id"][:3]])  # duplicate keys in one batch: last wins
    vecs = np.concatenate([corpus["vector"], new_vec[:3]])
    n = shard.upsert(ids, np.ones(13, np.int64), np.full(13, NOW_MS), vecs, "m2")
    assert n == 10 and shard.num_rows() == 10
    table = shard.read_all().to_pydict()
    row = {p: v for p, v in zip(table["post_id"], table["vector"])}
    np.testing.assert_allclose(row[int(corpus["post_id"][0])], new_vec[0], atol=1e-6)
    assert set(table["model_version"]) == {"m2"}


def test_delete_and_trim(tmp_path):
    corpus = make_corpus(100)
    shard = _shard(tmp_path)
    _put(shard, corpus)
    shard.delete(corpus["post_id"][:10])
    assert shard.num_rows() == 90
    cutoff = int(np.median(corpus["created_at_ms"]))
    removed = shard.trim(cutoff)
    left = shard.read_all(["post_id", "created_at_ms"]).to_pydict()
    assert removed > 0 and min(left["created_at_ms"]) >= cutoff
    assert not set(left["post_id"]) & set(corpus["post_id"][:10].tolist())


def test_bad_vectors_rejected(tmp_path):
    shard = _shard(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        shard.append([1], [1], [NOW_MS], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="finite"):
        shard.append([1], [1], [NOW_MS], np.full((1, DIM), np.nan, np.float32))


def test_maintain_builds_then_folds_in(tmp_path):
    corpus = make_corpus(1000)
    shard = _shard(tmp_path, reindex_growth=2.0)
    _put(shard, corpus, slice(0, 500))
    assert shard.maintain(None)["retrained"] == 1
    _put(shard, corpus, slice(500, 700))  # grew 1.4x: fold into the existing index
    r = shard.maintain(None)
    assert r["retrained"] == 0 and shard.num_unindexed_rows() == 0
    _put(shard, corpus, slice(700, None))  # 2x since training: retrain
    assert shard.maintain(None)["retrained"] == 1


# ---------------------------------------------------------------------- versions


def test_version_switch_requires_complete_and_is_atomic(tmp_path):
    cfg = small_config()
    versions = EmbeddingVersions(tmp_path)
    assert versions.current() is None
    versions.begin("a")
    with pytest.raises(VersionError, match="not complete"):
        versions.switch("a")
    write_version(tmp_path, "b", make_corpus(50), cfg)
    assert versions.current_name() == "b"
    assert json.loads((tmp_path / "embeddings" / "CURRENT").read_text())["num_shards"] == cfg.num_shards
    assert not list((tmp_path / "embeddings").glob(".CURRENT.tmp*"))


def test_begin_discards_half_written_and_refuses_complete(tmp_path):
    cfg = small_config()
    versions = EmbeddingVersions(tmp_path)
    vdir = versions.begin("x")
    (vdir / "junk").write_text("crash")
    versions.begin("x")
    assert not (vdir / "junk").exists()
    write_version(tmp_path, "y", make_corpus(20), cfg)
    with pytest.raises(VersionError, match="already complete"):
        versions.begin("y")
    with pytest.raises(VersionError, match="letters, digits"):
        versions.begin("../etc")


def test_prune_keeps_current_and_previous(tmp_path):
    cfg = small_config()
    for v in ("v1", "v2", "v3"):
        write_version(tmp_path, v, make_corpus(20), cfg)
    versions = EmbeddingVersions(tmp_path)
    versions.begin("half")  # a backfill in progress is never pruned
    assert versions.prune(keep=2) == ["v1"]
    assert versions.list_versions() == ["half", "v2", "v3"]


def test_retrain_rule_survives_reopen(tmp_path):
    corpus = make_corpus(1000)
    config = small_config(reindex_growth=2.0)
    shard = _shard(tmp_path, reindex_growth=2.0)
    _put(shard, corpus, slice(0, 500))
    shard.build_index()
    _put(shard, corpus, slice(500, 700))
    shard.maintain(None)  # folds 200 rows in: indexed 700, trained on 500
    reopened = EmbeddingShard.open(tmp_path / "v1", 0, DIM, config)
    _put(reopened, corpus, slice(700, None))
    assert reopened.maintain(None)["retrained"] == 1, "1000 rows = 2x the 500 trained on"
    assert [i.name for i in reopened._table.list_indices() if "vector" in i.columns] == ["vector_ivf_1000"]


def test_row_meta_and_async_search_agree_with_table_columns(tmp_path):
    """The fast path (post_id from LanceDB, the rest from RowMeta; the async query) returns exactly what
    reading every column from the table returns, also after writes that follow the RowMeta's build."""
    corpus = make_corpus(1500)
    shard = _shard(tmp_path)
    _put(shard, corpus, slice(0, 1200))
    assert shard.build_index()
    q = queries(corpus, 6)
    shard.search(q[0], 10)  # builds the RowMeta: the writes below must keep it in step
    _put(shard, corpus, slice(1200, None), upsert=True)  # new rows
    moved = corpus["post_id"][:50]
    shard.upsert(moved, moved + 7, np.full(50, NOW_MS), corpus["vector"][:50], "m2", replies=moved - 1)  # replaced rows
    shard.delete(corpus["post_id"][50:80])
    shard.trim(int(np.quantile(corpus["created_at_ms"], 0.2)))
    slow = EmbeddingShard.open(tmp_path / "v1", 0, DIM, small_config(row_meta_in_memory=False))
    for v in q:
        want = slow.search(v, 200)
        for got in (shard.search(v, 200), asyncio.run(shard.search_async(v, 200))):
            assert got.keys() == want.keys()
            for col in want:
                np.testing.assert_array_equal(got[col], want[col], err_msg=col)
    assert shard.meta_misses == 0
