"""Load test: drive the real HTTP API with a mix of feed reads and writes for a fixed time.

    python scripts/load_test.py --url http://127.0.0.1:8000 --seconds 30 --clients 1

Each client loops: pick an operation by weight (feed read, engagement, post
create, follow/unfollow), send it, record latency and outcome. Every
``--explain-every``-th feed read asks for ``explain`` and records how many
candidates each pipeline stage saw; those are timed apart (``feed_explained_*``), so
the feed latencies are the plain requests'. Prints one ``name value unit`` line per
figure (grep-able, as the benchmarks do). Bounded: at most ``--max-requests``
requests and ``--seconds`` seconds; loopback addresses only.

Viewers and authors are drawn from ``--users`` (ids 1..N, the demo world's
users); engagements target posts seen in earlier feed responses.

``--sessions N`` runs a session workload instead: N viewers (a seeded sample of
``--users``), shared out among the clients, each reading ``--pages`` pages (the
next page a bottom request with what was served), engaging with a few of the
posts it was shown between requests (``--engagements-per-page`` on average), then
refreshing (a top request) and reading again. Every session first opens the app
once (its first page); the KV counters are read after those first pages and again
at the end (``GET /v1/admin/stats``, the ingress's per-replica count of what each
Ranker replica read from its KV cache), so ``serve.kv_hit_rate`` (the context
unchanged), ``serve.kv_partial_hit_rate`` (its cached prefix reused after the
history grew) and ``serve.kv_reuse_rate`` (either) are over repeat requests only.
``load.ranker_share_of_feed`` is the ranker's (``PhoenixScorer``) share of the
explained feeds' latency.

When the server runs on this machine (a process here listens on the URL's port), the run also prints
``load.cpu_ms_per_feed.<kind>``: the CPU-seconds each kind of the app's processes (Serve's proxy, the
ingress, Retrieval, the Ranker, the store actors, Ray's own) spent during the timed run, read from
``/proc`` (``scripts/proc_cpu.py``), per feed served (writes in the mix are counted in), with their
``.total`` and ``load.cpu_cores_busy``; the ramp prints each step's ``.total``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `scripts` is a package of it

from scripts.figures import percentile, tail  # noqa: E402
from scripts.proc_cpu import AppProcesses, cpu_by_kind  # noqa: E402
from xserve import clock  # noqa: E402

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
        self.cpu_s: dict[str, float] = {}  # the local app's CPU-seconds in the run, by process kind (empty: remote)
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.stage_in: dict[str, list[int]] = defaultdict(list)
        self.stage_out: dict[str, list[int]] = defaultdict(list)
        self.stage_ms: dict[str, list[float]] = defaultdict(list)
        self.feed_sizes: list[int] = []
        self.degraded: int = 0
        self.stage_wall_ms: dict[str, list[float]] = defaultdict(list)  # per explained feed: a stage's own time
        self.candidates_ranked: list[int] = []  # per explained feed: candidates the PhoenixScorer sent the ranker
        self.explained: list[tuple[int, int, float]] = []  # (viewer, candidates ranked, feed latency ms)
        self.ranker_ms: list[float] = []  # PhoenixScorer's time in each explained feed
        self.explained_feed_ms: list[float] = []  # those feeds' latency


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
        explain = False
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
            # an explained feed carries every stage's trace and score terms (tens of ms more for ~1,500
            # candidates): it is timed apart, and the feed figures are the plain requests'
            stats.latency_ms["feed_explained" if explain else op].append(elapsed)
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
                if data.get("trace"):
                    record_stages(stats, viewer, data["trace"], elapsed)
        except httpx.HTTPError as exc:
            stats.errors[f"{op}_{type(exc).__name__}"] += 1


# Stages whose components run concurrently (CandidatePipeline.execute gathers them): the stage takes as long as
# its slowest component. The others run their components one after another: the stage takes their sum.
CONCURRENT_STAGES = frozenset({"query_hydrator", "source", "hydrator", "post_selection_hydrator"})
RANKER_COMPONENT = "PhoenixScorer"  # its count_in is the candidates sent to the ranker
KNEE_P99_MS = 500.0  # the knee: requests/s where feed p99 reaches this


def record_stages(stats: Stats, viewer: int, trace: list[dict], feed_ms: float) -> None:
    """One explained feed: each stage's own time (max or sum of its components, as they ran), the time
    outside the pipeline (HTTP, JSON, the viewer's user-store read, queueing: the feed's latency minus its
    stages), and the candidates ranked."""
    by_stage: dict[str, list[float]] = defaultdict(list)
    for r in trace:
        if r["stage"] != "side_effect":  # runs after the response
            by_stage[r["stage"]].append(r["duration_ms"])
        if r["component"] == RANKER_COMPONENT:
            stats.candidates_ranked.append(r["count_in"])
            stats.explained.append((viewer, r["count_in"], feed_ms))
    inside = 0.0
    for stage, times in by_stage.items():
        took = max(times) if stage in CONCURRENT_STAGES else sum(times)
        stats.stage_wall_ms[stage].append(took)
        inside += took
    stats.stage_wall_ms["outside_pipeline"].append(max(0.0, feed_ms - inside))


async def flop_bound_ms(http: httpx.AsyncClient, stats: Stats, phoenix, peak_gflops: float) -> list[float]:
    """The ranker FLOP bound of each explained feed, ms: its FLOPs (the viewer's history as the ranker saw
    it, the candidates it ranked) over the matmul peak of this run. Reads each viewer's history once,
    after the timed run."""
    from xserve.phoenix.model.flops import flop_bound_s

    history: dict[int, int] = {}
    bounds = []
    for viewer, ranked, _ in stats.explained:
        if viewer not in history:
            resp = await http.get(f"/v1/users/{viewer}")
            history[viewer] = len(resp.json().get("history", ())) if resp.status_code == 200 else phoenix.history_len
        s = min(history[viewer], phoenix.history_len)
        bounds.append(flop_bound_s(phoenix, s, ranked, peak_gflops) * 1000)
    return bounds


def standard_report(stats: Stats, seconds: float, bounds_ms: list[float], peak_gflops: float | None) -> None:
    """The issue-16 lines: ``load.*``, one per figure (over fewer than 1,000 feeds the p99 line is the
    maximum, ``load.feed_max_ms``; ``load.feed_samples`` says how many)."""
    def line(name: str, value: float, unit: str) -> None:
        print(f"{name} {value:.6g} {unit}")

    feeds = stats.latency_ms.get("feed", [])
    total = sum(len(v) for v in stats.latency_ms.values())
    line("load.feed_samples", len(feeds), "requests")
    line("load.feed_p50_ms", percentile(feeds, 50), "ms")
    line(*tail("load.feed_p99_ms", feeds), "ms")
    line("load.requests_per_s", total / seconds if seconds else 0.0, "req/s")
    line("load.candidates_ranked_p50", percentile(stats.candidates_ranked, 50), "candidates")
    for stage, times in stats.stage_wall_ms.items():
        line(f"load.stage_p50_ms.{stage}", percentile(times, 50), "ms")
    if peak_gflops is not None:
        line("load.matmul_peak_gflops", peak_gflops, "GFLOP/s")
    if bounds_ms:
        line("load.ranker_flop_bound_p50_ms", percentile(bounds_ms, 50), "ms")
        # the one-client goal: feed p50 over the FLOP bound of the median request (explained feeds' own p50
        # would be a smaller sample; the bound varies little between requests)
        line("load.feed_p50_vs_flop_bound", percentile(feeds, 50) / percentile(bounds_ms, 50), "x")


def knee(steps: list[tuple[int, float, float]], p99_ms: float = KNEE_P99_MS) -> tuple[float, bool]:
    """Requests/s where feed p99 reaches ``p99_ms``, interpolated between ramp steps (clients, req/s, p99).

    Returns (requests/s, reached): when no step reaches it, the best requests/s seen and False (the knee
    lies beyond the ramp); when the first step is already past it, that step's requests/s."""
    for i, (_, rps, p99) in enumerate(steps):
        if p99 >= p99_ms:
            if i == 0:
                return rps, True
            _, rps0, p0 = steps[i - 1]
            return rps0 + (rps - rps0) * (p99_ms - p0) / (p99 - p0), True
    return max((rps for _, rps, _ in steps), default=0.0), False


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
        for q in (50, 90):
            line(f"{op}_latency_p{q}", float(np.percentile(a, q)), "ms")
        line(*tail(f"{op}_latency_p99", lat), "ms")
    if stats.feed_sizes:
        line("feed_posts_mean", float(np.mean(stats.feed_sizes)), "posts")
        line("feed_degraded", stats.degraded, "responses")
    for stage in stats.stage_in:  # pipeline order; medians over the explained feeds
        line(f"stage_{stage}_in", float(np.median(stats.stage_in[stage])), "candidates")
        line(f"stage_{stage}_out", float(np.median(stats.stage_out[stage])), "candidates")
        line(f"stage_{stage}_latency_p50", float(np.median(stats.stage_ms[stage])), "ms")


class Session:
    """One viewer reading the feed: pages, engagements between them, refreshes."""

    def __init__(self, viewer: int, pages: int) -> None:
        self.viewer = viewer
        self.pages = pages  # pages read before a refresh
        self.page = 0  # pages read since the last refresh
        self.served: list[int] = []  # post ids served since the last refresh (sent back on the next page)
        self.shown: list[tuple[int, int]] = []  # (post_id, author_id) of the last page

    def next_feed(self, explain: bool) -> dict:
        """The next feed request: the next page (bottom) or, after ``pages`` pages, a refresh (top)."""
        if self.page >= self.pages:
            self.page, self.served = 0, []
        body: dict = {"viewer_id": self.viewer, "explain": explain}
        if self.page:
            body |= {"is_bottom_request": True, "served_ids": self.served[-500:]}
        return body

    def read(self, posts: list[dict]) -> None:
        self.page += 1
        self.shown = [(p["post_id"], p["author_id"]) for p in posts]
        self.served += [p["post_id"] for p in posts]

    def engagements(self, rng: random.Random, mean: float) -> list[dict]:
        """Engagements on posts of the last page: 0..2·mean of them (``mean`` on average), distinct posts."""
        n = min(len(self.shown), rng.randint(0, max(0, round(2 * mean))))
        return [{"user_id": self.viewer, "post_id": pid, "author_id": author, "action": rng.choice(ACTIONS),
                 "timestamp_ms": clock.now_ms()} for pid, author in rng.sample(self.shown, n)]


async def _feed(http: httpx.AsyncClient, body: dict, stats: Stats) -> list[dict] | None:
    started = time.perf_counter()
    try:
        resp = await http.post("/v1/feed/for_you", json=body)
    except httpx.HTTPError as exc:
        stats.errors[f"feed_{type(exc).__name__}"] += 1
        return None
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status_code != 200:
        stats.errors[f"feed_{resp.status_code}"] += 1
        return None
    stats.latency_ms["feed"].append(elapsed)
    data = resp.json()
    stats.feed_sizes.append(len(data["posts"]))
    stats.degraded += bool(data.get("degraded"))
    trace = data.get("trace", ())
    for r in trace:
        key = f"{r['stage']}.{r['component']}"
        stats.stage_in[key].append(r["count_in"])
        stats.stage_out[key].append(r["count_out"])
        stats.stage_ms[key].append(r["duration_ms"])
    if trace:  # the stage lines, and the ranker's share of this feed's latency
        record_stages(stats, body["viewer_id"], trace, elapsed)
        stats.ranker_ms.append(sum(r["duration_ms"] for r in trace if r["component"] == RANKER_COMPONENT))
        stats.explained_feed_ms.append(elapsed)
    return data["posts"]


async def _engage(http: httpx.AsyncClient, bodies: list[dict], stats: Stats) -> None:
    if not bodies:
        return
    started = time.perf_counter()
    try:
        resp = await http.post("/v1/engagements", json=bodies)
    except httpx.HTTPError as exc:
        stats.errors[f"engage_{type(exc).__name__}"] += 1
        return
    if resp.status_code != 200:
        stats.errors[f"engage_{resp.status_code}"] += 1
        return
    stats.latency_ms["engage"].append((time.perf_counter() - started) * 1000)


async def session_loop(http: httpx.AsyncClient, rng: random.Random, args, stats: Stats, sessions: list[Session],
                       deadline: float, budget: list[int]) -> None:
    """Steps through this client's sessions in turn: engage with the last page, then read the next feed."""
    feeds = 0
    while time.perf_counter() < deadline and budget[0] > 0:
        for session in sessions:
            if time.perf_counter() >= deadline or budget[0] <= 0:
                return
            budget[0] -= 1
            await _engage(http, session.engagements(rng, args.engagements_per_page), stats)
            feeds += 1
            posts = await _feed(http, session.next_feed(args.explain_every > 0 and feeds % args.explain_every == 0),
                                stats)
            if posts is not None:
                session.read(posts)


async def context_reuse(http: httpx.AsyncClient) -> dict[str, dict[str, float]]:
    """The ingress's count of what each Ranker replica read from its KV cache (``GET /v1/admin/stats``)."""
    resp = await http.get("/v1/admin/stats")
    resp.raise_for_status()
    return resp.json().get("ranker_context_reuse", {})


def reuse_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float]:
    """Counters summed over replicas, ``after - before``."""
    names = ("queries", "hits", "partial_hits", "misses", "hit_tokens", "computed_tokens")
    return {n: sum(s.get(n, 0) for s in after.values()) - sum(s.get(n, 0) for s in before.values()) for n in names}


def report_sessions(stats: Stats, reuse: dict[str, float], replicas: int, sessions: int) -> None:
    def line(name: str, value: float, unit: str) -> None:
        print(f"{name} {value:.6g} {unit}")

    q = reuse["queries"]
    line("load.sessions", sessions, "sessions")
    line("serve.kv_repeat_contexts", q, "contexts")  # ranked after each session's first page
    line("serve.kv_replicas", replicas, "replicas")
    line("serve.kv_hit_rate", reuse["hits"] / q if q else 0.0, "ratio")
    line("serve.kv_partial_hit_rate", reuse["partial_hits"] / q if q else 0.0, "ratio")
    line("serve.kv_reuse_rate", (reuse["hits"] + reuse["partial_hits"]) / q if q else 0.0, "ratio")
    tokens = reuse["hit_tokens"] + reuse["computed_tokens"]
    line("serve.kv_cached_token_share", reuse["hit_tokens"] / tokens if tokens else 0.0, "ratio")
    if stats.explained_feed_ms:
        line("load.ranker_share_of_feed", sum(stats.ranker_ms) / sum(stats.explained_feed_ms), "ratio")
        line("load.ranker_p50_ms", float(np.median(stats.ranker_ms)), "ms")


async def run_sessions(args, http: httpx.AsyncClient) -> None:
    stats = Stats()
    rng = random.Random(args.seed)
    viewers = rng.sample(range(1, args.users + 1), min(args.sessions, args.users))
    sessions = [Session(v, args.pages) for v in viewers]
    started = time.perf_counter()
    for i in range(0, len(sessions), args.clients):  # everyone opens the app once: the first pages, not repeats
        for session, posts in zip(sessions[i : i + args.clients], await asyncio.gather(
                *(_feed(http, s.next_feed(False), stats) for s in sessions[i : i + args.clients])), strict=True):
            if posts is not None:
                session.read(posts)
    before = await context_reuse(http)
    stats.latency_ms.clear()  # the figures below are the repeat requests'
    deadline = time.perf_counter() + args.seconds
    budget = [args.max_requests]
    await asyncio.gather(*(session_loop(http, random.Random(rng.random()), args, stats, sessions[k :: args.clients],
                                        deadline, budget) for k in range(args.clients)))
    seconds = time.perf_counter() - started
    after = await context_reuse(http)
    report(stats, seconds, args.clients)
    report_sessions(stats, reuse_delta(before, after), len(after), len(sessions))


async def run(args) -> int:
    limits = httpx.Limits(max_connections=max(args.ramp or [args.clients]), max_keepalive_connections=max(args.ramp or [args.clients]))
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits, headers=headers) as http:
        try:
            (await http.get("/healthz")).raise_for_status()
        except httpx.HTTPError as exc:
            print(f"load_test: error: {args.url}/healthz is not ready: {exc}", file=sys.stderr)
            return 2
        if args.sessions:
            await run_sessions(args, http)
            return 0
        if args.ramp:
            return await run_ramp(http, args)
        stats, seconds = await drive(http, args, args.clients, args.seed)
        report(stats, seconds, args.clients)
        await report_flop_bound(http, args, stats, seconds)
        cpu_lines(stats, seconds)
    return 0


async def drive(http: httpx.AsyncClient, args, clients: int, seed: int) -> tuple[Stats, float]:
    """``clients`` client loops for ``args.seconds`` (or ``args.max_requests``); the stats and the seconds taken."""
    stats = Stats()
    rng = random.Random(seed)
    started = time.perf_counter()
    deadline = started + args.seconds
    budget = [args.max_requests]
    app = AppProcesses.serving(urlparse(args.url).port or 80)
    before = app.cpu_s() if app else {}
    await asyncio.gather(
        *(client_loop(http, random.Random(rng.random()), args, stats, deadline, budget) for _ in range(clients))
    )
    if app:
        stats.cpu_s = cpu_by_kind(before, app.cpu_s())
    return stats, time.perf_counter() - started


def cpu_lines(stats: Stats, seconds: float, prefix: str = "load.", kinds: bool = True) -> None:
    """The local app's CPU per feed served, by process kind (largest first) and in total (module docstring)."""
    feeds = len(stats.latency_ms.get("feed", []))
    if not stats.cpu_s or not feeds:
        return
    total = sum(stats.cpu_s.values())
    if kinds:
        for kind, s in sorted(stats.cpu_s.items(), key=lambda kv: -kv[1]):
            if s > 0:
                print(f"{prefix}cpu_ms_per_feed.{kind} {1000 * s / feeds:.4g} ms")
    print(f"{prefix}cpu_ms_per_feed.total {1000 * total / feeds:.4g} ms")
    if kinds:
        print(f"{prefix}cpu_cores_busy {total / seconds:.3g} cores")


async def report_flop_bound(http: httpx.AsyncClient, args, stats: Stats, seconds: float) -> None:
    """The standard ``load.*`` lines, with the FLOP bound from a matmul peak measured now (after the timed
    run, so the probe does not compete with it), at the ranker's own thread count."""
    from xserve.config import load_config
    from xserve.phoenix.model.flops import matmul_peak_gflops

    config = load_config(args.config)
    peak = matmul_peak_gflops(threads=config.ranker_serving.num_threads) if stats.explained else None
    bounds = await flop_bound_ms(http, stats, config.phoenix, peak) if peak else []
    standard_report(stats, seconds, bounds, peak)


async def run_ramp(http: httpx.AsyncClient, args) -> int:
    """One ``--seconds`` run per client count of ``--ramp``; per step ``load.ramp.c<N>.*`` lines, then the knee."""
    steps = []
    for i, clients in enumerate(args.ramp):
        stats, seconds = await drive(http, args, clients, args.seed + i)
        feeds = stats.latency_ms.get("feed", [])
        rps = sum(len(v) for v in stats.latency_ms.values()) / seconds
        p99 = percentile(feeds, 99)
        print(f"load.ramp.c{clients}.requests_per_s {rps:.6g} req/s")
        print(f"load.ramp.c{clients}.feed_p50_ms {percentile(feeds, 50):.6g} ms")
        name, value = tail(f"load.ramp.c{clients}.feed_p99_ms", feeds)
        print(f"{name} {value:.6g} ms")
        print(f"load.ramp.c{clients}.feed_samples {len(feeds)} requests")
        cpu_lines(stats, seconds, f"load.ramp.c{clients}.", kinds=False)
        sys.stdout.flush()
        steps.append((clients, rps, p99))
        if p99 >= KNEE_P99_MS:
            break  # past the knee: more clients only queue
    rps, reached = knee(steps)
    # not reached: the knee is beyond the ramp, and this is the most the ramp drove (a lower bound)
    print(f"load.knee_requests_per_s {rps:.6g} {'req/s' if reached else 'req/s_lower_bound'}")
    return 0


def _client_counts(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or min(counts) < 1 or counts != sorted(counts):
        raise argparse.ArgumentTypeError(f"--ramp takes increasing client counts >= 1, e.g. 1,2,4,8; got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="load.cpu_ms_per_feed.* (CPU per feed by process kind, from /proc) is printed only for a server "
               "on this machine: one whose port a local process listens on.")
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
    p.add_argument("--config", default=None, help="the server's config file, for the ranker's shape (default: defaults + env)")
    p.add_argument("--ramp", type=_client_counts, default=None,
                   help="client counts to step through, e.g. 1,2,4,8: --seconds each, then the knee (feed p99 = 500 ms)")
    p.add_argument("--sessions", type=int, default=0,
                   help="session workload: this many viewers read pages, engage and refresh (0 = the operation mix)")
    p.add_argument("--pages", type=int, default=3, help="--sessions: pages read before a refresh (default 3)")
    p.add_argument("--engagements-per-page", type=float, default=1.0,
                   help="--sessions: engagements between two requests of a session, on average (default 1)")
    p.add_argument("--api-key", default="", help="sent as X-API-Key (a server with serving.api_key needs it for stats)")
    args = p.parse_args(argv)
    if not _loopback(args.url):
        p.error(f"--url must be a loopback address, got {args.url}")
    if args.seconds <= 0 or args.clients < 1 or args.max_requests < 1 or args.users < 2:
        p.error("--seconds must be > 0, --clients and --max-requests >= 1, --users >= 2")
    if args.sessions < 0 or args.pages < 1 or args.engagements_per_page < 0:
        p.error("--sessions must be >= 0, --pages >= 1, --engagements-per-page >= 0")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
