"""RetrievalFanout: the fan-out agrees with exact search over the whole corpus, and leaves out a shard that fails."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.retrieval.factories import (
    NOW_MS, encoder, exact, local_searchers, local_service, make_corpus, recall, small_config, write_version,
)
from xserve.retrieval.fanout import NoShardAnswered, RetrievalFanout
from xserve.retrieval.merge import merge_top_k
from xserve.schema import HistoryItem, RetrievalRequest
from xserve.sharding import shard_array
from xserve.storage.lance.embeddings import EmbeddingVersions


def _request(corpus, i, k=50, exclude=frozenset()):
    hist = tuple(
        HistoryItem(post_id=int(corpus["post_id"][j]), author_id=int(corpus["author_id"][j]), actions=frozenset(), timestamp_ms=NOW_MS)
        for j in range(i, i + 4)
    )
    return RetrievalRequest(user_id=i + 1, history=hist, max_results=k, exclude_ids=exclude, now_ms=NOW_MS)


def test_fanout_recall_and_exclusions(tmp_path):
    config = small_config(num_shards=3)
    corpus = make_corpus(2400)
    write_version(tmp_path, "v1", corpus, config)
    service = local_service(tmp_path, config)
    try:
        recalls = []
        for i in range(0, 200, 20):
            req = _request(corpus, i)
            user = encoder().encode_users([req])[0]
            truth = exact(corpus, user, 50).post_ids
            got = asyncio.run(service.retrieve(req))
            assert [p.score for p in got] == sorted((p.score for p in got), reverse=True)
            recalls.append(recall(np.array([p.post_id for p in got]), truth))
            excluded = frozenset(int(p) for p in truth[:20])
            again = service.retrieve_sync(_request(corpus, i, exclude=excluded))
            assert len(again) == 50 and not excluded & {p.post_id for p in again}
        assert np.mean(recalls) >= 0.9
    finally:
        service.close()


def test_max_results_zero_means_config_top_k(tmp_path):
    config = small_config(num_shards=2, top_k=7)
    corpus = make_corpus(100)
    write_version(tmp_path, "v1", corpus, config)
    service = local_service(tmp_path, config)
    try:
        assert len(service.retrieve_sync(_request(corpus, 0, k=0))) == 7
    finally:
        service.close()


def test_async_quota_fanout_equals_sync_full_k_fanout(tmp_path):
    """The fast fan-out (each shard's quota, awaited on one loop) returns the same hits as the previous one
    (each shard's sync search of the full k, merged), and retrieve on the caller's loop matches retrieve_sync."""
    config = small_config(num_shards=3)
    corpus = make_corpus(3000)
    write_version(tmp_path, "v1", corpus, config)
    service = local_service(tmp_path, config)
    try:
        for i in range(0, 100, 25):
            req = _request(corpus, i, k=120)
            user = encoder().encode_users([req])[0]
            fast = service.search_vector(user, 120, NOW_MS)
            slow = merge_top_k([s.search(user, 120, NOW_MS) for s in service.shards], 120)
            np.testing.assert_array_equal(fast.post_ids, slow.post_ids)
            np.testing.assert_array_equal(fast.author_ids, slow.author_ids)
            np.testing.assert_array_equal(fast.scores, slow.scores)
            assert asyncio.run(service.retrieve(req)) == service.retrieve_sync(req)
    finally:
        service.close()


class DeadShard:
    """A shard whose actor is gone: every search raises."""

    async def search_async(self, vector, k, now_ms, exclude_ids=(), version=None):
        raise ConnectionError("retrieval shard actor died")


def test_a_shard_that_fails_is_left_out_and_none_answering_is_an_error(tmp_path):
    config = small_config(num_shards=2)
    corpus = make_corpus(600)
    write_version(tmp_path, "v1", corpus, config)
    searchers = local_searchers(tmp_path, config)
    current = EmbeddingVersions(tmp_path).current_name
    both, one, none = (
        RetrievalFanout(shards, encoder(), config, current)
        for shards in (searchers, [searchers[0], DeadShard()], [DeadShard(), DeadShard()])
    )
    try:
        req = _request(corpus, 0)
        full = [p.post_id for p in both.retrieve_sync(req)]
        assert set(shard_array(np.array(full), 2).tolist()) == {0, 1}
        survivors = [p.post_id for p in one.retrieve_sync(req)]
        assert survivors and set(shard_array(np.array(survivors), 2).tolist()) == {0}
        from_shard_0 = [p for p in full if shard_array(np.array([p]), 2)[0] == 0]
        assert survivors[: len(from_shard_0)] == from_shard_0  # shard 0's best, as with both, then more of it
        assert (both.shards_left_out, one.shards_left_out) == ([0, 0], [0, 1])
        with pytest.raises(NoShardAnswered, match="no retrieval shard answered"):
            none.retrieve_sync(req)
        assert none.shards_left_out == [1, 1]
    finally:
        for fanout in (both, one, none):
            fanout.close()
