"""RetrievalShard actor and the Retrieval deployment on the shared local Ray cluster (wiring only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from tests.conftest import actor_is_dead, free_port, wait_until
from tests.retrieval.factories import (
    MAX_AGE_MS, NOW_MS, encoder, local_service, make_corpus, small_config, write_version,
)
from xserve.config import RetrievalConfig
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
        stats = wait_until(lambda: (st := ray.get(actor.stats.remote()))["maintenance_runs"] >= 1 and st, 30,
                           "a maintenance pass of the shard's background thread")
        assert stats["maintenance_runs"] >= 1 and stats["maintenance_errors"] == 0
    finally:
        ray.get(actor.stop.remote())
        ray.kill(actor)


@dataclass
class Deployed:
    handle: Any  # the Retrieval deployment's handle
    data_dir: Path
    config: RetrievalConfig
    corpus: dict


@pytest.fixture(scope="module")
def deployed(ray_cluster, tmp_path_factory):
    """One Retrieval deployment over 1,200 posts in 2 shards for the tests below (the last one kills its shards)."""
    from ray import serve

    from xserve.deployments.retrieval import Retrieval

    data_dir = tmp_path_factory.mktemp("retrieval")
    config = small_config(num_shards=2, embedding_dim=32)
    corpus = make_corpus(1200)
    write_version(data_dir, "v1", corpus, config)
    app = Retrieval.bind(str(data_dir), msgspec.to_builtins(config), MAX_AGE_MS)
    # _local_testing_mode cannot run @serve.batch in Ray 2.60 (it asks for a replica context), so a
    # real app: no HTTP route, and the proxy on a free port in case 8000 is taken
    serve.start(http_options={"port": free_port()})
    handle = serve.run(app, name="retrieval-test", route_prefix=None)
    yield Deployed(handle, data_dir, config, corpus)
    serve.delete("retrieval-test")  # frees its replica's CPU for later tests


def test_retrieval_deployment_matches_in_process_service(deployed):
    from xserve.deployments.clients import RetrievalHandleClient

    handle, config, corpus = deployed.handle, deployed.config, deployed.corpus
    service = local_service(deployed.data_dir, config, user_encoder=_synthetic_user_encoder(config))
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

        def top1(post_id: int) -> int:  # a user whose history is one post is that post's vector
            probe = RetrievalRequest(
                user_id=9, history=(HistoryItem(post_id, 3, frozenset(), now),), max_results=5, now_ms=now
            )
            return handle.retrieve.remote(probe).result()[0].post_id

        # the indexer's timer flushes them within flush_age_s (a flush may be slow under load)
        wait_until(lambda: [top1(p.post_id) for p in posts] == [p.post_id for p in posts], 30,
                   "the created posts to be searchable after the timer's flush")
        handle.flush.remote().result()  # an explicit flush, with nothing left to write
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


def _synthetic_user_encoder(config):
    from xserve.retrieval.encoders import load_encoders

    return load_encoders(config)[0]


def test_a_dead_shard_is_left_out_of_the_merge_and_all_dead_is_an_error(ray_cluster, deployed):
    """Last in the module: it kills the shared deployment's shards."""
    from xserve.actors.naming import ActorNames
    from xserve.sharding import shard_array

    handle, names = deployed.handle, ActorNames.of(deployed.data_dir)
    req = _request(deployed.corpus, 0)
    both = [p.post_id for p in handle.retrieve.remote(req).result()]
    assert set(shard_array(np.array(both), 2).tolist()) == {0, 1}
    _kill(ray_cluster, names.retrieval_shard(1))
    survivors = [p.post_id for p in handle.retrieve.remote(req).result()]
    assert survivors and set(shard_array(np.array(survivors), 2).tolist()) == {0}
    from_shard_0 = [p for p in both if shard_array(np.array([p]), 2)[0] == 0]
    assert survivors[: len(from_shard_0)] == from_shard_0  # shard 0's best, as before, then more of it
    _kill(ray_cluster, names.retrieval_shard(0))
    with pytest.raises(Exception, match="no retrieval shard answered"):
        handle.retrieve.remote(req).result()


def _kill(ray, name: str) -> None:
    """Kill the actor named ``name`` (in whichever namespace the replica that created it runs) and wait until it is dead."""
    (info,) = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == name]
    actor = ray.get_actor(name, namespace=info["namespace"])
    ray.kill(actor, no_restart=True)
    wait_until(lambda: actor_is_dead(actor), 30, f"the killed actor {name} to be dead")
