#!/usr/bin/env python
"""Retrieval benchmark: ANN recall against brute force, shard and fan-out latency, upserts, backfill.

Seeded and self-contained: a corpus of clustered unit vectors from
:class:`~xserve.synth.encoder.ClusteredEncoder` (a mixture of Gaussians on
the sphere, the geometry of trained two-tower embeddings; uniformly random
vectors would mislead the index tuning), user vectors built like the user
tower's (the mean of a few engaged posts of one to three authors), LanceDB
shard tables written and indexed as serving uses them, and exact top-k by NumPy
brute force computed in the same run as the baseline.

Fan-out = the in-process :class:`~xserve.retrieval.fanout.RetrievalFanout`
(every shard's quota awaited on one event loop, the same per-shard search the
Ray actors run); ``*.before`` = the previous defaults (one sync search of the full k
per shard on a thread, nprobes 40), timed query by query alternately with the
current ones so both see the same machine load; ``--sweep`` adds the settings
between them; and
``fanout_ray_*`` = the serving path, one ``RetrievalShard`` actor per shard
called through Ray from this process (no Serve hop). Post ages are uniform over 1.1 × the max
age, so ~9 % of rows are stale, as in a table whose trim lags: "with recency"
applies the serving rule, "no recency" searches with an unbounded age.

Prints one line per figure, ``name value [unit]``; a latency tail over fewer than
1,000 queries is their maximum and says ``max`` where it would say ``p99``. Defaults are the issue's
sizes (1M posts, 4 shards, top-1000); ``--posts 20000 --queries 20
--backfill-posts 2000`` runs in well under a minute. ``--corpus-cache DIR``
keeps the written and indexed 1M-post tables between runs (each run works on a
copy, since the upsert and maintenance phases change them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xserve.clock import HOUR_MS  # noqa: E402
from xserve.config import MixerConfig, RetrievalConfig, XServeConfig  # noqa: E402
from xserve.retrieval.batcher import UpsertBatcher  # noqa: E402
from xserve.retrieval.merge import merge_top_k, shard_quota  # noqa: E402
from xserve.sharding import shard_array  # noqa: E402
from xserve.retrieval.fanout import RetrievalFanout  # noqa: E402
from scripts.figures import percentile, tail  # noqa: E402
from xserve.retrieval.shard import ShardSearcher  # noqa: E402
from xserve.synth.encoder import ClusteredEncoder  # noqa: E402
from xserve.schema import HistoryItem, Post, RetrievalRequest, ShardHits  # noqa: E402
from xserve.storage.lance.embeddings import EmbeddingVersions  # noqa: E402

NOW_MS = 1_800_000_000_000


def line(name: str, value: float, unit: str = "") -> None:
    print(f"retrieval.{name} {value:.4g}{' ' + unit if unit else ''}", flush=True)


def timed_ms(fn, queries) -> tuple[list, list[float]]:
    """``fn(q)`` for each query: the answers and each call's wall time in ms."""
    answers, lat = [], []
    for q in queries:
        t = time.perf_counter()
        answers.append(fn(q))
        lat.append((time.perf_counter() - t) * 1000)
    return answers, lat


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(Q, k) row indices of the exact top-k by dot product (chunked so memory stays small)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 16):
        s = queries[i : i + 16] @ vectors.T  # (q, N)
        if mask is not None:
            s[:, ~mask] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out[i : i + 16] = np.take_along_axis(part, order, 1)
    return out


def recall_at(found: list[np.ndarray], truth_ids: np.ndarray, k: int) -> float:
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k for f, t in zip(found, truth_ids)]))


def make_requests(enc: ClusteredEncoder, post_ids, author_ids, n: int, rng) -> tuple[list[RetrievalRequest], np.ndarray]:
    reqs = []
    for u in range(n):
        authors = rng.choice(author_ids, rng.integers(1, 4))
        rows = np.flatnonzero(np.isin(author_ids, authors))[:8]
        hist = tuple(HistoryItem(int(post_ids[r]), int(author_ids[r]), frozenset(), NOW_MS) for r in rows)
        reqs.append(RetrievalRequest(user_id=u + 1, history=hist, max_results=0, now_ms=NOW_MS))
    return reqs, enc.encode_users(reqs)


# the defaults before the latency work (issue 6): a sync search of the full k per shard, one thread each
BEFORE = {"nprobes": 40, "shard_quota_sigmas": 0.0}


class ThreadFanout:
    """The previous fan-out: each shard's sync ``search`` on its own thread (of the full k under BEFORE)."""

    def __init__(self, shards: list[ShardSearcher]):
        self.shards = shards
        self._pool = ThreadPoolExecutor(max_workers=len(shards))

    def search_vector(self, q: np.ndarray, k: int, now_ms: int):
        quota = shard_quota(k, len(self.shards), self.shards[0].config.shard_quota_sigmas)
        return merge_top_k([f.result() for f in [self._pool.submit(s.search, q, quota, now_ms) for s in self.shards]], k)

    def close(self) -> None:
        self._pool.shutdown()


def timed_alternately(variants: dict[str, object], users: np.ndarray, k: int) -> dict[str, tuple[list, list, float]]:
    """(found ids, latencies ms, mean CPU ms of this process) per variant, running every variant on each
    query in turn (fair under load). CPU time counts LanceDB's own threads too, and other processes' load
    does not inflate it, so it compares settings on a busy machine where p99 cannot."""
    out = {name: ([], [], [0.0]) for name in variants}
    for q in users[:5]:
        for v in variants.values():
            v.search_vector(q, k, NOW_MS)  # warm the page cache and index caches
    for i, q in enumerate(users):
        names = list(variants) if i % 2 == 0 else list(variants)[::-1]  # alternate who goes first
        for name in names:
            c, t = time.process_time(), time.perf_counter()
            hits = variants[name].search_vector(q, k, NOW_MS)
            out[name][1].append((time.perf_counter() - t) * 1000)
            out[name][2][0] += (time.process_time() - c) * 1000
            out[name][0].append(hits.post_ids)
    return {name: (found, lat, cpu[0] / len(users)) for name, (found, lat, cpu) in out.items()}


def corpus_key(a: argparse.Namespace, cfg: RetrievalConfig) -> str:
    """What the written tables depend on: the corpus arguments and the index settings."""
    keys = dict(posts=a.posts, dim=a.dim, topics=a.topics, shards=a.shards, seed=a.seed, index=cfg.index_type,
                rpp=cfg.rows_per_partition, parts=cfg.index_partitions, pq=cfg.pq_sub_vectors, min_rows=cfg.index_min_rows)
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


def ray_fanout(data_dir: Path, cfg: RetrievalConfig, max_age: int, users: np.ndarray, k: int, truth: np.ndarray) -> None:
    """The serving path: one ``RetrievalShard`` actor per shard, searched in parallel through Ray."""
    import msgspec
    import ray

    from xserve.actors.retrieval import RetrievalShard

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
    try:
        actors = [
            RetrievalShard.options(max_concurrency=2, num_cpus=0).remote(str(data_dir), i, msgspec.to_builtins(cfg), max_age, False)
            for i in range(cfg.num_shards)
        ]
        quota = shard_quota(k, cfg.num_shards, cfg.shard_quota_sigmas)  # as the Retrieval deployment asks
        search = lambda q: merge_top_k(ray.get([x.search.remote(q, quota, NOW_MS) for x in actors]), k)  # noqa: E731
        for q in users[:5]:
            search(q)  # actors up, tables open, caches warm
        found, lat = timed_ms(lambda q: search(q).post_ids, users)
        line("fanout_ray_recall_at_100", recall_at(found, truth, min(100, k)))
        line("fanout_ray_p50_ms", percentile(lat, 50), "ms")
        line(*tail("fanout_ray_p99_ms", lat), "ms")
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--topics", type=int, default=1000, help="clusters in the synthetic embedding space")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=1000, help="top-k asked of retrieval (serving default 1000)")
    p.add_argument("--index-type", default=RetrievalConfig().index_type)
    p.add_argument("--nprobes", type=int, default=RetrievalConfig().nprobes)
    p.add_argument("--rows-per-partition", type=int, default=RetrievalConfig().rows_per_partition)
    p.add_argument("--quota-sigmas", type=float, default=RetrievalConfig().shard_quota_sigmas,
                   help="per-shard quota (xserve.retrieval.merge.shard_quota); 0 = every shard returns k")
    p.add_argument("--sweep", default="",
                   help="extra fan-out settings timed with the others: ';'-separated RetrievalConfig overrides, "
                        "e.g. 'nprobes=20;nprobes=40,row_meta_in_memory=0'; fanout=threads picks the previous thread fan-out")
    p.add_argument("--corpus-cache", help="keep the written+indexed tables here between runs (keyed by corpus and index settings)")
    p.add_argument("--upsert-rows", type=int, default=20_000)
    p.add_argument("--backfill-posts", type=int, default=100_000, help="0 skips the Ray Data backfill")
    p.add_argument("--no-ray-fanout", dest="ray_fanout", action="store_false",
                   help="skip the fan-out through RetrievalShard actors (the serving path)")
    p.add_argument("--data-dir", help="where to write tables (default: a temp dir, removed afterwards)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    # Ray Data spawns helpers by fork+exec after LanceDB started its runtime; exec makes that safe
    warnings.filterwarnings("ignore", message="lancedb fork support")

    max_age = MixerConfig().max_post_age_ms
    cfg = RetrievalConfig(
        num_shards=a.shards, embedding_dim=a.dim, index_type=a.index_type, nprobes=a.nprobes,
        rows_per_partition=a.rows_per_partition, shard_quota_sigmas=a.quota_sigmas,
        maintenance_interval_s=0, version_poll_s=3600, index_min_rows=min(5000, a.posts // (4 * a.shards)),
    )
    rng = np.random.default_rng(a.seed)
    enc = ClusteredEncoder(dim=a.dim, num_topics=a.topics, seed=a.seed)
    tmp = Path(a.data_dir) if a.data_dir else Path(tempfile.mkdtemp(prefix="bench_retrieval_"))
    try:
        # ------------------------------------------------------------ corpus and exact baseline
        post_ids = np.arange(1, a.posts + 1, dtype=np.int64)
        author_ids = rng.integers(1, max(a.posts // 20, 2), a.posts).astype(np.int64)
        created = NOW_MS - rng.integers(0, int(max_age * 1.1), a.posts).astype(np.int64)
        t = time.perf_counter()
        vectors = np.concatenate([enc.encode_posts(post_ids[i : i + 100_000], author_ids[i : i + 100_000]) for i in range(0, a.posts, 100_000)])
        line("encode_posts_per_s", a.posts / (time.perf_counter() - t), "rows/s")
        reqs, users = make_requests(enc, post_ids, author_ids, a.queries, rng)
        fresh = created >= NOW_MS - max_age
        k = min(a.k, int(fresh.sum()))
        truth_all = post_ids[exact_top(vectors, users, k)]
        truth_fresh = post_ids[exact_top(vectors, users, k, fresh)]
        _, lat = timed_ms(lambda q: np.argpartition(-(vectors @ q), k - 1)[:k], users[: min(50, a.queries)])
        line("exact_p50_ms", percentile(lat, 50), "ms")
        line(*tail("exact_p99_ms", lat), "ms")

        # ------------------------------------------------------------ backfill (Ray Data) on a smaller set; first, so Ray forks before LanceDB runs here
        if a.backfill_posts:
            import pyarrow as pa
            import pyarrow.parquet as pq
            import ray

            from scripts.backfill_embeddings import run_backfill

            n = min(a.backfill_posts, a.posts)
            pq.write_table(pa.table({"post_id": post_ids[:n], "author_id": author_ids[:n], "created_at_ms": created[:n]}), tmp / "posts.parquet")
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            try:
                xcfg = XServeConfig(retrieval=cfg)
                summary = run_backfill(tmp / "bf", xcfg, posts=str(tmp / "posts.parquet"), version="bf", batch_size=4096,
                                       concurrency=2, now_ms=NOW_MS, quiet=True)
            finally:
                ray.shutdown()
            line("backfill_rows", n, "rows")
            line("backfill_rows_per_s", summary["rows_per_s"], "rows/s")
            line("backfill_total_s", summary["seconds"], "s")
        # ------------------------------------------------------------ write + index
        versions = EmbeddingVersions(tmp)
        owner = shard_array(post_ids, a.shards)
        cached = Path(a.corpus_cache) / corpus_key(a, cfg) if a.corpus_cache else None
        if cached is not None and (cached / "MANIFEST.json").exists():
            versions.root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(cached, versions.version_dir("bench"))
            print(f"# corpus tables copied from {cached}", flush=True)
        else:
            versions.begin("bench")
            tables = []
            t = time.perf_counter()
            for s in range(a.shards):
                m = owner == s
                tbl = versions.open_shard("bench", s, cfg, create=True)
                tbl.append(post_ids[m], author_ids[m], created[m], vectors[m], "bench")
                tables.append(tbl)
            line("write_rows_per_s", a.posts / (time.perf_counter() - t), "rows/s")
            t = time.perf_counter()
            for tbl in tables:
                tbl.build_index()
            line("index_build_s", time.perf_counter() - t, "s")
            versions.finish("bench", a.shards, a.dim)
            if cached is not None:
                shutil.copytree(versions.version_dir("bench"), cached.with_name(cached.name + ".tmp"), dirs_exist_ok=True)
                cached.with_name(cached.name + ".tmp").rename(cached)
        versions.switch("bench")
        tables = [versions.open_shard("bench", s, cfg) for s in range(a.shards)]

        def searchers(age_ms: int, c: RetrievalConfig = cfg) -> list[ShardSearcher]:
            return [ShardSearcher(i, versions.shard_opener(i, c), versions.current_name, c, age_ms) for i in range(a.shards)]

        # ------------------------------------------------------------ one shard
        shard0 = searchers(max_age)[0]
        m0 = (owner == 0) & fresh
        k0 = min(k, int(m0.sum()))
        truth0 = post_ids[exact_top(vectors, users, k0, m0)]
        found, lat = timed_ms(lambda q: shard0.search(q, k0, NOW_MS).post_ids, users)
        line("shard_recall_at_100", recall_at(found, truth0, min(100, k0)))
        line("shard_p50_ms", percentile(lat, 50), "ms")
        line(*tail("shard_p99_ms", lat), "ms")

        # ------------------------------------------------------------ fan-out: current settings vs the previous ones (+ sweep)
        service = RetrievalFanout(searchers(max_age), enc, cfg, versions.current_name)
        variants: dict[str, object] = {"": service, ".before": ThreadFanout(searchers(max_age, msgspec.structs.replace(cfg, **BEFORE)))}
        for spec in (x for x in a.sweep.split(";") if x):
            kv = dict(item.split("=", 1) for item in spec.split(","))
            threads = kv.pop("fanout", "async") == "threads"
            c = msgspec.convert({**msgspec.to_builtins(cfg), **kv}, RetrievalConfig, strict=False)
            variants[f".{spec}"] = ThreadFanout(searchers(max_age, c)) if threads else RetrievalFanout(searchers(max_age, c), enc, c, versions.current_name)
        timed = timed_alternately(variants, users, k)
        for label, (found, lat, cpu) in timed.items():
            line(f"recall_at_100{label}", recall_at(found, truth_fresh, min(100, k)))
            line(f"recall_at_1000{label}", recall_at(found, truth_fresh, k))
            line(f"fanout_p50_ms{label}", percentile(lat, 50), "ms")
            line(*tail(f"fanout_p99_ms{label}", lat), "ms")
            line(f"fanout_cpu_ms{label}", cpu, "ms")
        for label, v in variants.items():
            if label:
                v.close()
        # no recency rule: an unbounded age over the same tables, against the exact top-k of every row
        norule = RetrievalFanout(searchers(100 * 365 * 24 * HOUR_MS), enc, cfg, versions.current_name)
        found, lat, _ = timed_alternately({"": norule}, users, k)[""]
        norule.close()
        line("norule_recall_at_100", recall_at(found, truth_all, min(100, k)))
        line("fanout_norule_p50_ms", percentile(lat, 50), "ms")
        line(*tail("fanout_norule_p99_ms", lat), "ms")
        # the alternative we did not pick: LanceDB's where-prefilter on created_at, same nprobes
        found = []
        for q in users[: min(50, a.queries)]:
            parts = [tbl.search(q, k, min_created_at_ms=NOW_MS - max_age) for tbl in tables]
            hits = [ShardHits(c["post_id"], c["author_id"], c["created_at_ms"], c["score"]) for c in parts]
            found.append(merge_top_k(hits, k).post_ids)
        line("prefilter_recall_at_100", recall_at(found, truth_fresh[: len(found)], min(100, k)))
        line("fanout_fallbacks", sum(s.counters["fallbacks"] for s in service.shards))
        if a.ray_fanout:
            ray_fanout(tmp, cfg, max_age, users, k, truth_fresh)

        # ------------------------------------------------------------ live upserts (batcher + merge_insert), then maintenance under load
        batcher = UpsertBatcher(enc, a.shards, cfg.flush_size, cfg.flush_age_s, "bench")
        new_ids = np.arange(a.posts + 1, a.posts + 1 + a.upsert_rows, dtype=np.int64)
        posts = [Post(post_id=int(i), author_id=int(i % 977 + 1), created_at_ms=NOW_MS) for i in new_ids]
        t = time.perf_counter()
        for i in range(0, len(posts), cfg.flush_size):
            batcher.add(posts[i : i + cfg.flush_size], 0.0)
            for s, rows in batcher.drain().items():
                service.shards[s].upsert(rows, NOW_MS)
        line("upsert_rows_per_s", a.upsert_rows / (time.perf_counter() - t), "rows/s")
        _, lat = timed_ms(lambda q: service.search_vector(q, k, NOW_MS), users[:50])
        line(*tail("fanout_unindexed_p99_ms", lat), "ms")
        worker = threading.Thread(target=lambda: [s.maintain(NOW_MS) for s in service.shards])
        lat = []
        t_m = time.perf_counter()
        worker.start()
        i = 0
        while worker.is_alive() or i < 20:
            q = users[i % len(users)]
            t = time.perf_counter()
            service.search_vector(q, k, NOW_MS)
            lat.append((time.perf_counter() - t) * 1000)
            i += 1
        worker.join()
        line("maintenance_s", time.perf_counter() - t_m, "s")
        line(*tail("fanout_p99_during_maintenance_ms", lat), "ms")
        _, lat = timed_ms(lambda q: service.search_vector(q, k, NOW_MS), users[:50])
        line("fanout_p50_after_maintenance_ms", percentile(lat, 50), "ms")
        line(*tail("fanout_p99_after_maintenance_ms", lat), "ms")  # includes the first, cold, queries
        service.close()

    finally:
        if not a.data_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
