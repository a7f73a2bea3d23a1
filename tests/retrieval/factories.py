"""Small factories for retrieval tests: a clustered corpus, a config, a written version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xserve.config import RetrievalConfig
from xserve.retrieval.merge import exact_top_k
from xserve.sharding import shard_array
from xserve.retrieval.fanout import RetrievalFanout
from xserve.retrieval.shard import ShardSearcher
from xserve.synth.encoder import ClusteredEncoder
from xserve.schema import ShardHits
from xserve.storage.lance.embeddings import EmbeddingVersions

DIM = 32
HOUR_MS = 3_600_000
NOW_MS = 1_800_000_000_000
MAX_AGE_MS = 48 * HOUR_MS


def small_config(**overrides) -> RetrievalConfig:
    base = dict(
        num_shards=2,
        embedding_dim=DIM,
        index_min_rows=400,
        rows_per_partition=100,
        nprobes=8,
        maintenance_interval_s=0.0,
        version_poll_s=0.0,
        flush_size=8,
        flush_age_s=0.05,
        top_k=100,
    )
    base.update(overrides)
    return RetrievalConfig(**base)


def encoder(seed: int = 0) -> ClusteredEncoder:
    return ClusteredEncoder(dim=DIM, num_topics=24, seed=seed)


def make_corpus(n: int, seed: int = 0, encoder_seed: int = 0, max_age_frac: float = 0.9, first_id: int = 1) -> dict[str, np.ndarray]:
    """``n`` posts created within ``max_age_frac`` of the max age before ``NOW_MS``."""
    rng = np.random.default_rng(seed)
    post_ids = np.arange(first_id, first_id + n, dtype=np.int64)
    author_ids = rng.integers(1, max(n // 10, 2) + 1, n).astype(np.int64)
    created = NOW_MS - rng.integers(0, int(MAX_AGE_MS * max_age_frac), n).astype(np.int64)
    vectors = encoder(encoder_seed).encode_posts(post_ids, author_ids)
    return {"post_id": post_ids, "author_id": author_ids, "created_at_ms": created, "vector": vectors}


def queries(corpus: dict[str, np.ndarray], n: int, seed: int = 1) -> np.ndarray:
    """User-like query vectors: the normalised mean of a few posts of one or two authors."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        authors = rng.choice(corpus["author_id"], rng.integers(1, 3))
        rows = np.flatnonzero(np.isin(corpus["author_id"], authors))[:8]
        v = corpus["vector"][rows].mean(axis=0)
        out.append(v / np.linalg.norm(v))
    return np.stack(out).astype(np.float32)


def write_version(data_dir: Path, version: str, corpus: dict[str, np.ndarray], config: RetrievalConfig, switch: bool = True) -> None:
    versions = EmbeddingVersions(data_dir)
    versions.begin(version)
    owner = shard_array(corpus["post_id"], config.num_shards)
    for s in range(config.num_shards):
        m = owner == s
        shard = versions.open_shard(version, s, config, create=True)
        shard.append(corpus["post_id"][m], corpus["author_id"][m], corpus["created_at_ms"][m], corpus["vector"][m], version)
        shard.build_index()
    versions.finish(version, config.num_shards, config.embedding_dim)
    if switch:
        versions.switch(version)


def local_searchers(data_dir: Path, config: RetrievalConfig, max_age_ms: int = MAX_AGE_MS) -> list[ShardSearcher]:
    versions = EmbeddingVersions(data_dir)
    return [
        ShardSearcher(i, versions.shard_opener(i, config), versions.current_name, config, max_age_ms)
        for i in range(config.num_shards)
    ]


def local_service(data_dir: Path, config: RetrievalConfig, user_encoder=None) -> RetrievalFanout:
    return RetrievalFanout(
        local_searchers(data_dir, config), user_encoder or encoder(), config, EmbeddingVersions(data_dir).current_name
    )


def exact(corpus: dict[str, np.ndarray], query: np.ndarray, k: int, mask: np.ndarray | None = None) -> ShardHits:
    m = np.ones(len(corpus["post_id"]), dtype=bool) if mask is None else mask
    return exact_top_k(corpus["vector"][m], corpus["post_id"][m], corpus["author_id"][m], corpus["created_at_ms"][m], query, k)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(np.intersect1d(found, truth)) / max(len(truth), 1)
