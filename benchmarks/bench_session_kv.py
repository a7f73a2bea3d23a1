"""Session workload on the ranker's KV caches, replayed without Serve: trim block x router, in one run.

The parts the live path uses, with no model and no Ray: each viewer's history is an
``EngagementSequence`` read through its context window (``window(history_len, trim_block)``), each
replica's cache is a ``KVCacheManager`` sized as a replica's (``ranker_serving.kv_cache_bytes`` over the
default model's block bytes), and a request goes to a replica by ``ViewerAffinity`` (the
``viewer_affinity`` router's policy; equal loads) or to a random one (Serve's ``power_of_two`` with equal
loads). Viewers start with ``--history`` to 63 more entries (a full window at the default 150, each
viewer at its own point of the trim cycle), then, in turn,
engage with 0..2 posts and read a page; every ``--pages`` pages they refresh. Counted over repeat
requests (each viewer's first request excluded), as ``scripts/load_test.py --sessions`` counts the live
app. Prints ``sim.kv_reuse_rate.<router>.block<B>`` (hit or partial hit), ``sim.kv_hit_rate...`` and
``sim.kv_partial_hit_rate...`` and ``sim.kv_cached_token_share...`` (context positions read from a cache,
not encoded) lines; about a minute, no model.

    python benchmarks/bench_session_kv.py --viewers 300 --requests 40
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xserve.config import MixerConfig, PhoenixConfig, RankerServingConfig  # noqa: E402
from xserve.phoenix.serving.kv_cache import KVCacheManager, block_bytes, num_blocks_for_budget  # noqa: E402
from xserve.phoenix.serving.routing import ViewerAffinity  # noqa: E402
from xserve.schema import Action, Engagement  # noqa: E402
from xserve.users.history import EngagementSequence  # noqa: E402


def simulate(viewers: int, requests: int, replicas: int, trim_block: int, router: str, history: int,
             seed: int) -> dict[str, float]:
    """Counters over repeat requests for one (trim block, router)."""
    phoenix, serving, mixer = PhoenixConfig(), RankerServingConfig(), MixerConfig()
    per_block = block_bytes(phoenix.num_layers, phoenix.num_kv_heads, phoenix.key_size, serving.block_size, 4)
    caches = {f"r{i}": KVCacheManager(num_blocks_for_budget(serving.kv_cache_bytes, per_block), serving.block_size)
              for i in range(replicas)}
    policy, rng = ViewerAffinity(serving.affinity_max_imbalance), random.Random(seed)
    seqs = {}
    clock = 1_000
    for v in range(1, viewers + 1):
        seqs[v] = EngagementSequence(capacity=256, window_ms=mixer.history_window_ms)
        for _ in range(history + rng.randrange(64)):  # viewers at every phase of the trim cycle
            clock += 1
            seqs[v].add(Engagement(v, clock, v, Action.FAVORITE, clock * mixer.history_window_ms))
    counts = dict.fromkeys(("queries", "hits", "partial_hits", "misses", "tokens", "cached_tokens"), 0)
    loads = dict.fromkeys(caches, 0)
    for step in range(requests):
        for v in range(1, viewers + 1):
            for _ in range(rng.randint(0, 2) if step else 0):
                clock += 1
                seqs[v].add(Engagement(v, clock, v, Action.FAVORITE, clock * mixer.history_window_ms))
            window = seqs[v].window(mixer.history_length, trim_block)
            keys = [("user", v)] + [(i.post_id, i.author_id) for i in window]
            replica = policy.choose(v, loads)[0] if router == "viewer_affinity" else rng.choice(list(caches))
            cache = caches[replica]
            alloc = cache.allocate(keys)
            cache.commit(alloc)
            cache.release(alloc)
            if step:  # a repeat request
                counts["queries"] += 1
                counts["tokens"] += alloc.num_tokens
                counts["cached_tokens"] += alloc.num_cached_tokens
                if alloc.is_hit:
                    counts["hits"] += 1
                elif alloc.num_cached_tokens:
                    counts["partial_hits"] += 1
                else:
                    counts["misses"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--viewers", type=int, default=300, help="sessions (default 300)")
    p.add_argument("--requests", type=int, default=40, help="requests per viewer (default 40)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--history", type=int, default=150, help="entries each viewer starts with (default 150)")
    p.add_argument("--blocks", default="1,8,16,32,64", help="trim blocks to compare (1 = the sliding window)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for block in (int(b) for b in args.blocks.split(",")):
        for router in ("viewer_affinity", "power_of_two"):
            c = simulate(args.viewers, args.requests, args.replicas, block, router, args.history, args.seed)
            q = c["queries"]
            name = f"{router}.block{block}"
            print(f"sim.kv_reuse_rate.{name} {(c['hits'] + c['partial_hits']) / q:.4f} ratio")
            print(f"sim.kv_hit_rate.{name} {c['hits'] / q:.4f} ratio")
            print(f"sim.kv_partial_hit_rate.{name} {c['partial_hits'] / q:.4f} ratio")
            print(f"sim.kv_cached_token_share.{name} {c['cached_tokens'] / c['tokens']:.4f} ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
