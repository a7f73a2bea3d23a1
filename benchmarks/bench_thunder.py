"""Thunder benchmark: ingest rate, in-network query latency (in-process and through Ray actors), memory.

Seeded synthetic world: ``--posts`` posts over ``--authors`` authors within the
retention window; authors' activity is Zipf-like (weight 1/rank^0.5: a few post a lot), 55 %
originals, 25 % replies (18 % to a recent original, 7 % to any recent post), 15 % reposts, 5 % videos
(replies and reposts carry the refs the write path fills); viewers follow authors picked
by activity. Prints one ``name value unit`` line per figure (progress goes to stderr).

Query latency, for 200 and 2,000 follows, over ``--queries`` requests (default 2,000), each from a
fresh viewer with its own follow list, each sent once:

* ``thunder.query_uncached_*``: the store as served (default config: no per-author answer cache),
  a single pass over the requests, wall clock and (``_cpu_``) this thread's CPU time, which a busy
  shared machine disturbs less;
* ``thunder.baseline_naive_*``: the brute-force query on the same requests, timed the same way:
  every post of every followed author, sorted, truncated, no rules;
  ``thunder.query_uncached_to_naive_p99`` is the ratio of the two p99s;
* ``thunder.query_cache_miss_*`` and ``thunder.query_cache_hit_*``: a store with
  ``thunder.query_cache`` on, over the same requests: the first pass builds each author's cached
  answer (misses), the second reads them (hits; the same requests repeated).

A p99 over fewer than 1,000 requests is a maximum in all but name: with a smaller ``--queries`` the
lines say ``max`` instead of ``p99``. ``thunder.query_fallback_authors_per_query`` counts the followed
authors per query whose answer needed the per-post scan (the column path's rare fallback).

Memory per shard (``thunder.rss_mb_per_million_posts.shards<N>_per_shard``): the
RSS growth of building one shard's store from the whole world, in a fresh process
(so no memory freed by earlier work is reused), per million posts in the world;
``shards1`` is the unsharded store measured the same way, for the ratio.

    python benchmarks/bench_thunder.py                     # the issue's sizes (1M posts, 100k authors), ~4 min
    python benchmarks/bench_thunder.py --posts 20000 --authors 2000 --queries 50 --no-actors   # seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import operator
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec  # noqa: E402

from scripts.figures import percentile, tail, tail_name  # noqa: E402
from xserve.config import ThunderConfig  # noqa: E402
from xserve.schema import InNetworkRequest, Media, MediaKind, Post, PostCreated, PostEvent  # noqa: E402
from xserve.thunder.refs import post_ref  # noqa: E402
from xserve.thunder.store import ThunderStore  # noqa: E402

NOW_MS = 1_800_000_000_000
_CREATED = operator.attrgetter("created_at_ms")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_world(num_posts: int, num_authors: int, seed: int, retention_ms: int) -> tuple[list[PostEvent], list[float]]:
    """Time-ordered create events and each author's activity weight (index = author id - 1)."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.5 for i in range(num_authors)]  # the busiest author: ~1.5k posts per million
    rng.shuffle(weights)
    authors = rng.choices(range(1, num_authors + 1), weights=weights, k=num_posts)
    times = sorted(rng.randrange(NOW_MS - retention_ms + 60_000, NOW_MS) for _ in range(num_posts))
    video = (Media(MediaKind.VIDEO, 30_000),)
    events: list[PostEvent] = []
    recent: list[Post] = []  # a sample of recent posts; replies and reposts point into it
    roots: list[Post] = []  # recent originals: most replies answer the conversation root
    for i in range(num_posts):
        pid, a, t = i + 1, authors[i], times[i]
        r = rng.random()
        if recent and r < 0.25:
            pool = roots if roots and r < 0.18 else recent
            parent = pool[rng.randrange(len(pool))]
            root = parent.conversation_id or parent.post_id
            p = Post(pid, a, t, in_reply_to_post_id=parent.post_id, in_reply_to_user_id=parent.author_id,
                     conversation_id=root, reply_parent=post_ref(parent))
        elif recent and r < 0.40:
            src = recent[rng.randrange(len(recent))]
            p = Post(pid, a, t, repost_of_post_id=src.post_id, repost_of_user_id=src.author_id, repost_source=post_ref(src))
        else:
            p = Post(pid, a, t, media=video if r > 0.95 else ())
        events.append(PostCreated(p))
        for pool, ok in ((recent, True), (roots, p.conversation_id is None and p.repost_of_post_id is None)):
            if not ok:
                continue
            if len(pool) < 5000:
                pool.append(p)
            else:
                pool[rng.randrange(5000)] = p
    return events, weights


def shard_rss_mb(num_posts: int, num_authors: int, seed: int, shard: int, num_shards: int) -> tuple[float, int]:
    """(RSS growth in MB, posts held) of building shard ``shard`` of ``num_shards``'s store from the whole world.

    Run in a fresh process (:func:`fresh_process`): the world is built first, then only the store's growth counts.
    """
    cfg = ThunderConfig()
    events, _ = make_world(num_posts, num_authors, seed, cfg.retention_ms)
    gc.collect()
    rss0 = _rss_mb()
    store = ThunderStore(cfg, shard, num_shards)
    for i in range(0, len(events), 10_000):
        store.apply(events[i : i + 10_000], NOW_MS)
    gc.collect()
    return _rss_mb() - rss0, store.stats()["posts"]


def fresh_process(fn, *args):  # type: ignore[no-untyped-def]
    """``fn(*args)`` in a new Python process (spawned: it shares no heap with this one)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def make_requests(weights: list[float], follows: int, count: int, seed: int) -> list[InNetworkRequest]:
    rng = random.Random(seed)
    n = len(weights)
    reqs = []
    for _ in range(count):
        followed = set()
        while len(followed) < min(follows, n):
            followed.update(rng.choices(range(1, n + 1), weights=weights, k=follows - len(followed)))
        reqs.append(InNetworkRequest(viewer_id=rng.randrange(1, n + 1), followed_ids=tuple(followed), max_results=0))
    return reqs


def progress(msg: str) -> None:
    print(f"[bench_thunder] {msg}", file=sys.stderr, flush=True)


def time_once(query, reqs: list[InNetworkRequest]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """One pass, each request once: wall-clock and CPU-time (this thread) p50/p99 in microseconds, mean results.

    Under 1,000 requests the "p99" is the maximum (the printed lines then say ``max``)."""
    lat, cpu, sizes = [], [], []
    for req in reqs:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        out = query(req)
        lat.append((time.perf_counter_ns() - t0) / 1e3)
        cpu.append((time.thread_time_ns() - c0) / 1e3)
        sizes.append(len(out))
    return {"p50": percentile(lat, 50), "p99": tail("", lat)[1], "cpu_p50": percentile(cpu, 50),
            "cpu_p99": tail("", cpu)[1], "results": statistics.fmean(sizes)}


def baseline_query(posts_by_author: dict[int, list[Post]], req: InNetworkRequest) -> list[Post]:
    """Naive: every post of every followed author, sort, truncate (no caps, no rules)."""
    out = [p for a in req.followed_ids for p in posts_by_author.get(a, ())]
    out.sort(key=_CREATED, reverse=True)
    return out[:1200]


def bench_actors(events: list[PostEvent], reqs: list[InNetworkRequest], cfg: ThunderConfig, shards: int, repeats: int) -> None:
    """Load through the real ingest actor (log without fsync), then time queries through ThunderClient."""
    import tempfile

    import msgspec
    import ray

    from xserve.actors.naming import ActorNames
    from xserve.actors.stateful import thunder_actors
    from xserve.config import StorageConfig
    from xserve.deployments.clients import ThunderClient

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = msgspec.structs.replace(cfg, num_shards=shards)
            actors = thunder_actors(cfg, StorageConfig(data_dir=tmp, fsync=False), ActorNames.of(tmp))
            client = ThunderClient(cfg, actors.shards, actors.ingest)

            async def run() -> tuple[list[float], float]:
                await client.stats()  # every actor started (and rebuilt from the empty log) before timing
                t0 = time.perf_counter()
                for i in range(0, len(events), cfg.max_ingest_batch):
                    await client.ingest(events[i : i + cfg.max_ingest_batch], now_ms=NOW_MS)
                rate = len(events) / (time.perf_counter() - t0)
                for req in reqs[:5]:  # warm up
                    await client.in_network_posts(req, now_ms=NOW_MS)
                lat = []  # every repeat's requests pooled: the tail's samples
                for _ in range(repeats):
                    for req in reqs:
                        t = time.perf_counter()
                        await client.in_network_posts(req, now_ms=NOW_MS)
                        lat.append((time.perf_counter() - t) * 1e3)
                return lat, rate

            lat, rate = asyncio.run(run())
            print(f"thunder.actor_ingest_events_per_s.shards{shards} {rate:.0f} events/s")
            print(f"thunder.actor_fanout_p50_ms.shards{shards} {percentile(lat, 50):.2f} ms")
            name, value = tail(f"thunder.actor_fanout_p99_ms.shards{shards}", lat)
            print(f"{name} {value:.2f} ms")
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=1_000_000, help="posts in the world (default 1M)")
    ap.add_argument("--authors", type=int, default=100_000, help="authors (default 100k)")
    ap.add_argument("--queries", type=int, default=2000, help="requests per latency figure, each a fresh viewer (default 2,000)")
    ap.add_argument("--repeats", type=int, default=3, help="ingest runs (the median rate is printed) and actor latency runs")
    ap.add_argument("--shards", type=int, default=4, help="shards for the per-shard memory and actor fan-out figures")
    ap.add_argument("--no-actors", action="store_true", help="skip the Ray actor fan-out figure")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-shard memory figures (fresh processes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.posts < 1 or args.authors < 1 or args.queries < 1 or args.repeats < 1:
        ap.error("--posts, --authors, --queries and --repeats must be >= 1")

    cfg = ThunderConfig()
    progress(f"building the world: {args.posts} posts over {args.authors} authors")
    events, weights = make_world(args.posts, args.authors, args.seed, cfg.retention_ms)
    gc.collect()

    def build(config: ThunderConfig) -> ThunderStore:
        store = ThunderStore(config)
        for i in range(0, len(events), 10_000):
            store.apply(events[i : i + 10_000], NOW_MS)
        return store

    # Ingest: median of repeats into a fresh store (the store's RSS is measured on the last one).
    rates = []
    store = None
    for r in range(args.repeats):
        progress(f"ingest run {r + 1}/{args.repeats}")
        store = None
        gc.collect()
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        store = build(cfg)
        rates.append(len(events) / (time.perf_counter() - t0))
        gc.collect()
        rss = _rss_mb() - rss0
    assert store is not None
    live = store.stats()["posts"]
    print(f"thunder.ingest_events_per_s {statistics.median(rates):.0f} events/s")
    print(f"thunder.posts_held {live} posts")
    print(f"thunder.rss_mb_per_million_posts {rss * 1e6 / max(live, 1):.0f} MB")
    if not args.no_memory:
        progress("memory per shard (fresh processes)")
        per_million = 1e6 / len(events)
        whole_mb, _ = fresh_process(shard_rss_mb, args.posts, args.authors, args.seed, 0, 1)
        print(f"thunder.rss_mb_per_million_posts.shards1_per_shard {whole_mb * per_million:.0f} MB")
        n = args.shards
        shard_mb = max(fresh_process(shard_rss_mb, args.posts, args.authors, args.seed, s, n)[0] for s in range(n))
        print(f"thunder.rss_mb_per_million_posts.shards{n}_per_shard {shard_mb * per_million:.0f} MB")
        print(f"thunder.rss_ratio.shards{n}_per_shard_to_unsharded {shard_mb / whole_mb:.2f} x")

    by_author: dict[int, list[Post]] = {}
    for e in events:
        by_author.setdefault(e.post.author_id, []).append(e.post)
    progress("a second store with the per-author answer cache on (the cache-hit figures)")
    cached = build(msgspec.structs.replace(cfg, query_cache=True))
    p99 = tail_name("p99", args.queries)
    print(f"thunder.query_requests_per_figure {args.queries} requests")
    for follows in (200, 2000):
        progress(f"{args.queries} fresh requests of {follows} follows")
        reqs = make_requests(weights, follows, args.queries, args.seed + follows)
        tag = f"follows{follows}"
        gc.collect()
        fallback0 = store.counters["query_fallback_authors"]
        q = time_once(lambda req: store.in_network_posts(req, NOW_MS), reqs)
        fallback = (store.counters["query_fallback_authors"] - fallback0) / len(reqs)
        naive = time_once(lambda req: baseline_query(by_author, req), reqs)
        for name, key in (("p50_us", "p50"), (f"{p99}_us", "p99"), ("cpu_p50_us", "cpu_p50"), (f"cpu_{p99}_us", "cpu_p99")):
            print(f"thunder.query_uncached_{name}.{tag} {q[key]:.0f} us")
        print(f"thunder.query_mean_results.{tag} {q['results']:.0f} posts")
        print(f"thunder.query_fallback_authors_per_query.{tag} {fallback:.2f} authors")
        print(f"thunder.baseline_naive_p50_us.{tag} {naive['p50']:.0f} us")
        print(f"thunder.baseline_naive_{p99}_us.{tag} {naive['p99']:.0f} us")
        print(f"thunder.baseline_naive_cpu_p50_us.{tag} {naive['cpu_p50']:.0f} us")
        print(f"thunder.baseline_naive_cpu_{p99}_us.{tag} {naive['cpu_p99']:.0f} us")
        print(f"thunder.query_uncached_to_naive_{p99}.{tag} {q['p99'] / naive['p99']:.2f} x")
        print(f"thunder.query_uncached_to_naive_cpu_{p99}.{tag} {q['cpu_p99'] / naive['cpu_p99']:.2f} x")
        progress(f"the same {args.queries} requests on the cached store: misses, then hits")
        miss = time_once(lambda req: cached.in_network_posts(req, NOW_MS), reqs)
        hit = time_once(lambda req: cached.in_network_posts(req, NOW_MS), reqs)
        print(f"thunder.query_cache_miss_p50_us.{tag} {miss['p50']:.0f} us")
        print(f"thunder.query_cache_miss_{p99}_us.{tag} {miss['p99']:.0f} us")
        print(f"thunder.query_cache_hit_p50_us.{tag} {hit['p50']:.0f} us")
        print(f"thunder.query_cache_hit_{p99}_us.{tag} {hit['p99']:.0f} us")
    gc.collect()
    print(f"thunder.query_cached_authors {cached.stats()['cached_authors']} authors")
    if not args.no_actors:
        progress("through the Ray actors")
        reqs = make_requests(weights, 200, min(args.queries, 300), args.seed + 200)
        bench_actors(events, reqs, cfg, args.shards, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
