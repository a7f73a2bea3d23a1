"""RetrievalShard actor and the Retrieval deployment on the shared local Ray cluster (wiring only)."""

from __future__ import annotations

import socket
import time

import msgspec
import numpy as np
import pytest

from tests.retrieval.factories import (
    MAX_AGE_MS, NOW_MS, encoder, local_service, make_corpus, small_config, write_version,
)
from xserve.schema import HistoryItem, Post, PostEmbeddings, RetrievalRequest

pytestmark = pytest.mark.ray


def _request(corpus, i, k=30, exclude=frozenset(), now_ms=NOW_MS):
    hist = tuple(
        HistoryItem(post_id=int(corpus["post_id"][j]), author_id=int(corpus["author_id"][j]), actions=frozenset(), timestamp_ms=NOW_MS)
        for j in range(i, i + 3)
    )
    return RetrievalRequest(user_id=i + 1, history=hist, max_results=k, exclude_ids=exclude, now_ms=now_ms)


def test_shard_actor_search_upsert_delete_and_maintenance(ray_cluster, tmp_path):
    from xserve.actors.retrieval import RetrievalShard

    ray = ray_cluster
    config = small_config(num_shards=1, maintenance_interval_s=0.2)
    corpus = make_corpus(500)
    write_version(tmp_path, "v1", corpus, config)
    actor = RetrievalShard.options(max_concurrency=2).remote(str(tmp_path), 0, msgspec.to_builtins(config), MAX_AGE_MS)
    try:
        new = make_corpus(3, seed=5, first_id=90_000)
        now = int(time.time() * 1000)
        new["created_at_ms"][:] = now
        rows = PostEmbeddings(new["post_id"], new["author_id"], new["created_at_ms"], new["vector"], "m")
        assert ray.get(actor.upsert.remote(rows)) == 3
        hits = ray.get(actor.search.remote(new["vector"][0], 5, now))
        assert hits.post_ids[0] == new["post_id"][0] and hits.version == "v1"
        ray.get(actor.delete.remote([int(new["post_id"][0])]))
        assert new["post_id"][0] not in ray.get(actor.search.remote(new["vector"][0], 5, now)).post_ids
        time.sleep(0.8)
        stats = ray.get(actor.stats.remote())
        assert stats["maintenance_runs"] >= 1 and stats["maintenance_errors"] == 0
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


def test_retrieval_deployment_matches_in_process_service(ray_cluster, tmp_path):
    from ray import serve

    from xserve.deployments.clients import RetrievalHandleClient
    from xserve.deployments.retrieval import Retrieval

    config = small_config(num_shards=2, embedding_dim=32)
    corpus = make_corpus(1200)
    write_version(tmp_path, "v1", corpus, config)
    app = Retrieval.bind(str(tmp_path), msgspec.to_builtins(config), MAX_AGE_MS)
    # _local_testing_mode cannot run @serve.batch in Ray 2.60 (it asks for a replica context), so a
    # real app: no HTTP route, and the proxy on a free port in case 8000 is taken
    serve.start(http_options={"port": _free_port()})
    handle = serve.run(app, name="retrieval-test", route_prefix=None)
    service = local_service(tmp_path, config, user_encoder=_synthetic_user_encoder(config))
    try:
        # the deployment's default encoder is the synthetic one at config.embedding_dim
        for i in (0, 40, 80):
            req = _request(corpus, i, exclude=frozenset({int(corpus["post_id"][i])}))
            got = handle.retrieve.remote(req).result()
            want = service.retrieve_sync(req)
            assert [p.post_id for p in got] == [p.post_id for p in want]
            assert int(corpus["post_id"][i]) not in {p.post_id for p in got}

        # many concurrent requests share user-tower batches
        responses = [handle.retrieve.remote(_request(corpus, i)) for i in range(12)]
        assert all(len(r.result()) == 30 for r in responses)

        # live path: created → searchable within a flush; deleted → gone at once
        now = int(time.time() * 1000)
        posts = [Post(post_id=70_000 + j, author_id=3, created_at_ms=now) for j in range(3)]
        assert handle.posts_created.remote(posts).result() == 3
        time.sleep(config.flush_age_s * 4)
        handle.flush.remote().result()  # waits for a flush the timer started (its upserts may be slow under load)
        def top1(post_id: int) -> int:  # a user whose history is one post is that post's vector
            probe = RetrievalRequest(
                user_id=9, history=(HistoryItem(post_id, 3, frozenset(), now),), max_results=5, now_ms=now
            )
            return handle.retrieve.remote(probe).result()[0].post_id

        assert [top1(p.post_id) for p in posts] == [p.post_id for p in posts]
        handle.posts_deleted.remote([70_000]).result()
        assert top1(70_000) != 70_000
        stats = handle.stats.remote().result()
        assert stats["version"] == "v1" and stats["user_batches"] >= 1
        assert sum(s["upserted"] for s in stats["shards"]) == 3
        adapter = RetrievalHandleClient(handle)
        assert "Retrieval" in repr(adapter)
    finally:
        service.close()
        serve.delete("retrieval-test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _synthetic_user_encoder(config):
    from xserve.retrieval.encoders import load_encoders

    return load_encoders(config)[0]


def test_a_dead_shard_is_left_out_of_the_merge_and_all_dead_is_an_error(ray_cluster, tmp_path):
    from ray import serve

    from xserve.actors.naming import ActorNames
    from xserve.deployments.retrieval import Retrieval
    from xserve.sharding import shard_array

    config = small_config(num_shards=2, embedding_dim=32)
    corpus = make_corpus(600)
    write_version(tmp_path, "v1", corpus, config)
    serve.start(http_options={"port": _free_port()})
    handle = serve.run(Retrieval.bind(str(tmp_path), msgspec.to_builtins(config), MAX_AGE_MS), name="retrieval-dead", route_prefix=None)
    try:
        req = _request(corpus, 0)
        both = [p.post_id for p in handle.retrieve.remote(req).result()]
        assert set(shard_array(np.array(both), 2).tolist()) == {0, 1}
        ray_cluster.kill(_named_actor(ray_cluster, ActorNames.of(tmp_path).retrieval_shard(1)), no_restart=True)
        survivors = [p.post_id for p in handle.retrieve.remote(req).result()]
        assert survivors and set(shard_array(np.array(survivors), 2).tolist()) == {0}
        from_shard_0 = [p for p in both if shard_array(np.array([p]), 2)[0] == 0]
        assert survivors[: len(from_shard_0)] == from_shard_0  # shard 0's best, as before, then more of it
        ray_cluster.kill(_named_actor(ray_cluster, ActorNames.of(tmp_path).retrieval_shard(0)), no_restart=True)
        with pytest.raises(Exception, match="no retrieval shard answered"):
            handle.retrieve.remote(req).result()
    finally:
        serve.delete("retrieval-dead")


def _named_actor(ray, name: str):
    """The actor named ``name`` in whichever namespace the replica that created it runs."""
    (info,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == name]
    return ray.get_actor(name, namespace=info["namespace"])
