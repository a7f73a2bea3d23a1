"""Load test: drive the real HTTP API with a mix of feed reads and writes for a fixed time.

    python scripts/load_test.py --url http://127.0.0.1:8000 --seconds 30 --clients 1

Each client loops: pick an operation by weight (feed read, engagement, post
create, follow/unfollow), send it, record latency and outcome. Every
``--explain-every``-th feed read asks for ``explain`` and records how many
candidates each pipeline stage saw. Prints one ``name value unit`` line per
figure (grep-able, as the benchmarks do). Bounded: at most ``--max-requests``
requests and ``--seconds`` seconds; loopback addresses only.

Viewers and authors are drawn from ``--users`` (ids 1..N, the demo world's
users); engagements target posts seen in earlier feed responses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import sys
import time
from collections import defaultdict
from urllib.parse import urlparse

import httpx
import numpy as np

from xserve import clock

ACTIONS = ("favorite", "click", "dwell", "reply", "repost", "profile_click", "not_interested")


def _loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Stats:
    def __init__(self) -> None:
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.stage_in: dict[str, list[int]] = defaultdict(list)
        self.stage_out: dict[str, list[int]] = defaultdict(list)
        self.stage_ms: dict[str, list[float]] = defaultdict(list)
        self.feed_sizes: list[int] = []
        self.degraded: int = 0


async def client_loop(http: httpx.AsyncClient, rng: random.Random, args, stats: Stats, deadline: float, budget: list[int]) -> None:
    seen_posts: list[tuple[int, int]] = []  # (post_id, author_id) from feeds
    weights = {"feed": args.feed_weight, "engage": args.engage_weight, "post": args.post_weight, "follow": args.follow_weight}
    ops, w = list(weights), list(weights.values())
    feeds = 0
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        op = rng.choices(ops, w)[0]
        if op == "engage" and not seen_posts:
            op = "feed"
        viewer = rng.randint(1, args.users)
        if op == "feed":
            feeds += 1
            explain = args.explain_every > 0 and feeds % args.explain_every == 0
            method, path, body = "POST", "/v1/feed/for_you", {"viewer_id": viewer, "explain": explain}
        elif op == "engage":
            pid, author = rng.choice(seen_posts)
            body = {"user_id": viewer, "post_id": pid, "author_id": author, "action": rng.choice(ACTIONS),
                    "timestamp_ms": clock.now_ms()}
            method, path = "POST", "/v1/engagements"
        elif op == "post":
            method, path, body = "POST", "/v1/posts", {"author_id": viewer, "text": f"load test post {rng.getrandbits(32)}"}
        else:
            target = rng.randint(1, args.users)
            if target == viewer:
                continue
            method, path, body = rng.choice(("PUT", "DELETE")), f"/v1/users/{viewer}/follows/{target}", None
        started = time.perf_counter()
        try:
            resp = await http.request(method, path, json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status_code != 200:
                stats.errors[f"{op}_{resp.status_code}"] += 1
                continue
            stats.latency_ms[op].append(elapsed)
            if op == "feed":
                data = resp.json()
                stats.feed_sizes.append(len(data["posts"]))
                stats.degraded += bool(data.get("degraded"))
                seen_posts.extend((p["post_id"], p["author_id"]) for p in data["posts"])
                del seen_posts[:-500]
                for r in data.get("trace", ()):
                    key = f"{r['stage']}.{r['component']}"
                    stats.stage_in[key].append(r["count_in"])
                    stats.stage_out[key].append(r["count_out"])
                    stats.stage_ms[key].append(r["duration_ms"])
        except httpx.HTTPError as exc:
            stats.errors[f"{op}_{type(exc).__name__}"] += 1


def report(stats: Stats, seconds: float, clients: int) -> None:
    def line(name: str, value: float, unit: str) -> None:
        print(f"{name} {value:.6g} {unit}")

    total = sum(len(v) for v in stats.latency_ms.values())
    line("load_clients", clients, "clients")
    line("load_duration", seconds, "s")
    line("load_requests_ok", total, "requests")
    line("load_throughput", total / seconds if seconds else 0.0, "req/s")
    line("load_errors", sum(stats.errors.values()), "requests")
    for kind, n in sorted(stats.errors.items()):
        line(f"load_errors_{kind}", n, "requests")
    for op, lat in sorted(stats.latency_ms.items()):
        a = np.asarray(lat)
        line(f"{op}_requests", len(a), "requests")
        for q in (50, 90, 99):
            line(f"{op}_latency_p{q}", float(np.percentile(a, q)), "ms")
    if stats.feed_sizes:
        line("feed_posts_mean", float(np.mean(stats.feed_sizes)), "posts")
        line("feed_degraded", stats.degraded, "responses")
    for stage in stats.stage_in:  # pipeline order; medians over the explained feeds
        line(f"stage_{stage}_in", float(np.median(stats.stage_in[stage])), "candidates")
        line(f"stage_{stage}_out", float(np.median(stats.stage_out[stage])), "candidates")
        line(f"stage_{stage}_latency_p50", float(np.median(stats.stage_ms[stage])), "ms")


async def run(args) -> int:
    stats = Stats()
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits) as http:
        try:
            (await http.get("/healthz")).raise_for_status()
        except httpx.HTTPError as exc:
            print(f"load_test: error: {args.url}/healthz is not ready: {exc}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        deadline = started + args.seconds
        budget = [args.max_requests]
        await asyncio.gather(
            *(client_loop(http, random.Random(rng.random()), args, stats, deadline, budget) for _ in range(args.clients))
        )
        report(stats, time.perf_counter() - started, args.clients)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (loopback only)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to run (default 30)")
    p.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients (default 1)")
    p.add_argument("--users", type=int, default=2_000, help="user ids 1..N to act as (default 2000: the small world)")
    p.add_argument("--feed-weight", type=float, default=0.7)
    p.add_argument("--engage-weight", type=float, default=0.2)
    p.add_argument("--post-weight", type=float, default=0.05)
    p.add_argument("--follow-weight", type=float, default=0.05)
    p.add_argument("--explain-every", type=int, default=5, help="every k-th feed read asks for explain (0 = never)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not _loopback(args.url):
        p.error(f"--url must be a loopback address, got {args.url}")
    if args.seconds <= 0 or args.clients < 1 or args.max_requests < 1 or args.users < 2:
        p.error("--seconds must be > 0, --clients and --max-requests >= 1, --users >= 2")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
