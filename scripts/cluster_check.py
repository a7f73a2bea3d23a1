"""Cluster check: xserve on a Ray cluster of several nodes on this machine, its feed, a load, and a lost node.

    python scripts/cluster_check.py                        # a fresh tiny world in a temp dir
    python scripts/cluster_check.py --data-dir ./xserve-data --workers 3 --seconds 10

Uses Ray's own machinery throughout (``ray.cluster_utils.Cluster``: one raylet,
object store and set of worker processes per node, ``scripts/clusterlib/nodes.py``)
and Serve's own deploy path (``scripts/clusterlib/twin.py``):

1. **Single-node reference** (skipped with ``--skip-single-node``): a cluster of one
   head node serves the twin of ``serve_config.yaml`` over the data directory; the
   For You feeds of ``--probes`` viewers are recorded.
2. **Multi-node run**: a head and ``--workers`` worker nodes, each with its own custom
   resource (``xserve_node_<name>``), serve the same twin over the same data
   directory. ``serve_config.yaml`` sets ``serving.actor_scheduling = SPREAD``, so the
   stateful actors (user store, post catalog, Thunder, retrieval shards) are spread
   over the nodes; the HTTP proxy and the ingress stay on the head (``twin.py`` says
   why). Prints where each actor and replica runs, and the probes' feeds must equal
   the reference's: the same posts in the same order but for what the chaos run's
   comparison allows (near-ties trading places; ``scripts/chaoslib/state.compare_feeds``),
   posts that passed the age limit in between left out.
3. **Load** through the proxy: ``--clients`` writer users write (posts, follows,
   engagements; ``--write-fraction`` of requests) and read feeds of viewers the
   ingress served before.
4. **Node loss** (skipped with ``--skip-node-loss``): after ``--seconds`` of load, the
   worker holding the most stateful actors loses every process at once (SIGKILL of its
   raylet, agents and workers). The load goes on. Recovered when the GCS has marked
   the node dead, every lost actor is alive again on a surviving node, ``/healthz``
   answers 200 and a round of probe feeds is not degraded. After ``--after-seconds``
   more, every write acknowledged (200) before and during the loss is read back
   through the API.

Prints ``name value unit`` lines: ``cluster.nodes``, ``cluster.actors_per_node.<node>``
(the app's stateful actors), ``cluster.replicas_per_node.<node>`` (Serve replicas),
``cluster.feed_match``, ``cluster.load.*`` and ``cluster.node_loss.*`` (``errors_5xx``,
``recovery_s``, ``lost_writes``, ...). Progress and the placement table go to stderr.
Exit status 1 with a one-line reason when the actors were not spread, a feed differed,
a request got a 5xx, an acknowledged write was lost, or recovery took longer than
``--max-recovery-s``; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from xserve import clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `scripts` is a package of it

from scripts.chaoslib.state import Ages, compare_feeds  # noqa: E402
from scripts.clusterlib.ledger import Load, WriteLedger, answered_ms  # noqa: E402
from scripts.figures import tail  # noqa: E402
from scripts.clusterlib.nodes import LocalCluster, Placement  # noqa: E402
from scripts.clusterlib.twin import (  # noqa: E402
    EDGE_NODE,
    FRESH_WORLD_ENV,
    app_config,
    deploy,
    deploy_failure,
    healthy,
    stage_timeouts,
    twin_serve_config,
)

ROOT = Path(__file__).resolve().parents[1]
WRITER_BASE_ID = 7_800_000_000  # the check's writer users: ids no world uses


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cluster_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="a data directory to serve (seeded and trained on first use); "
                   "default: a fresh tiny world under --work-dir, removed at the end")
    p.add_argument("--work-dir", type=Path, help="where a fresh data directory goes (default: a temp dir)")
    p.add_argument("--serve-config", type=Path, default=ROOT / "serve_config.yaml",
                   help="the Serve config whose twin is deployed (default serve_config.yaml)")
    p.add_argument("--workers", type=int, default=2, help="worker nodes besides the head (default 2)")
    p.add_argument("--port", type=int, default=8300, help="HTTP port of the proxy on 127.0.0.1 (default 8300)")
    p.add_argument("--probes", type=int, default=4, help="viewers whose feeds are compared (default 4)")
    p.add_argument("--users", type=int, default=200, help="world user ids 1..N for viewers and follows (default 200)")
    p.add_argument("--viewers", type=int, default=16, help="viewers the load reads feeds for (default 16)")
    p.add_argument("--clients", type=int, default=2, help="concurrent load clients, one writer each (default 2)")
    p.add_argument("--write-fraction", type=float, default=0.3, help="share of load requests that write (default 0.3)")
    p.add_argument("--seconds", type=float, default=5.0, help="load before the node loss (default 5)")
    p.add_argument("--after-seconds", type=float, default=3.0, help="load after recovery (default 3)")
    p.add_argument("--max-recovery-s", type=float, default=60.0, help="recovery slower than this fails (default 60)")
    p.add_argument("--start-timeout", type=float, default=600.0, help="deploy until /healthz answers (default 600 s)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout of the load, seconds (default 30)")
    p.add_argument("--health-check-period-ms", type=int,
                   help="the GCS's node health check period; a node is declared dead after 5 missed checks "
                        "(default: Ray's, 3000 ms: 15 s)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply the app's stage timeouts (mixer.*_timeout_s) and the proxy's request timeout "
                        "by this; a loaded machine needs 3")
    p.add_argument("--skip-single-node", action="store_true", help="no single-node reference run (no feed_match)")
    p.add_argument("--skip-node-loss", action="store_true", help="load only, no node loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


class Check:
    """One run of the check (the module docstring's steps), over ``data_dir`` with ``args``."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, env_vars: dict[str, str]) -> None:
        from xserve.actors.naming import ActorNames

        self.args, self.data_dir = args, data_dir
        self.names = ActorNames.of(data_dir)
        self.twin = twin_serve_config(args.serve_config, str(data_dir), env_vars, args.port, args.timeout_scale)
        self.config = app_config(self.twin)  # what the app runs with: the file's shard counts, then env_vars
        self.url = f"http://127.0.0.1:{args.port}"
        self.rng = random.Random(args.seed)
        self.failures: list[str] = []
        self.probes: list[int] = []  # viewers whose feeds are compared, and read to judge recovery

    def say(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"cluster_check: {msg}", file=sys.stderr, flush=True)

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self.say(f"FAILED: {reason}")

    # ------------------------------------------------------------------ steps

    def start(self, workers: int) -> LocalCluster:
        """A cluster of a head and ``workers`` workers serving the twin; returns once ``/healthz`` is 200."""
        started = time.monotonic()
        period = self.args.health_check_period_ms
        cluster = LocalCluster(workers, {"health_check_period_ms": period} if period else None)
        self.say(f"{1 + workers} node(s) up in {time.monotonic() - started:.0f} s (Ray at {cluster.address}); deploying")
        deploy(self.twin)
        deadline = time.monotonic() + self.args.start_timeout
        while not healthy(self.url):
            failed = deploy_failure()
            if failed or time.monotonic() > deadline:
                cluster.shutdown()
                raise RuntimeError(failed or f"the app was not healthy within {self.args.start_timeout:g} s")
            time.sleep(0.5)
        self.say(f"app healthy {time.monotonic() - started:.0f} s after the cluster started")
        return cluster

    async def probe_feeds(self, http: httpx.AsyncClient, viewers: list[int], rounds: int = 20) -> dict[int, list]:
        """The viewers' For You feeds, (post id, score) in order, from the first round none of them was
        degraded (a loaded machine trips a stage timeout now and then); {} if no round was clean."""
        for _ in range(rounds):
            feeds, clean = {}, True
            for v in viewers:
                resp = await http.post("/v1/feed/for_you", json={"viewer_id": v})
                data = resp.json() if resp.status_code == 200 else {"degraded": [f"http_{resp.status_code}"]}
                clean &= not data["degraded"]
                feeds[v] = [(p["post_id"], p["score"]) for p in data.get("posts", ())]
            if clean:
                return feeds
        return {}

    async def pick_probes(self, http: httpx.AsyncClient) -> list[int]:
        """``--probes`` world users whose feed is clean and holds at least 5 posts."""
        candidates = list(range(1, self.args.users + 1))
        self.rng.shuffle(candidates)
        probes: list[int] = []
        for v in candidates:
            if len(probes) == self.args.probes:
                break
            feed = (await self.probe_feeds(http, [v], rounds=3)).get(v, [])
            if len(feed) >= 5:
                probes.append(v)
        if len(probes) < self.args.probes:
            raise RuntimeError(f"only {len(probes)} of {self.args.users} users have a clean feed of 5+ posts")
        return probes

    async def reference(self) -> tuple[list[int], dict[int, list], int]:
        """Step 1 (on a single node): the probes and their feeds, and when they were read."""
        async with httpx.AsyncClient(base_url=self.url, timeout=self.args.timeout) as http:
            probes = self.probes = await self.pick_probes(http)
            read_ms = clock.now_ms()
            feeds = await self.probe_feeds(http, probes)
        if not feeds:
            raise RuntimeError("no clean round of probe feeds on the single node")
        self.say(f"single-node reference: feeds of viewers {probes} ({sum(map(len, feeds.values()))} posts)")
        return probes, feeds, read_ms

    def report_placement(self, placement: Placement, nodes: list[str], prefix: str = "cluster") -> None:
        for node in nodes:
            self.say(f"  {node:<8} {', '.join(placement.parts_on(node)) or '-'}")
        stateful, replicas = placement.stateful_per_node(), placement.replicas_per_node()
        for node in nodes:
            _line(f"{prefix}.actors_per_node.{node}", stateful[node], "actors")
        for node in nodes:
            _line(f"{prefix}.replicas_per_node.{node}", replicas[node], "replicas")

    async def multi_node(self, cluster: LocalCluster, reference: tuple[list[int], dict[int, list], int] | None) -> None:
        """Steps 2-4, on ``cluster`` (a head and ``--workers`` workers, serving)."""
        nodes = ["head", *(f"worker{i}" for i in range(1, self.args.workers + 1))]
        _line("cluster.nodes", len(cluster.node_names()), "nodes")
        placement = cluster.placement(self.names)
        self.say("placement (stateful actors, Serve replicas, Serve's controller and proxy):")
        self.report_placement(placement, nodes)
        spread = sum(1 for n in nodes if placement.stateful_per_node()[n])
        if spread < 2:
            self.fail(f"the stateful actors are on {spread} node(s), not spread")
        async with httpx.AsyncClient(base_url=self.url, timeout=self.args.timeout) as http:
            if reference is not None:
                await self.compare_with(http, *reference)
            else:
                self.probes = await self.pick_probes(http)
            await self.load_and_lose_a_node(http, cluster, placement)

    async def compare_with(self, http: httpx.AsyncClient, probes: list[int], before: dict[int, list], read_ms: int) -> None:
        after = await self.probe_feeds(http, probes)
        if not after:
            self.fail("no clean round of probe feeds on the multi-node cluster")
            return
        # a post that passed the age limit between the two reads (less a minute) is left out on both sides
        cutoff = clock.now_ms() - self.config.mixer.max_post_age_ms + 60_000
        ages = Ages(self.data_dir)
        diffs = []
        for v in probes:
            aged = ages.aged([p for p, _ in before[v] + after[v]], cutoff)
            if (why := compare_feeds(before[v], after[v], aged=aged)) is not None:
                diffs.append(f"viewer {v}: {why}")
        _line("cluster.feed_compared", len(probes), "viewers")
        _line("cluster.feed_match", int(not diffs), "bool")
        self.say(f"feeds {'match' if not diffs else 'differ'} the single-node run ({(clock.now_ms() - read_ms) / 1000:.0f} s apart)")
        if diffs:
            self.fail(f"feed differs from the single-node run: {diffs[0]}")

    async def load_and_lose_a_node(self, http: httpx.AsyncClient, cluster: LocalCluster, placement: Placement) -> None:
        """Steps 3 and 4."""
        args = self.args
        writers = [WRITER_BASE_ID + i for i in range(args.clients)]
        for w in writers:
            (await http.put(f"/v1/users/{w}", json={"screen_name": f"cluster{w - WRITER_BASE_ID}"})).raise_for_status()
        viewers = list(range(1, args.users + 1))
        self.rng.shuffle(viewers)
        viewers = viewers[: args.viewers]
        for v in viewers:  # every viewer once: the ingress then has a last known answer for each (docs/reliability.md)
            await http.post("/v1/feed/for_you", json={"viewer_id": v})
        ledger = WriteLedger(self.config.mixer.history_length)
        load = Load(http, viewers, writers, args.users, args.write_fraction, ledger, self.rng)
        running = asyncio.create_task(load.run())
        self.say(f"load: {args.clients} client(s), {args.write_fraction:.0%} writes, for {args.seconds:g} s")
        await asyncio.sleep(args.seconds)  # the load's length, not a wait for a condition
        if args.skip_node_loss:
            load.stop.set()
            await running
            self.report_load("cluster.load", load.samples)
            await self.check_writes(http, ledger, "cluster.load")
            return
        stateful = placement.stateful_per_node()
        victim = max((n for n in stateful if n != EDGE_NODE), key=lambda n: (stateful[n], n))
        lost = placement.parts_on(victim)
        self.say(f"losing {victim} ({', '.join(lost)})")
        writes_before = len([s for s in load.samples if s.op != "feed" and s.status == 200])
        killed_at = time.monotonic()
        killed = await asyncio.to_thread(cluster.kill_node, victim)
        _line("cluster.node_loss.killed_processes", killed, "processes")
        _line("cluster.node_loss.actors_lost", sum(1 for p in lost if ":" not in p), "actors")
        recovery_s = await self.recover(http, cluster, victim, lost, killed_at)
        writes_after = len([s for s in load.samples if s.op != "feed" and s.status == 200])
        await asyncio.sleep(args.after_seconds)
        load.stop.set()
        await running
        during = [s for s in load.samples if s.started >= killed_at]
        self.report_load("cluster.load", [s for s in load.samples if s.started < killed_at])
        self.report_load("cluster.node_loss", during)
        _line("cluster.node_loss.degraded_feeds", sum(1 for s in during if s.degraded), "feeds")
        # writes acknowledged from the kill until recovery: each must be read back as those before
        _line("cluster.node_loss.writes_acknowledged_during", writes_after - writes_before, "writes")
        if recovery_s is not None:
            _line("cluster.node_loss.recovery_s", round(recovery_s, 2), "s")
            if recovery_s > args.max_recovery_s:
                self.fail(f"recovery took {recovery_s:.1f} s (> --max-recovery-s {args.max_recovery_s:g})")
        after = cluster.placement(self.names)
        self.say("placement after the loss:")
        self.report_placement(after, sorted(cluster.node_names().values()), "cluster.node_loss")
        await self.check_writes(http, ledger, "cluster.node_loss")

    async def recover(self, http: httpx.AsyncClient, cluster: LocalCluster, victim: str, lost: list[str],
                      killed_at: float) -> float | None:
        """Seconds from the kill until recovered (module docstring); None (and a failure) if not within
        ``--max-recovery-s`` plus a minute."""
        deadline = killed_at + self.args.max_recovery_s + 60
        marks: dict[str, float] = {}
        stateful_lost = [p for p in lost if ":" not in p]
        while time.monotonic() < deadline:
            now = time.monotonic() - killed_at
            if "node_dead" not in marks and await asyncio.to_thread(cluster.node_dead, victim):
                marks["node_dead"] = now
            if "node_dead" in marks and "actors" not in marks:
                placement = await asyncio.to_thread(cluster.placement, self.names)
                where = {p: placement.node_of(p) for p in stateful_lost}
                if all(n not in (None, victim) for n in where.values()):
                    marks["actors"] = now
            if "actors" in marks and await asyncio.to_thread(healthy, self.url):
                if await self.probe_feeds(http, self.probes, rounds=1):
                    marks["clean"] = now
                    self.say("recovered: " + ", ".join(f"{k} at {v:.1f} s" for k, v in marks.items()))
                    _line("cluster.node_loss.declared_dead_s", round(marks["node_dead"], 2), "s")
                    _line("cluster.node_loss.actors_back_s", round(marks["actors"], 2), "s")
                    return now
            await asyncio.sleep(0.5)
        self.fail(f"no recovery within {deadline - killed_at:.0f} s of the kill (reached: {marks or 'nothing'})")
        return None

    def report_load(self, prefix: str, samples: list) -> None:
        _line(f"{prefix}.requests", len(samples), "requests")
        _line(f"{prefix}.errors_5xx", sum(1 for s in samples if s.status >= 500), "requests")
        # 408: the proxy's request_timeout_s passed (a write then was not acknowledged); 503: refused, retry
        _line(f"{prefix}.errors_4xx", sum(1 for s in samples if 400 <= s.status < 500), "requests")
        _line(f"{prefix}.no_answer", sum(1 for s in samples if s.status == 0), "requests")
        name, value = tail(f"{prefix}.p99_ms", answered_ms(samples))  # a max below 1,000 answers
        _line(name, round(value, 1), "ms")
        failed = Counter(f"{s.op} {s.status or 'no answer'}" for s in samples if s.status != 200)
        if failed:
            self.say(f"{prefix}: not 200: " + ", ".join(f"{n}x {what}" for what, n in sorted(failed.items())))
        if bad := [s for s in samples if s.status >= 500]:
            self.fail(f"{len(bad)} request(s) got a 5xx ({prefix}; first: {bad[0].op} {bad[0].status} {bad[0].error})")

    async def check_writes(self, http: httpx.AsyncClient, ledger: WriteLedger, prefix: str) -> None:
        missing = await ledger.missing(http)
        _line(f"{prefix}.acknowledged_writes", ledger.size, "writes")
        _line(f"{prefix}.lost_writes", len(missing), "writes")
        if missing:
            self.fail(f"{len(missing)} acknowledged write(s) not read back (first: {missing[0]})")


def _line(name: str, value: float, unit: str) -> None:
    print(f"{name} {value} {unit}", flush=True)


def _run(check: Check) -> int:
    """The steps in order; each cluster is started and shut down here, on the main thread (Ray's node
    processes install signal handlers), the requests run on an event loop meanwhile."""
    reference = None
    if not check.args.skip_single_node:
        cluster = check.start(0)
        try:
            reference = asyncio.run(check.reference())
        finally:
            cluster.shutdown()
    cluster = check.start(check.args.workers)
    try:
        asyncio.run(check.multi_node(cluster, reference))
    finally:
        cluster.shutdown()
    if check.failures:
        print(f"cluster_check: {len(check.failures)} failure(s): {check.failures[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error(f"--workers must be >= 2 (a head and at least 2 workers), got {args.workers}")
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    if args.clients < 1 or args.probes < 1 or args.viewers < 1 or args.users < max(args.probes, args.viewers):
        p.error("--clients, --probes and --viewers must be >= 1, --users >= --probes and --viewers")
    if not 0 <= args.write_fraction <= 1:
        p.error(f"--write-fraction must be in [0, 1], got {args.write_fraction}")
    if args.timeout_scale <= 0 or args.seconds <= 0:
        p.error("--timeout-scale and --seconds must be > 0")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="xserve-cluster-"))
    fresh = args.data_dir is None
    data_dir = (work / "data" if fresh else args.data_dir).resolve()
    # the app's settings: the caller's XSERVE__* (a tiny world's sizes), the stage timeouts scaled
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("XSERVE__")} | stage_timeouts(args.timeout_scale)
    # cold start lifts a post drawn afresh for every request (its exploration), so two feeds of one viewer can
    # differ at its slot; this check compares feeds across runs and nodes, so it runs without it
    env_vars.setdefault("XSERVE__COLD_START__ENABLED", "false")
    if fresh:
        env_vars = FRESH_WORLD_ENV | env_vars
    try:
        check = Check(args, data_dir, env_vars)
        from xserve.synth.bootstrap import prepare_data_dir

        prepare_data_dir(check.config)  # seeds and trains an empty data dir, here, before any node starts
        return _run(check)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"cluster_check: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cluster_check: interrupted", file=sys.stderr)
        return 130
    finally:
        if fresh and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
