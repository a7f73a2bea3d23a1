#!/usr/bin/env python
"""A model hot swap, and a rollback, under a feed load: no 5xx, no request scored by two versions, and the p99.

    python scripts/hot_swap_check.py                         # a fresh tiny world, the app started here
    python scripts/hot_swap_check.py --url http://127.0.0.1:8000 --data-dir ./xserve-data

Steps: the live ranker is registered as model version ``base`` and made current; a feed load starts
(``--clients`` loops of explained feed reads over the world's viewers); after ``--before-s`` seconds a new
version ``next`` is written (the live weights with the action head's bias moved, or with ``--train`` a real
``xserve train`` run) and ``models/CURRENT`` switched to it; once every answer names it the load goes on
``--during-s`` seconds, then ``xserve models rollback`` switches back and the load runs until every answer
names ``base`` again. Each answer's posts name the ranker version that scored them: an answer naming two
is a mixed-version request.

Prints one ``name value unit`` line per figure: ``swap.requests``, ``swap.errors_5xx``,
``swap.mixed_version_requests``, ``swap.p99_ms_before`` and ``swap.p99_ms_during`` (a ``max`` label
below 1,000 samples), ``swap.p99_ratio``, ``swap.visible_s`` and ``swap.rollback_visible_s`` (from the
switch until every later answer names the new version); exits 1 on a 5xx, a mixed request, or a
switch that never became visible.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from scripts.figures import MIN_P99_SAMPLES, percentile, tail, tail_name  # noqa: E402
from xserve import clock  # noqa: E402
from xserve.storage.layout import RANKER_FILE, TOWERS_FILE, DataDirLayout  # noqa: E402
from xserve.storage.model_versions import ModelVersions  # noqa: E402

__all__ = ["SwapProbe", "derive_version", "feed_versions", "register_live", "main"]


def feed_versions(feed: dict) -> set[str]:
    """The ranker versions named by a feed answer's posts (empty when nothing was ranked)."""
    return {p["model_version"] for p in feed.get("posts", ()) if p.get("model_version")}


@dataclass
class SwapProbe:
    """Every answer of the load: when it started, how long it took, its status and the versions it names."""

    samples: list[tuple[float, float, int, frozenset[str]]] = field(default_factory=list)  # (start, ms, status, versions)

    def add(self, started: float, ms: float, status: int, versions: set[str]) -> None:
        self.samples.append((started, ms, status, frozenset(versions)))

    def errors_5xx(self) -> int:
        return sum(1 for _, _, s, _ in self.samples if s >= 500 or s == 0)

    def mixed(self) -> int:
        return sum(1 for *_, v in self.samples if len(v) > 1)

    def latencies(self, start: float, end: float) -> list[float]:
        return [ms for t, ms, s, _ in self.samples if start <= t < end and s == 200]

    def visible_at(self, version: str, since: float) -> float | None:
        """The start time of the first answer after ``since`` from which every ranked answer names ``version``."""
        later = [(t, v) for t, _, s, v in self.samples if t >= since and s == 200 and v]
        for i, (t, _) in enumerate(later):
            if all(v == {version} for _, v in later[i:]):
                return t
        return None


def register_live(versions: ModelVersions, name: str) -> str:
    """Make the live checkpoints a version (hard links: no copy) and switch to it; returns the ranker's version."""
    import torch

    ranker, towers = versions.live_paths()
    vdir = versions.begin(name)
    for src in (ranker, towers):
        try:
            (vdir / src.name).hardlink_to(src.resolve())
        except OSError:
            shutil.copy2(src.resolve(), vdir / src.name)
    ranker_version = torch.load(vdir / ranker.name, map_location="cpu", weights_only=True)["version"]
    versions.finish(name, clock.now_ms(), ranker_version=ranker_version, towers_version="(live)")
    versions.switch(name, clock.now_ms())
    return ranker_version


def derive_version(versions: ModelVersions, base: str, name: str, shift: float = 0.01) -> str:
    """A new version ``name``: ``base``'s ranker with the action head's bias moved by ``shift`` (another digest,
    nearly the same scores) and the same towers; returns the new ranker version. Not switched."""
    import torch

    from xserve.phoenix.model.checkpoint import load_ranker, save_checkpoint

    loaded = load_ranker(versions.ranker_path(base))
    with torch.no_grad():
        loaded.model.action_head.bias.add_(shift)
    vdir = versions.begin(name)
    ranker_version = save_checkpoint(vdir / RANKER_FILE, "ranker", loaded.model, loaded.hasher, loaded.metrics,
                                     loaded.extra)
    (vdir / TOWERS_FILE).hardlink_to(versions.towers_path(base).resolve())
    versions.finish(name, clock.now_ms(), ranker_version=ranker_version, towers_version="(as base)")
    return ranker_version


async def load_loop(url: str, viewers: list[int], probe: SwapProbe, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = await http.post("/v1/feed/for_you", json={"viewer_id": rng.choice(viewers), "limit": 20})
                status, versions = r.status_code, feed_versions(r.json()) if r.status_code == 200 else set()
            except httpx.HTTPError:
                status, versions = 0, set()
            probe.add(started, (time.monotonic() - started) * 1000, status, versions)
            if status in (503, 0):
                await asyncio.sleep(0.05)


async def wait_visible(probe: SwapProbe, version: str, since: float, timeout_s: float, settle: int = 20) -> float | None:
    """Seconds from ``since`` until every answer names ``version`` (``settle`` answers after it), or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        at = probe.visible_at(version, since)
        if at is not None and sum(1 for t, *_ in probe.samples if t >= at) >= settle:
            return at - since
        await asyncio.sleep(0.2)
    return None


async def swap_under_load(url: str, data_dir: Path, clients: int, viewers: list[int], before_s: float, during_s: float,
                          timeout_s: float, train: bool, say) -> dict:
    versions = ModelVersions(data_dir)
    base = versions.new_name(clock.now_ms()) + "-base"
    base_version = register_live(versions, base)
    say(f"registered the live ranker as model version {base} ({base_version}); starting {clients} clients")
    probe, stop = SwapProbe(), asyncio.Event()
    tasks = [asyncio.create_task(load_loop(url, viewers, probe, stop, i)) for i in range(clients)]
    out: dict = {}
    try:
        t0 = time.monotonic()
        if await wait_visible(probe, base_version, t0, timeout_s) is None:
            raise RuntimeError(f"the app never answered with {base_version}")
        # the new version is built first: a training run beside the app must not land in the "before" window
        if train:
            from xserve.cli import train_version
            from xserve.config import load_config

            config = load_config(overrides={"storage": {"data_dir": str(data_dir)}})
            nxt = train_version(config, switch=False, say=say)["version"]
            next_version = versions.manifest(nxt)["ranker_version"]
        else:
            nxt = base.replace("-base", "-next")
            next_version = derive_version(versions, base, nxt)
        before_start = time.monotonic()
        await asyncio.sleep(before_s)
        t_switch = time.monotonic()
        versions.switch(nxt, clock.now_ms())
        say(f"models/CURRENT -> {nxt} ({next_version})")
        out["visible_s"] = await wait_visible(probe, next_version, t_switch, timeout_s)
        await asyncio.sleep(during_s)
        t_rollback = time.monotonic()
        versions.rollback(clock.now_ms())
        say(f"rolled back to {base}")
        out["rollback_visible_s"] = await wait_visible(probe, base_version, t_rollback, timeout_s)
        t_end = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.update(requests=len(probe.samples), errors_5xx=probe.errors_5xx(), mixed_version_requests=probe.mixed(),
               before=probe.latencies(before_start, t_switch), during=probe.latencies(t_switch, t_end))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hot_swap_check", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (needs --data-dir, the directory it serves)")
    p.add_argument("--data-dir", help="the served data directory (default: a fresh tiny world in a temporary directory)")
    p.add_argument("--port", type=int, default=8250, help="port of the app this script starts (default 8250)")
    p.add_argument("--clients", type=int, default=2, help="concurrent feed loops (default 2)")
    p.add_argument("--viewers", type=int, default=200, help="viewers 1..N (default 200, the tiny world's users)")
    p.add_argument("--before-s", type=float, default=20.0, help="load before the switch (default 20)")
    p.add_argument("--during-s", type=float, default=20.0, help="load after the new version is visible (default 20)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="most seconds to wait for a switch to show")
    p.add_argument("--train", action="store_true", help="the new version is a real `xserve train` run, not a shifted copy")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.url and not args.data_dir:
        p.error("--url needs --data-dir (the versions are written there)")
    if args.url and not DataDirLayout(args.data_dir).ranker_checkpoint.is_file():
        p.error(f"--data-dir {args.data_dir} holds no trained models: pass the directory the server at --url serves")
    say = (lambda m: None) if args.quiet else (lambda m: print(f"hot_swap_check: {m}", file=sys.stderr, flush=True))
    app, tmp = None, None
    try:
        url, data_dir = args.url, Path(args.data_dir) if args.data_dir else None
        if url is None:
            import os

            from scripts.chaoslib.app_process import AppProcess

            tmp = Path(tempfile.mkdtemp(prefix="xserve-swap-"))
            data_dir = data_dir or tmp / "data"
            # the tiny world with models sized to it (hash tables of 4k/40k rows, as the tests' TINY_WORLD):
            # checkpoints of megabytes, so two rankers side by side during the swap fit anywhere
            env = {"XSERVE__SERVING__DEMO_WORLD": "tiny", "XSERVE__SERVING__BOOTSTRAP_TRAIN_EXAMPLES": "500",
                   "XSERVE__TRAIN__EPOCHS": "1", "XSERVE__PHOENIX__USER_VOCAB": "4001",
                   "XSERVE__PHOENIX__POST_VOCAB": "40009", "XSERVE__PHOENIX__AUTHOR_VOCAB": "4001",
                   "XSERVE__RETRIEVAL__NUM_SHARDS": "2", "XSERVE__THUNDER__NUM_SHARDS": "2",
                   "XSERVE__STORAGE__FSYNC": "false", "RAY_ADDRESS": "local",
                   "RAY_agent_register_timeout_ms": "120000", **os.environ}
            say(f"starting the app over {data_dir} on port {args.port} (seeds and trains a tiny world first)")
            app = AppProcess(data_dir, args.port, 2, env, tmp / "app.log", start_timeout_s=600)
            app.start()
            url = f"http://127.0.0.1:{args.port}"
        out = asyncio.run(swap_under_load(url, data_dir, args.clients, list(range(1, args.viewers + 1)), args.before_s,
                                          args.during_s, args.timeout_s, args.train, say))
    finally:
        if app is not None:
            app.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"swap.requests {out['requests']} requests")
    print(f"swap.errors_5xx {out['errors_5xx']} requests")
    print(f"swap.mixed_version_requests {out['mixed_version_requests']} requests")
    before, during = out["before"], out["during"]
    for name, ms in (("swap.p99_ms_before", before), ("swap.p99_ms_during", during)):
        name, value = tail(name, ms)
        print(f"{name} {value:.1f} ms")
    if before and during:  # both tails of one kind: p99s when both carry one, else maxima
        samples = min(len(before), len(during))
        q = 99 if samples >= MIN_P99_SAMPLES else 100
        print(f"{tail_name('swap.p99_ratio', samples)} {percentile(during, q) / percentile(before, q):.2f} x")
    for key in ("visible_s", "rollback_visible_s"):
        v = out[key]
        print(f"swap.{key} {'nan' if v is None else f'{v:.2f}'} s")
    failed = out["errors_5xx"] or out["mixed_version_requests"] or out["visible_s"] is None \
        or out["rollback_visible_s"] is None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
