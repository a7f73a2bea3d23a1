"""The app under test as the faults reach it: its process, its actors over Ray, and direct reads of their state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from scripts.chaoslib.app_process import AppProcess
from scripts.chaoslib.cluster import Cluster
from xserve.actors.naming import ActorNames
from xserve.config import XServeConfig
from xserve.schema import (
    InNetworkRequest,
    LightPost,
    Post,
    RankCandidate,
    RankRequest,
    RankResponse,
    RetrievalRequest,
    RetrievedPost,
    UserQueryData,
)
from xserve.sharding import shard_for

__all__ = ["Parts"]


class Parts:
    """The app (``app``, configured by ``config``) and a Ray connection to it, made on first use and again
    after a restart (the cluster's address changes)."""

    def __init__(self, app: AppProcess, config: XServeConfig, seed: int) -> None:
        self.app, self.config = app, config
        self.names = ActorNames.of(app.data_dir)
        self.seed = seed  # of the fixed vector a retrieval shard is searched with
        self._cluster: Cluster | None = None

    def cluster(self) -> Cluster:
        if self._cluster is None:
            assert self.app.ray_address is not None
            self._cluster = Cluster(self.app.ray_address, self.names)
        return self._cluster

    def disconnect(self) -> None:
        """Leave the cluster (before it dies under this driver, or at the end)."""
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def user_data(self, viewer: int) -> UserQueryData:
        """``viewer``'s query data, from the user-store shard that owns it."""
        n = self.config.serving.num_user_shards
        c = self.cluster()
        shard = c.actor(self.names.user_shard(shard_for(viewer, n), n))
        blob = c.call(shard.query_data, viewer, self.config.mixer.history_length)
        data = msgspec.msgpack.decode(blob, type=UserQueryData | None)
        assert data is not None, viewer
        return data

    def follows(self, viewer: int) -> list[int]:
        return sorted(self.user_data(viewer).features.followed_user_ids)

    def user_state(self, viewers: Sequence[int]) -> dict[int, tuple[Any, Any]]:
        """Every viewer's features and history (served history left out: every feed read appends to it)."""
        return {v: (data.features, data.history) for v in viewers for data in [self.user_data(v)]}

    def thunder_posts(self, shard: Any, viewers: Sequence[int], now_ms: int) -> list[tuple[int, int]]:
        """(post id, created ms) of the Thunder ``shard``'s in-network answer for each viewer, at ``now_ms``."""
        c = self.cluster()
        out = []
        for v in viewers:
            req = InNetworkRequest(viewer_id=v, followed_ids=tuple(self.follows(v)),
                                   max_results=self.config.mixer.thunder_max_results)
            out.extend((p.post_id, p.created_at_ms) for p in c.call(shard.in_network_posts, req, now_ms))
        return out

    def thunder_all(self, viewer: int, followed: Sequence[int], now_ms: int) -> list[LightPost]:
        """Every Thunder shard's (replica 0) in-network answer for ``viewer`` following ``followed``, at ``now_ms``."""
        c = self.cluster()
        req = InNetworkRequest(viewer_id=viewer, followed_ids=tuple(followed),
                               max_results=self.config.mixer.thunder_max_results)
        shards = [c.actor(self.names.thunder_shard(s, 0)) for s in range(self.config.thunder.num_shards)]
        return [p for shard in shards for p in c.call(shard.in_network_posts, req, now_ms)]

    def catalog_posts(self, shard: Any, post_ids: Sequence[int]) -> dict[int, Post]:
        """The post-catalog ``shard``'s records of ``post_ids`` (those it holds)."""
        return msgspec.msgpack.decode(self.cluster().call(shard.get, list(post_ids)), type=dict[int, Post])

    def rank_requests(self, viewers: Sequence[int], now_ms: int, max_candidates: int = 32) -> list[RankRequest]:
        """One ranker request per viewer, as the feed would make it: its history, and (up to ``max_candidates``)
        in-network posts of the authors it follows, scored at ``now_ms``."""
        out = []
        for v in viewers:
            data = self.user_data(v)
            posts = sorted(self.thunder_all(v, sorted(data.features.followed_user_ids), now_ms), key=lambda p: p.post_id)
            candidates = tuple(RankCandidate(p.post_id, p.author_id, p.created_at_ms) for p in posts[:max_candidates])
            out.append(RankRequest(user_id=v, history=data.history, candidates=candidates, now_ms=now_ms))
        return out

    def rank(self, requests: Sequence[RankRequest]) -> list[RankResponse]:
        """The ``Ranker`` deployment's answers (through its Serve handle)."""
        return [self.cluster().call_deployment("Ranker", "rank", r) for r in requests]

    def retrieval_requests(self, viewers: Sequence[int], now_ms: int, max_results: int = 100) -> list[RetrievalRequest]:
        """One retrieval request per viewer: its history, ``max_results`` posts, at ``now_ms``."""
        return [RetrievalRequest(user_id=v, history=self.user_data(v).history, max_results=max_results, now_ms=now_ms)
                for v in viewers]

    def retrieve(self, requests: Sequence[RetrievalRequest], exclude: set[int]) -> list[list[RetrievedPost]]:
        """The ``Retrieval`` deployment's answers (through its Serve handle), ``exclude`` left out."""
        excluded = frozenset(exclude)
        return [self.cluster().call_deployment("Retrieval", "retrieve", msgspec.structs.replace(r, exclude_ids=excluded))
                for r in requests]

    def retrieval_top(self, shard: Any, now_ms: int, exclude: set[int]) -> list[tuple[int, int]]:
        """(post id, created ms) of the retrieval ``shard``'s top 100 for a fixed vector, ``exclude`` left out."""
        rng = np.random.default_rng(self.seed)
        vector = rng.standard_normal(self.config.retrieval.embedding_dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        hits = self.cluster().call(shard.search, vector, 100, now_ms, sorted(exclude))
        return list(zip(hits.post_ids.tolist(), hits.created_at_ms.tolist()))
