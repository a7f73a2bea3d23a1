"""Backpressure: latency of admitted and refused feed requests at an offered load well above capacity.

    python benchmarks/bench_backpressure.py --seconds 10 --overload 4          # serves its own app
    python benchmarks/bench_backpressure.py --url http://127.0.0.1:8000 --api-key KEY

Without ``--url`` it starts a local Ray and serves the app itself (the
``--world`` demo world in ``--data-dir``, seeded and trained on first use, an
API key of its own, ``--capacity`` as ``serving.max_inflight_feeds``) on a
free loopback port, and shuts it down at the end. With ``--url`` it drives a
running xserve (``xserve serve``). In one run:

1. **baseline**: ``--capacity`` closed-loop clients (default: the server's
   ``serving.max_inflight_feeds``, read from ``/v1/admin/stats``), each sending
   the next feed request when the last one answered: the server at capacity,
   nothing refused. Measures feeds/s and p99 latency (a max, named so, below 1,000 requests).
2. **overload**: an open-loop arrival process at ``--overload`` times the
   baseline's feeds/s (requests are sent on schedule, whether or not earlier
   ones answered): admitted requests must keep a latency near the baseline's
   and the surplus must be refused (503 + Retry-After) at once.

With ``--compare-no-admission`` (self-served only) it then redeploys with the
feed limit lifted and offers the same overload again: ``no_admission.*``
shows what the admission control saves (only Serve's own queue bounds left).

Prints one ``name value unit`` line per figure, medians over ``--repeats``
runs. Seeded (viewer ids), loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.figures import tail  # noqa: E402
from scripts.load_test import _loopback  # noqa: E402


@dataclass
class Phase:
    ok_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)
    refused_by_replica: int = 0  # JSON 503 from the ingress's admission control (the rest: Serve's proxy queue)
    missing_retry_after: int = 0
    errors: int = 0  # anything else: a non-200/503 status or a transport error
    seconds: float = 0.0


async def _feed(http: httpx.AsyncClient, viewer: int, phase: Phase) -> None:
    started = time.perf_counter()
    try:
        resp = await http.post("/v1/feed/for_you", json={"viewer_id": viewer})
    except httpx.HTTPError:
        phase.errors += 1
        return
    ms = (time.perf_counter() - started) * 1000
    if resp.status_code == 200:
        phase.ok_ms.append(ms)
    elif resp.status_code in (503, 429):
        phase.refused_ms.append(ms)
        phase.refused_by_replica += resp.content.startswith(b"{")
        phase.missing_retry_after += "retry-after" not in resp.headers
    else:
        phase.errors += 1


async def baseline(http: httpx.AsyncClient, clients: int, seconds: float, users: int, rng: random.Random) -> Phase:
    phase = Phase()
    deadline = time.perf_counter() + seconds

    async def loop(seed: float) -> None:
        r = random.Random(seed)
        while time.perf_counter() < deadline:
            await _feed(http, r.randint(1, users), phase)

    started = time.perf_counter()
    await asyncio.gather(*(loop(rng.random()) for _ in range(clients)))
    phase.seconds = time.perf_counter() - started
    return phase


async def overload(http: httpx.AsyncClient, rate: float, seconds: float, users: int, rng: random.Random) -> Phase:
    phase = Phase()
    tasks = []
    started = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_feed(http, rng.randint(1, users), phase)))
    await asyncio.gather(*tasks)
    phase.seconds = time.perf_counter() - started
    return phase


def serve_locally(args: argparse.Namespace) -> tuple[str, str, Callable[[], None]]:
    """Start Ray and the app on a free loopback port; ``ray.shutdown()`` stops both.

    Returns (url, api key, ``without_admission``): the last redeploys the same
    app with the feed limit lifted (only Serve's own bounds left), for the comparison.
    """
    import secrets
    import socket
    import warnings

    import ray
    from ray import serve

    from xserve.app import build_app
    from xserve.synth.bootstrap import prepare_data_dir
    from xserve.config import load_config, merge_config

    key = secrets.token_hex(16)
    serving = {"demo_world": args.world, "api_key": key, "bootstrap_train_examples": 1_000}
    if args.capacity:
        serving["max_inflight_feeds"] = args.capacity
    config = load_config(environ={}, overrides={"storage": {"data_dir": args.data_dir}, "serving": serving})
    unlimited = merge_config(config, {"serving": {"max_inflight_feeds": 1_000_000}})
    prepare_data_dir(config, progress=not args.quiet)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental")
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=quiet)
    url = f"http://127.0.0.1:{port}"

    def deploy(cfg: Any) -> None:
        serve.run(build_app(cfg, prepare=False), name="bench-backpressure", route_prefix="/", logging_config=quiet)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

    deploy(config)
    return url, key, lambda: deploy(unlimited)


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.max_connections, max_keepalive_connections=args.max_connections)
    async with httpx.AsyncClient(base_url=args.url, timeout=args.timeout, limits=limits) as http:
        try:
            (await http.get("/healthz")).raise_for_status()
            capacity = args.capacity
            if capacity is None:
                stats = await http.get("/v1/admin/stats", headers=headers)
                stats.raise_for_status()
                capacity = int(stats.json()["admission"]["feed"]["limit"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"bench_backpressure: error: {args.url} is not ready or /v1/admin/stats is refused "
                  f"(give --api-key or --capacity): {exc}", file=sys.stderr)
            return 2
        await baseline(http, capacity, min(2.0, args.seconds), args.users, rng)  # warm-up: caches, KV, batches
        rows = []
        for _ in range(args.repeats):
            base = await baseline(http, capacity, args.seconds, args.users, rng)
            base_rps = len(base.ok_ms) / base.seconds
            over = await overload(http, max(1.0, base_rps * args.overload), args.seconds, args.users, rng)
            rows.append((base, base_rps, over))
        unadmitted = []
        if args.without_admission is not None:
            await asyncio.to_thread(args.without_admission)
            await baseline(http, capacity, min(2.0, args.seconds), args.users, rng)  # warm-up of the new replica
            for _, base_rps, _ in rows:
                unadmitted.append(await overload(http, max(1.0, base_rps * args.overload), args.seconds, args.users, rng))

    def line(name: str, value: float, unit: str) -> None:
        print(f"backpressure.{name} {value:.6g} {unit}")

    med = statistics.median
    line("capacity", capacity, "feeds_in_flight")
    line("baseline_rps", med(r[1] for r in rows), "req/s")
    # each tail over the repeats' requests pooled: a p99 from 1,000 of them, else their maximum, named so
    line(*tail("baseline_p99_ms", [ms for r in rows for ms in r[0].ok_ms]), "ms")
    line("baseline_errors", sum(r[0].errors + len(r[0].refused_ms) for r in rows), "requests")
    line("offered_rps", med(len(r[2].ok_ms + r[2].refused_ms) / args.seconds for r in rows), "req/s")
    line("offered_x_capacity", args.overload, "x")
    line("admitted", med(len(r[2].ok_ms) for r in rows), "requests")
    line("admitted_rps", med(len(r[2].ok_ms) / r[2].seconds for r in rows), "req/s")
    line("rejected", med(len(r[2].refused_ms) for r in rows), "requests")
    line("rejected_by_replica", med(r[2].refused_by_replica for r in rows), "requests")
    line("rejected_without_retry_after", sum(r[2].missing_retry_after for r in rows), "requests")
    line("errors", sum(r[2].errors for r in rows), "requests")
    line("admitted_p50_ms", med(float(np.median(r[2].ok_ms)) if r[2].ok_ms else float("nan") for r in rows), "ms")
    line(*tail("admitted_p99_ms", [ms for r in rows for ms in r[2].ok_ms]), "ms")
    line("reject_p50_ms", med(float(np.median(r[2].refused_ms)) if r[2].refused_ms else float("nan") for r in rows), "ms")
    line(*tail("reject_p99_ms", [ms for r in rows for ms in r[2].refused_ms]), "ms")
    if unadmitted:  # the same offered load with the feed limit lifted: Serve's own queue bounds only
        line("no_admission.answered", med(len(u.ok_ms) for u in unadmitted), "requests")
        line("no_admission.rejected", med(len(u.refused_ms) for u in unadmitted), "requests")
        line("no_admission.errors", med(u.errors for u in unadmitted), "requests")
        line("no_admission.p50_ms", med(float(np.median(u.ok_ms)) if u.ok_ms else float("nan") for u in unadmitted), "ms")
        line(*tail("no_admission.p99_ms", [ms for u in unadmitted for ms in u.ok_ms]), "ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running server's base URL (loopback only); default: serve one here")
    p.add_argument("--data-dir", default="./xserve-bench-data", help="without --url: the data directory (default ./xserve-bench-data)")
    p.add_argument("--world", default="tiny", help="without --url: the demo world seeded on first use (default tiny)")
    p.add_argument("--quiet", action="store_true", help="no progress bars while preparing the data directory")
    p.add_argument("--compare-no-admission", action="store_true",
                   help="without --url: then redeploy with the feed limit lifted and offer the same overload again")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    p.add_argument("--overload", type=float, default=4.0, help="offered load as a multiple of the baseline feeds/s (default 4)")
    p.add_argument("--capacity", type=int, default=None, help="baseline clients (default: the server's max_inflight_feeds)")
    p.add_argument("--api-key", default="", help="the server's serving.api_key, to read /v1/admin/stats")
    p.add_argument("--repeats", type=int, default=3, help="runs of both phases; figures are medians (default 3)")
    p.add_argument("--users", type=int, default=None, help="viewer ids 1..N (default: the --world's users, or 2000 with --url)")
    p.add_argument("--max-connections", type=int, default=256, help="client connection pool (default 256)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.url is not None and not _loopback(args.url):
        p.error(f"--url must be a loopback address, got {args.url}")
    if args.seconds <= 0 or args.overload <= 0 or args.repeats < 1 or (args.users or 1) < 1 or (args.capacity or 1) < 1:
        p.error("--seconds and --overload must be > 0, --repeats, --users and --capacity >= 1")
    args.without_admission = None
    if args.url is not None:
        if args.compare_no_admission:
            p.error("--compare-no-admission needs the app served here (no --url)")
        args.users = args.users or 2_000
        return asyncio.run(run(args))
    from xserve.synth.world import WORLD_SIZES

    if args.world not in WORLD_SIZES:
        p.error(f"--world must be one of {sorted(WORLD_SIZES)}, got {args.world!r}")
    args.users = args.users or WORLD_SIZES[args.world].num_users
    import ray

    try:
        args.url, args.api_key, without_admission = serve_locally(args)
        args.without_admission = without_admission if args.compare_no_admission else None
        return asyncio.run(run(args))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
