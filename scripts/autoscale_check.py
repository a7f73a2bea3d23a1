"""Autoscaling check: under a load ramp, Serve scales FeedIngress and the Ranker out and back in, and Ray's
autoscaler adds a worker node for the Ranker replica that does not fit and removes it once idle.

    python scripts/autoscale_check.py                          # a fresh tiny world in a temp dir
    python scripts/autoscale_check.py --downscale-delay-s 20   # quicker: Serve scales in 20 s after the load

Uses Ray's own machinery throughout:

1. **Cluster**: a head whose autoscaler runs Ray's fake multi-node provider
   (``scripts/clusterlib/autoscaler.py``): it adds a ``gpu_ranker`` worker node (1 CPU, 1 logical GPU,
   like ``cluster.yaml``'s) when a replica's resources fit no node, and removes it after
   ``--idle-timeout-s`` idle. The head offers one logical GPU: the first Ranker replica runs there.
2. **App**: the twin of ``serve_config.yaml`` (``scripts/clusterlib/twin.py``) deployed as ``serve deploy``
   does, with FeedIngress and the Ranker scaling again (``autoscaling_twin``): the file's
   ``autoscaling_config`` (targets, delays) but ``max_replicas`` of ``--max-ingress-replicas`` and
   ``--max-ranker-replicas``, and the Ranker's ``num_gpus: 1``. ``--upscale-delay-s``,
   ``--downscale-delay-s``, ``--look-back-s`` and ``--metrics-interval-s`` replace the file's (or Serve's
   defaults) for both, so a check can end in minutes; ``--ingress-target`` and ``--ranker-target`` their
   ``target_ongoing_requests``.
3. **Ramp**: feed readers through the proxy, ``--start-clients`` at first and ``--step-clients`` more
   every ``--step-s`` up to ``--peak-clients``; the ramp ends ``--hold-s`` after both deployments have
   scaled out and a node was added, or after ``--max-ramp-s``.
4. **Scale in**: replica counts and nodes are sampled every second until both deployments are back at
   ``min_replicas`` and the added node is gone, or ``--max-wait-s``.

Prints ``name value unit`` lines: ``cluster.autoscale.max_replicas.<deployment>``,
``cluster.autoscale.nodes_added``, ``cluster.autoscale.scale_in_s`` (ramp end to every deployment at its
minimum), ``cluster.autoscale.nodes_removed_s``, ``cluster.autoscale.scale_out_s.<deployment>`` (ramp
start to its second replica) and the ramp's requests (``refused_503``: feeds the ingress refused past its
``serving.max_inflight_feeds``, the backpressure that tells a client to retry; ``errors_5xx``: any other
5xx). Progress goes to stderr. Exit status 1 with a one-line reason when the Ranker or FeedIngress did
not reach 2 replicas, no node was added or it was not removed, scale-in took longer than
``--max-scale-in-s`` (300: the issue's 5 minutes), or a request got another 5xx; 2 on bad arguments.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `scripts` is a package of it

from scripts.clusterlib.autoscaler import FakeAutoscalingCluster  # noqa: E402
from scripts.clusterlib.ledger import Load, WriteLedger, answered_ms  # noqa: E402
from scripts.figures import MIN_P99_SAMPLES, percentile  # noqa: E402
from scripts.clusterlib.scaling import Ramp, ScaleTrace  # noqa: E402
from scripts.clusterlib.twin import (  # noqa: E402
    FRESH_WORLD_ENV,
    app_config,
    autoscaling_twin,
    deploy,
    deploy_failure,
    healthy,
    stage_timeouts,
    twin_serve_config,
)

ROOT = Path(__file__).resolve().parents[1]
SCALED = ("FeedIngress", "Ranker")  # the deployments the check watches scale
CLIENT_BASE_ID = 7_900_000_000  # the ramp's client ids (they never write: write fraction 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoscale_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="a data directory to serve (seeded and trained on first use); "
                   "default: a fresh tiny world under --work-dir, removed at the end")
    p.add_argument("--work-dir", type=Path,
                   help="where a fresh data directory and Ray's temp dir go (default: a temp dir)")
    p.add_argument("--serve-config", type=Path, default=ROOT / "serve_config.yaml",
                   help="the Serve config whose twin is deployed (default serve_config.yaml)")
    p.add_argument("--port", type=int, default=8400, help="HTTP port of the proxy on 127.0.0.1 (default 8400)")
    p.add_argument("--max-ingress-replicas", type=int, default=3, help="FeedIngress max_replicas (default 3)")
    p.add_argument("--max-ranker-replicas", type=int, default=2,
                   help="Ranker max_replicas (default 2): one on the head, each other on a node the autoscaler adds")
    p.add_argument("--upscale-delay-s", type=float, help="Serve's upscale_delay_s for both (default: the file's)")
    p.add_argument("--downscale-delay-s", type=float, help="Serve's downscale_delay_s for both (default: the file's)")
    p.add_argument("--look-back-s", type=float, help="Serve's look_back_period_s for both (default: the file's)")
    p.add_argument("--metrics-interval-s", type=float, help="Serve's metrics_interval_s for both (default: the file's)")
    p.add_argument("--ingress-target", type=float,
                   help="FeedIngress target_ongoing_requests (default: the file's, 4)")
    p.add_argument("--ranker-target", type=float,
                   help="Ranker target_ongoing_requests (default: the file's, 8); a machine where ranking is not "
                        "the slow stage needs less for the ranker to scale under a ramp it can serve")
    p.add_argument("--idle-timeout-s", type=float, default=30.0,
                   help="the autoscaler removes a worker node idle this long (default 30; cluster.yaml: 10 min)")
    p.add_argument("--start-clients", type=int, default=4, help="feed clients at the ramp's start (default 4)")
    p.add_argument("--step-clients", type=int, default=4, help="clients added every --step-s (default 4)")
    p.add_argument("--step-s", type=float, default=10.0, help="seconds between ramp steps (default 10)")
    p.add_argument("--peak-clients", type=int, default=32, help="the ramp's most clients (default 32)")
    p.add_argument("--hold-s", type=float, default=10.0, help="load kept on once scaled out (default 10)")
    p.add_argument("--max-ramp-s", type=float, default=300.0,
                   help="the ramp ends by then even if not scaled out (default 300)")
    p.add_argument("--max-scale-in-s", type=float, default=300.0,
                   help="scale-in slower than this after the ramp fails (default 300: 5 minutes)")
    p.add_argument("--max-wait-s", type=float, default=600.0,
                   help="stop watching the scale-in and node removal after this (default 600)")
    p.add_argument("--users", type=int, default=200, help="viewers are world users 1..N (default 200)")
    p.add_argument("--viewers", type=int, default=32, help="viewers the ramp reads feeds for (default 32)")
    p.add_argument("--start-timeout", type=float, default=600.0, help="deploy until /healthz answers (default 600 s)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply the app's stage timeouts and the proxy's request timeout by this; a loaded "
                        "machine needs 3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _line(name: str, value: float, unit: str) -> None:
    print(f"{name} {value} {unit}", flush=True)


class Check:
    """One run (the module docstring's steps) over ``data_dir``."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, work_dir: Path, env_vars: dict[str, str]) -> None:
        self.args, self.data_dir, self.work_dir = args, data_dir, work_dir
        delays = {key: value for key, value in (
            ("upscale_delay_s", args.upscale_delay_s), ("downscale_delay_s", args.downscale_delay_s),
            ("look_back_period_s", args.look_back_s), ("metrics_interval_s", args.metrics_interval_s),
        ) if value is not None}
        twin = twin_serve_config(args.serve_config, str(data_dir), env_vars, args.port, args.timeout_scale)
        maxima = {"FeedIngress": args.max_ingress_replicas, "Ranker": args.max_ranker_replicas}
        self.doc = autoscaling_twin(twin, args.serve_config, maxima, delays)
        for deployment in self.doc["applications"][0]["deployments"]:
            target = {"FeedIngress": args.ingress_target, "Ranker": args.ranker_target}.get(deployment["name"])
            if target is not None:
                deployment["autoscaling_config"]["target_ongoing_requests"] = target
        deployments = {d["name"]: d for d in self.doc["applications"][0]["deployments"]}
        self.autoscaling = {name: deployments[name]["autoscaling_config"] for name in SCALED}
        self.trace = ScaleTrace({name: self.autoscaling[name]["min_replicas"] for name in SCALED})
        self.url = f"http://127.0.0.1:{args.port}"
        self.rng = random.Random(args.seed)
        self.failures: list[str] = []
        self.cluster: FakeAutoscalingCluster | None = None
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"autoscale_check: [{time.monotonic() - self.t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def fail(self, reason: str) -> None:
        self.failures.append(reason)
        self.say(f"FAILED: {reason}")

    def start(self) -> None:
        args = self.args
        for name, auto in self.autoscaling.items():
            settings = ", ".join(f"{k} {auto.get(k, 'Serve default')}" for k in (
                "min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s",
                "look_back_period_s", "metrics_interval_s"))
            self.say(f"{name}: {settings}")
        self.cluster = FakeAutoscalingCluster(self.work_dir, args.max_ranker_replicas - 1, args.idle_timeout_s)
        self.say(f"head up (Ray at {self.cluster.address}, fake multi-node provider: up to "
                 f"{args.max_ranker_replicas - 1} gpu_ranker node(s), idle timeout {args.idle_timeout_s:g} s); "
                 "deploying")
        deploy(self.doc)
        deadline = time.monotonic() + args.start_timeout
        while not healthy(self.url):
            failed = deploy_failure()
            if failed or time.monotonic() > deadline:
                raise RuntimeError(failed or f"the app was not healthy within {args.start_timeout:g} s")
            time.sleep(0.5)
        self.say("app healthy")

    def sample(self) -> None:
        """One snapshot of RUNNING replicas per watched deployment and alive worker nodes."""
        from ray import serve
        from ray.serve._private.common import ReplicaState

        assert self.cluster is not None
        deployments = serve.status().applications["default"].deployments
        replicas = {name: deployments[name].replica_states.get(ReplicaState.RUNNING, 0) for name in SCALED}
        self.trace.add(time.monotonic() - self.t0, replicas, self.cluster.workers())

    def state(self) -> str:
        last = self.trace.snapshots[-1]
        return ", ".join(f"{d} {n}" for d, n in last.replicas.items()) + f", worker nodes {last.workers}"

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass

    def scaled_out(self) -> bool:
        return all(self.trace.scaled_out(d) for d in SCALED) and self.trace.nodes_added >= 1

    async def ramp(self) -> tuple[Load, float, float, int]:
        """Step 3; returns the load, the ramp's start and end (trace clock) and its most clients."""
        args = self.args
        ramp = Ramp(args.start_clients, args.step_clients, args.step_s, args.peak_clients)
        viewers = list(range(1, args.users + 1))
        self.rng.shuffle(viewers)
        limits = httpx.Limits(max_connections=args.peak_clients + 4, max_keepalive_connections=args.peak_clients + 4)
        http = httpx.AsyncClient(base_url=self.url, timeout=args.timeout, limits=limits)
        for v in viewers[: args.viewers]:  # every viewer once: the ingress then has a last known answer for each
            await http.post("/v1/feed/for_you", json={"viewer_id": v})
        # clients refused by the ingress's admission cap wait its Retry-After (1 s): a tight loop of refusals
        # would take the machine's CPUs from the feeds
        load = Load(http, viewers[: args.viewers], [], args.users, 0.0, WriteLedger(0), self.rng, honor_retry_after=True)
        clients: list[asyncio.Task] = []
        start = time.monotonic() - self.t0
        scaled_at: float | None = None
        last_said = ""
        while True:
            now = time.monotonic() - self.t0
            want = ramp.clients_at(now - start)
            while len(clients) < want:
                clients.append(asyncio.create_task(load.client(CLIENT_BASE_ID + len(clients))))
            said = f"{len(clients)} clients; {self.state()}"
            if said != last_said:
                self.say(f"ramp: {said}")
                last_said = said
            if scaled_at is None and self.scaled_out():
                scaled_at = now
                self.say(f"scaled out {now - start:.0f} s into the ramp; holding the load {args.hold_s:g} s")
            if (scaled_at is not None and now - scaled_at >= args.hold_s) or now - start >= args.max_ramp_s:
                break
            await asyncio.sleep(1.0)
        load.stop.set()
        await asyncio.gather(*clients)
        await http.aclose()
        end = time.monotonic() - self.t0
        self.trace.ramp_end = end
        self.say(f"ramp ended after {end - start:.0f} s ({len(load.samples)} requests); watching the scale-in")
        return load, start, end, len(clients)

    async def scale_in(self) -> None:
        """Step 4: until every watched deployment is at its minimum and the added node is gone."""
        deadline = time.monotonic() + self.args.max_wait_s
        last_said = ""
        while time.monotonic() < deadline:
            back = self.trace.scale_in_s() is not None
            gone = self.trace.nodes_added <= 0 or self.trace.nodes_removed_s() is not None
            if back and gone:
                return
            if (said := self.state()) != last_said:
                self.say(f"scale-in: {said}")
                last_said = said
            await asyncio.sleep(1.0)
        self.say(f"stopped watching after {self.args.max_wait_s:g} s: {self.state()}")

    def report(self, load: Load, start: float, end: float, peak: int) -> None:
        args, trace = self.args, self.trace
        _line("cluster.autoscale.peak_clients", peak, "clients")
        _line("cluster.autoscale.ramp_s", round(end - start, 1), "s")
        for d in SCALED:
            _line(f"cluster.autoscale.max_replicas.{d}", trace.max_replicas(d), "replicas")
        for d in SCALED:
            out = next((s.t for s in trace.snapshots if s.replicas.get(d, 0) >= 2), None)
            if out is not None:
                _line(f"cluster.autoscale.scale_out_s.{d}", round(out - start, 1), "s")
        _line("cluster.autoscale.nodes_added", trace.nodes_added, "nodes")
        scale_in, removed = trace.scale_in_s(), trace.nodes_removed_s()
        if scale_in is not None:
            _line("cluster.autoscale.scale_in_s", scale_in, "s")
        if removed is not None:
            _line("cluster.autoscale.nodes_removed_s", removed, "s")
        samples = load.samples
        refused = [s for s in samples if s.status == 503]
        errors = [s for s in samples if s.status >= 500 and s.status != 503]
        _line("cluster.autoscale.load.requests", len(samples), "requests")
        _line("cluster.autoscale.load.ok", sum(1 for s in samples if s.status == 200), "requests")
        _line("cluster.autoscale.load.refused_503", len(refused), "requests")
        _line("cluster.autoscale.load.errors_5xx", len(errors), "requests")
        _line("cluster.autoscale.load.no_answer", sum(1 for s in samples if s.status == 0), "requests")
        _line("cluster.autoscale.load.degraded_feeds", sum(1 for s in samples if s.degraded), "feeds")
        answered = answered_ms(samples)
        _line("cluster.autoscale.load.max_ms", round(max(answered, default=0.0), 1), "ms")
        if len(answered) >= MIN_P99_SAMPLES:
            _line("cluster.autoscale.load.p99_ms", round(percentile(answered, 99), 1), "ms")
        failed = Counter(f"{s.status or 'no answer'}" for s in samples if s.status != 200)
        if failed:
            self.say("ramp: not 200: " + ", ".join(f"{n}x {what}" for what, n in sorted(failed.items())))
        for d in SCALED:
            if not trace.scaled_out(d):
                self.fail(f"{d} reached {trace.max_replicas(d)} replica(s) under the ramp, not 2")
        if trace.nodes_added < 1:
            self.fail("the autoscaler added no node")
        elif removed is None:
            self.fail(f"the added node was not removed within {args.max_wait_s:g} s of the ramp's end")
        if scale_in is None:
            self.fail(f"not back at min_replicas within {args.max_wait_s:g} s of the ramp's end")
        elif scale_in > args.max_scale_in_s:
            self.fail(f"back at min_replicas {scale_in:.0f} s after the ramp "
                      f"(> --max-scale-in-s {args.max_scale_in_s:g})")
        if errors:
            when = ", ".join(f"{s.started - self.t0 - start:.0f}" for s in errors[:10])
            self.say(f"ramp: the other 5xx were sent {when} s into the ramp")
            first = errors[0]
            self.fail(f"{len(errors)} request(s) got a 5xx other than 503 (first: {first.status} {first.error})")

    async def observe(self) -> None:
        stop = asyncio.Event()
        await asyncio.to_thread(self.sample)
        watcher = asyncio.create_task(self.watch(stop))
        try:
            load, start, end, peak = await self.ramp()
            await self.scale_in()
        finally:
            stop.set()
            await watcher
        self.report(load, start, end, peak)

    def run(self) -> int:
        """The steps; the cluster is started and shut down here, on the main thread (Ray's node processes
        install signal handlers), the requests run on an event loop meanwhile."""
        try:
            self.start()
            asyncio.run(self.observe())
        finally:
            if self.cluster is not None:
                self.say("stopping the cluster")
                self.cluster.shutdown()
        if self.failures:
            print(f"autoscale_check: {len(self.failures)} failure(s): {self.failures[0]}", file=sys.stderr)
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be in 1..65535, got {args.port}")
    if args.max_ingress_replicas < 2 or args.max_ranker_replicas < 2:
        p.error("--max-ingress-replicas and --max-ranker-replicas must be >= 2 (scaling out is what is checked)")
    if not 1 <= args.start_clients <= args.peak_clients or args.step_clients < 1 or args.step_s <= 0:
        p.error("the ramp needs 1 <= --start-clients <= --peak-clients, --step-clients >= 1 and --step-s > 0")
    if args.viewers < 1 or args.users < args.viewers:
        p.error("--viewers must be >= 1 and --users >= --viewers")
    if min(args.idle_timeout_s, args.max_ramp_s, args.max_wait_s, args.timeout_scale) <= 0:
        p.error("--idle-timeout-s, --max-ramp-s, --max-wait-s and --timeout-scale must be > 0")
    for name in ("upscale_delay_s", "downscale_delay_s", "look_back_s", "metrics_interval_s", "ingress_target",
                 "ranker_target"):
        if (value := getattr(args, name)) is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {value:g}")
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="xserve-autoscale-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fresh = args.data_dir is None
    data_dir = (work / "data" if fresh else args.data_dir).resolve()
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("XSERVE__")} | stage_timeouts(args.timeout_scale)
    if fresh:
        env_vars = FRESH_WORLD_ENV | env_vars
    try:
        from xserve.synth.bootstrap import prepare_data_dir

        check = Check(args, data_dir, work, env_vars)
        # seeds and trains an empty data dir, here, before the head starts, with the app's own settings
        prepare_data_dir(app_config(check.doc))
        return check.run()
    except (RuntimeError, ValueError, httpx.HTTPError) as exc:
        print(f"autoscale_check: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autoscale_check: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
