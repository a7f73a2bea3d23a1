"""scripts/backfill_embeddings.py end to end on a tiny dataset, and queries during a version switch."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.backfill_embeddings import main
from tests.retrieval.factories import (
    MAX_AGE_MS, NOW_MS, exact, local_service, make_corpus, queries, recall, small_config, write_version,
)
from xserve.retrieval.encoders import load_encoders
from xserve.storage.lance.embeddings import EmbeddingVersions


def _write_posts(path, corpus):
    replies = pa.array([int(p) - 1 if p % 3 == 0 else None for p in corpus["post_id"]], pa.int64())  # nullable, as in the posts table
    pq.write_table(
        pa.table({"post_id": corpus["post_id"], "author_id": corpus["author_id"], "created_at_ms": corpus["created_at_ms"],
                  "in_reply_to_post_id": replies, "text": ["hi"] * len(corpus["post_id"])}),
        path,
    )


def _config_file(tmp_path, config):
    path = tmp_path / "xserve.toml"
    path.write_text(
        "[retrieval]\n"
        f"num_shards = {config.num_shards}\nembedding_dim = {config.embedding_dim}\n"
        f"index_min_rows = {config.index_min_rows}\nrows_per_partition = {config.rows_per_partition}\n"
        f"nprobes = {config.nprobes}\n[mixer]\nmax_post_age_ms = {MAX_AGE_MS}\n"
    )
    return path


@pytest.mark.ray
def test_backfill_end_to_end_while_serving(ray_cluster, tmp_path, capsys):
    config = small_config(num_shards=2, version_poll_s=0.0)
    data = tmp_path / "data"
    corpus = make_corpus(1500, max_age_frac=1.3)  # ~23% past the max age: skipped
    write_version(data, "old", corpus, config)  # serving: another model's vectors
    _write_posts(tmp_path / "posts.parquet", corpus)
    (data / "embeddings" / "vnew").mkdir()  # a crashed earlier attempt
    (data / "embeddings" / "vnew" / "junk").write_text("half-written")

    service = local_service(data, config)
    qs = queries(corpus, 4)
    observed: list[tuple[int, tuple[int, ...]]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def serve_queries():
        i = 0
        while not done.is_set():
            try:
                q = i % len(qs)
                observed.append((q, tuple(service.search_vector(qs[q], 20, NOW_MS).post_ids.tolist())))
            except BaseException as exc:  # any error during the switch fails the test
                errors.append(exc)
            i += 1

    thread = threading.Thread(target=serve_queries)
    thread.start()
    try:
        argv = ["--data-dir", str(data), "--posts", str(tmp_path / "posts.parquet"), "--version", "new",
                "--config", str(_config_file(tmp_path, config)), "--now-ms", str(NOW_MS), "--batch-size", "400",
                "--concurrency", "1", "--quiet"]
        assert main(argv) == 0
        seen_after = len(observed)
        while len(observed) < seen_after + 4:  # some queries after the switch
            done.wait(0.01)
    finally:
        done.set()
        thread.join()
    assert not errors, errors[:1]
    fresh = corpus["created_at_ms"] >= NOW_MS - MAX_AGE_MS
    out = capsys.readouterr().out
    assert f"{int(fresh.sum())} rows" in out and "switched" in out

    versions = EmbeddingVersions(data)
    assert versions.current_name() == "new" and not (data / "embeddings" / "vnew" / "junk").exists()
    assert versions.manifest("old") is not None, "the previous version is kept"
    stored = {}
    for s in range(config.num_shards):
        t = versions.open_shard("new", s, config).read_all(["post_id", "in_reply_to_post_id"]).to_pydict()
        stored.update(zip(t["post_id"], t["in_reply_to_post_id"]))
    assert stored == {int(p): (int(p) - 1 if p % 3 == 0 else 0) for p in corpus["post_id"][fresh]}

    # every answer during the backfill is exactly the old version's or the new one's, never a mix
    expected = {
        v: [tuple(service.search_vector(q, 20, NOW_MS, version=v).post_ids.tolist()) for q in qs] for v in ("old", "new")
    }
    assert expected["old"] != expected["new"]
    kinds = set()
    for q, ids in observed:
        assert ids in (expected["old"][q], expected["new"][q])
        kinds.add("old" if ids == expected["old"][q] else "new")
    assert kinds == {"old", "new"}

    # the new version holds the tower's vectors for exactly the fresh posts
    _, post_encoder, _ = load_encoders(config)
    new_corpus = {k: v[fresh] for k, v in corpus.items()}
    new_corpus["vector"] = post_encoder.encode_posts(new_corpus["post_id"], new_corpus["author_id"])
    rs = [recall(np.array(service.search_vector(q, 20, NOW_MS).post_ids), exact(new_corpus, q, 20).post_ids) for q in qs]
    assert np.mean(rs) >= 0.9
    service.close()

    # re-running the finished version is a no-op
    assert main(argv) == 0
    assert "already current" in capsys.readouterr().out


def test_backfill_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path), "--posts", str(tmp_path / "missing.parquet"), "--quiet"])
    assert exc.value.code == 2
    assert "backfill_embeddings: error: --posts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tmp_path), "--version", "../x", "--posts", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:  # nothing written where no server reads
        main(["--data-dir", str(tmp_path / "nowhere"), "--quiet"])
    assert exc.value.code == 2 and "no data directory at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_posts_created_through_the_api_are_re_embedded_unless_deleted(tmp_path):
    """The catalog's logs hold the posts written since seeding: the backfill reads them beside the posts table
    (``accepted_posts``, the one reader training uses too)."""
    from scripts.backfill_embeddings import POST_COLUMNS, REPLY_COLUMN
    from xserve.loop.live_data import accepted_posts
    from xserve.posts.catalog import CatalogEvent
    from xserve.schema import Post, PostCreated, PostDeleted
    from xserve.storage import DataDir
    from xserve.storage.lance.tables import posts_to_table
    from xserve.storage.layout import DataDirLayout
    from xserve.storage.log.event_log import EventLog

    DataDir(tmp_path, fsync=False).write_posts(posts_to_table(
        [Post(post_id=p, author_id=8, created_at_ms=NOW_MS - 5) for p in (4, 9)]))
    log = EventLog(DataDirLayout(tmp_path).catalog_log(0, 1), writer=True, fsync=False, event_type=CatalogEvent)
    log.append([PostCreated(Post(post_id=p, author_id=7, created_at_ms=NOW_MS, text="hi",
                                 in_reply_to_post_id=5 if p == 3 else None)) for p in (1, 2, 3, 4)], NOW_MS)
    log.append([PostDeleted(post_id=2, deleted_at_ms=NOW_MS), PostDeleted(post_id=9, deleted_at_ms=NOW_MS)], NOW_MS)
    log.close()
    got, counts = accepted_posts(tmp_path, POST_COLUMNS + [REPLY_COLUMN])
    assert got.to_pylist() == [
        {"post_id": 4, "author_id": 8, "created_at_ms": NOW_MS - 5, "in_reply_to_post_id": None},  # the table's
        {"post_id": 1, "author_id": 7, "created_at_ms": NOW_MS, "in_reply_to_post_id": None},
        {"post_id": 3, "author_id": 7, "created_at_ms": NOW_MS, "in_reply_to_post_id": 5},
    ]
    assert counts == {"table": 1, "live": 2, "deleted": 1}
    (tmp_path / "none").mkdir()
    assert accepted_posts(tmp_path / "none")[0] is None  # no posts at all
