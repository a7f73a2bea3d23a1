"""The Ranker deployment, on a real Serve replica and under local testing mode: batches concurrent users, same
scores as the runner, a bad request fails alone."""

from __future__ import annotations

import asyncio
import importlib

import pytest
from msgspec.structs import replace
from ray import serve

from tests.conftest import free_port
from tests.phoenix.rank_factories import history, make_request, tiny_ranker_config
from xserve.config import RankerServingConfig, XServeConfig
from xserve.deployments.clients import RankerHandleClient
from xserve.deployments.ranker import Ranker, ranker_options
from xserve.phoenix.serving.runner import RankerRunner


# This test must run before the local-mode one: calling a @serve.batch method in-process leaves a live
# batch queue (asyncio objects) in the class's batch wrapper, and the class then no longer pickles
# for a real replica ("cannot pickle '_asyncio.Future' object"). Production never calls it in-process.
@pytest.mark.ray
def test_on_the_cluster_concurrent_users_batch_and_match_the_runner(ray_cluster):
    """The same on a real Serve replica: the config crosses to the replica, batches form, scores match."""
    cfg = XServeConfig(
        phoenix=tiny_ranker_config(),
        ranker_serving=RankerServingConfig(block_size=4, chunk_size=8, kv_cache_bytes=1 << 20, max_batch_size=8,
                                           batch_wait_timeout_s=0.1, max_ongoing_requests=16, num_cpus=0.5),
    )
    serve.start(http_options={"port": free_port()})
    handle = serve.run(Ranker.options(**ranker_options(cfg)).bind(cfg), name="ranker-cluster-test",
                       route_prefix=None)
    try:
        reqs = [make_request(user=u, n_history=2 * u, n_candidates=4 + u, seed=u) for u in range(1, 7)]
        served = [r.result() for r in [handle.rank.remote(q) for q in reqs]]
        expected = RankerRunner.from_config(cfg).rank(reqs)
        for got, want in zip(served, expected, strict=True):
            assert [s.favorite for s in got.scores] == pytest.approx([s.favorite for s in want.scores], abs=2e-5)
            assert [s.dwell_time for s in got.scores] == pytest.approx([s.dwell_time for s in want.scores], abs=2e-5)
        stats = handle.stats.remote().result()
        assert stats["requests"] == 6 and stats["largest_batch"] >= 2, stats
    finally:
        serve.delete("ranker-cluster-test")


@pytest.mark.ray
def test_two_replicas_route_each_viewer_back_to_the_replica_holding_its_context(ray_cluster):
    """Serve's request router is ours (ranker_options): each viewer's requests land on one replica, both replicas
    serve viewers, a viewer's repeat is a cache hit and a grown history a partial hit; the client counts them."""
    cfg = XServeConfig(
        phoenix=tiny_ranker_config(),
        ranker_serving=RankerServingConfig(block_size=4, chunk_size=8, kv_cache_bytes=1 << 20, num_replicas=2,
                                           num_cpus=0, affinity_max_imbalance=16),
    )
    assert ranker_options(cfg)["request_router_config"].request_router_class.endswith("ViewerAffinityRouter")
    serve.start(http_options={"port": free_port()})
    handle = serve.run(Ranker.options(**ranker_options(cfg)).bind(cfg), name="ranker-affinity-test",
                       route_prefix=None)
    client = RankerHandleClient(handle)
    reqs = [make_request(user=u, n_history=9, n_candidates=3, seed=u) for u in range(1, 13)]
    newer = tuple(replace(h, timestamp_ms=h.timestamp_ms + 3_600_000) for h in history(4, seed=99))  # engaged since
    grown = [replace(r, history=r.history + newer) for r in reqs]

    async def rounds():
        out = []
        for batch in (reqs, reqs, grown):
            out.append(await asyncio.gather(*(client.rank(r) for r in batch)))
        return out

    try:
        served = asyncio.run(rounds())
        replicas = {r.user_id: {round_[i].replica for round_ in served} for i, r in enumerate(reqs)}
        assert all(len(v) == 1 for v in replicas.values()), replicas  # one replica per viewer
        assert len(set().union(*replicas.values())) == 2  # both replicas hold viewers
        assert all(resp.cached_context_tokens == resp.context_tokens for resp in served[1])  # repeats: hits
        assert all(0 < resp.cached_context_tokens < resp.context_tokens for resp in served[2])  # grown: partial
        reuse = client.stats()
        assert sum(s["misses"] for s in reuse.values()) == 12 and sum(s["hits"] for s in reuse.values()) == 12
        assert sum(s["partial_hits"] for s in reuse.values()) == 12
    finally:
        serve.delete("ranker-affinity-test")


@pytest.fixture
def local_mode_batching(monkeypatch):
    """Ray 2.60: local testing mode never sets the replica context, and ``@serve.batch`` reads it on its
    first call only to *warn* when ``max_batch_size`` exceeds ``max_ongoing_requests`` (raising
    "get_replica_context() may only be called from within a Ray Serve deployment"). Skip that warning."""
    from ray.serve import batching

    monkeypatch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
                        lambda self: None)


@pytest.fixture
def fresh_ranker():
    """A Ranker class of its own: calling a ``@serve.batch`` method in-process leaves a live batch queue on
    the class, which then no longer pickles, and the session app deploys the module's class later on
    (a redeploy failed with "cannot pickle '_asyncio.Future'"). The module is put back afterwards."""
    import xserve.deployments.ranker as module

    saved = dict(vars(module))
    yield importlib.reload(module).Ranker
    vars(module).clear()
    vars(module).update(saved)


def test_local_mode_batches_users_and_matches_the_runner(local_mode_batching, fresh_ranker):
    cfg = XServeConfig(
        phoenix=tiny_ranker_config(),
        ranker_serving=RankerServingConfig(block_size=4, chunk_size=8, kv_cache_bytes=1 << 20, max_batch_size=4,
                                           batch_wait_timeout_s=0.2, max_ongoing_requests=8),
    )
    handle = serve.run(fresh_ranker.options(**ranker_options(cfg)).bind(cfg), name="ranker-test",
                       _local_testing_mode=True)
    client = RankerHandleClient(handle)
    reqs = [make_request(user=u, n_history=3 * u, n_candidates=5 + u, seed=u) for u in range(1, 5)]

    async def all_at_once():
        return await asyncio.gather(*(client.rank(r) for r in reqs))

    served = asyncio.run(all_at_once())
    stats = handle.stats.remote().result()
    assert stats["requests"] == 4 and stats["batches"] < 4 and stats["largest_batch"] >= 2, stats
    assert stats["misses"] == 4

    expected = RankerRunner.from_config(cfg).rank(reqs)
    for got, want in zip(served, expected, strict=True):
        assert got.model_version == want.model_version == "random-seed0"
        assert len(got.scores) == len(want.scores)
        for a, b in zip(got.scores, want.scores, strict=True):
            assert list(a.__struct_fields__) == list(b.__struct_fields__)
            assert [getattr(a, f) for f in a.__struct_fields__] == pytest.approx(
                [getattr(b, f) for f in b.__struct_fields__], abs=2e-5)

    # A bad request batched with good ones fails alone, with its reason; the others are scored.
    bad = replace(reqs[1], user_id=0)

    async def mixed():
        return await asyncio.gather(client.rank(reqs[2]), client.rank(bad), return_exceptions=True)

    good_resp, error = asyncio.run(mixed())
    assert len(good_resp.scores) == len(reqs[2].candidates)
    assert isinstance(error, Exception) and "user_id must be > 0" in str(error)

    # A refresh of the same user is a cache hit; live reconfiguration of batching is accepted.
    asyncio.run(client.rank(reqs[0]))
    handle.reconfigure.remote({"max_batch_size": 2}).result()
    assert handle.stats.remote().result()["hits"] == 2  # reqs[2] above, reqs[0] here
