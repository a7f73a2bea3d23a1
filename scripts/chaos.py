"""Chaos: kill parts of a running xserve app under load; measure errors, latency, recovery and state.

    python scripts/chaos.py --port 8000                     # a fresh tiny demo world in a temp dir
    python scripts/chaos.py --data-dir ./xserve-data --world small --port 8200

Starts the app itself (``xserve serve`` in a child process, on its own local
Ray with ``--num-cpus`` CPUs and no dashboard) over a data directory, drives it
over loopback HTTP with a load loop (feed reads, and posts, deletes, engagements
and follows by dedicated writer users, each acknowledged one recorded in a
ledger), and for each fault F in turn:

1. records a baseline: the feeds of a few probe viewers (non-bottom requests,
   so served history plays no part) until two rounds agree, and a direct read
   of the part about to be killed;
2. injects F while the load keeps running: ``thunder_shard``, ``thunder_ingest``,
   ``retrieval_shard``, ``post_catalog`` and ``user_store`` are
   ``ray.kill(actor, no_restart=False)`` of the named actor (Ray restarts it and
   it rebuilds from the data directory); ``retrieval_replica``, ``ranker_replica``
   and ``ingress_replica`` kill the Serve replica of Retrieval, the Ranker or
   FeedIngress (Serve replaces it); ``node_loss`` joins a worker node to the app's Ray, puts
   the first probe's user-store shard on it (the app's ``serving.actor_node_labels`` prefers that node's
   label; one restart of the shard moves it there) and loses the node (every process of it SIGKILLed;
   Ray restarts the shard on the head once it declares the node dead); ``full_restart`` is kill -9 of every process
   of the app (the ``xserve serve`` process and its descendants: the whole Ray
   cluster), then the app starts again over the same data directory;
3. waits for recovery: the killed part answers again and the probes' For You
   feeds come back with none of its components in ``degraded``;
4. keeps the load on for ``--after-seconds``, then, with writes held back,
   compares the probes' feeds and the direct read with the baseline, and reads
   back every write acknowledged so far (``GET /v1/posts/{id}``,
   ``GET /v1/users/{id}``; ``chaoslib.writes``).

State comparison (``state_match``). The load's writes come from writer users
the script creates, so they never change a probe's own inputs (its graph,
history, blocks) nor its in-network posts (no probe follows a writer). A
writer's new post can still enter any viewer's out-of-network candidates and
push another post out of the retrieval top-k, so full For You feeds are not
comparable across writes; the comparison uses each probe's in-network feed
(``in_network_only``: Thunder, the user store, hydration, filters and the
ranker's scores and order), plus a direct read of the killed part: the
Thunder shard's answer for the probes, the retrieval shard's top 100 for a
fixed vector with the writers' new posts excluded, the user store's features
and history of the probes (not served history, which every read appends to),
the Ranker's scores of every action for fixed requests (the feed's scores are
squeezed into near-ties and cannot tell a wrong ranker), and so on per fault
(``chaoslib.faults``).
Time moves on between baseline and check: the direct reads pass the baseline's
clock where the part takes one, and a post that has since passed the age
limit (``mixer.max_post_age_ms`` less a minute) is left out on both sides.
Everything else must be equal, in order, except that two posts whose scores are
equal within 0.1 % may trade places, a post may cross the page's edge only tied
with its last post, and one post of a conversation may stand in for another it
is tied with (the feed keeps one per conversation); a post is never otherwise
replaced (``chaoslib.state.compare_feeds``).
Baseline and check each use the first probe round with nothing degraded (a
loaded machine trips a timeout now and then).

Prints per fault ``chaos.F.requests``, ``chaos.F.errors_5xx``, ``chaos.F.p99_ms_during``,
``chaos.F.recovery_s`` and ``chaos.F.state_match`` lines (and ``errors_4xx``,
``conn_errors``, ``down_errors``, ``degraded_during``, ``p99_ms_during_feed``,
``p99_ms_after``, ``writes_read_back``, ``lost_writes``), then a
table. ``requests`` counts every request in flight at the injection or sent from
it to the end of the after-window, the error counts those of them that failed.
While the app is down in ``full_restart`` (until it answers ``/healthz`` again)
there is no app to answer: requests refused, not routed yet (404) or refused by
the starting proxy (502-504) are counted apart as ``down_errors``; so are, in
``ingress_replica``, the requests in flight in the killed replica (they die with
it; those sent later must be answered). ``p99_ms_during`` is over the
answered requests sent between the injection and the end of the fault window
(recovery, or ``--fault-seconds`` if later); a window of fewer than 1,000
answered requests reports its maximum instead, as ``max_ms_during`` (and so
for ``_during_feed`` and ``_after``). ``recovery_s`` runs from the kill to
the first clean probe round. Exit status 1, with a one-line reason, when any
fault produced a 5xx or another failed request, no recovery, a lost
acknowledged write, or a state mismatch; 2 on bad arguments.

The parts live in ``scripts/chaoslib/`` (one module each: the app process, the
Ray connection, the load, the ledger of writes and their read-back, the probes,
the state comparison, one class per fault, the results and the report); this
file is the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: `scripts` is a package of it

from scripts.chaoslib.app_process import ROOT, AppProcess  # noqa: E402
from scripts.chaoslib.faults import FAULTS  # noqa: E402
from scripts.chaoslib.report import say  # noqa: E402
from scripts.chaoslib.runner import run  # noqa: E402

_STAGE_TIMEOUTS = ("query_hydrator_timeout_s", "source_timeout_s", "hydrator_timeout_s", "scorer_timeout_s",
                   "filter_timeout_s", "request_timeout_s", "side_effect_timeout_s")


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chaos.py", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=_port, default=8000, help="HTTP port of the app on 127.0.0.1 (default 8000)")
    p.add_argument("--data-dir", type=Path, help="reuse this data directory (seeded and trained on first use); "
                   "default: a fresh one under --work-dir, removed at the end")
    p.add_argument("--work-dir", type=Path, help="where the fresh data dir and the app's log go (default: a temp dir)")
    p.add_argument("--world", default="tiny", help="demo world seeded into an empty data dir (tiny: quick training)")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, in order (default all: {','.join(FAULTS)})")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the app's local Ray (default 2, the least it needs)")
    p.add_argument("--clients", type=int, default=2, help="concurrent load clients (default 2)")
    p.add_argument("--write-fraction", type=float, default=0.2, help="share of load requests that write (default 0.2)")
    p.add_argument("--users", type=int, default=200, help="world user ids 1..N to draw viewers from (default 200)")
    p.add_argument("--viewers", type=int, default=24, help="viewers the load reads feeds for (default 24)")
    p.add_argument("--writers", type=int, default=4, help="writer users the script creates (default 4)")
    p.add_argument("--probes", type=int, default=3, help="probe viewers whose feeds are compared (default 3)")
    p.add_argument("--probe-limit", type=int, default=35, help="posts per probe feed (default 35)")
    p.add_argument("--warmup-seconds", type=float, default=3.0, help="load before the first fault (default 3)")
    p.add_argument("--fault-seconds", type=float, default=3.0, help="shortest fault window (default 3)")
    p.add_argument("--after-seconds", type=float, default=3.0, help="load after recovery, before the state check (default 3)")
    p.add_argument("--recovery-timeout", type=float, default=600.0, help="give up on a recovery after this (default 600 s)")
    p.add_argument("--start-timeout", type=float, default=900.0, help="app start, incl. first-run seeding (default 900 s)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="per-request timeout, seconds (default 30: a write waits up to "
                        "serving.store_unavailable_wait_s, 30 s, for a shard that is away)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply the app's stage timeouts and request deadline (mixer.*_timeout_s) by this (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    # the app's `ray.init()` turns token auth on (token in ~/.ray/auth_token); this driver must use it too,
    # and Ray reads the mode once, before this process first connects
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    p = _parser()
    args = p.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = [f for f in args.faults if f not in FAULTS]
    if bad or not args.faults:
        p.error(f"--faults: unknown fault {bad[0] if bad else '(none)'}; choose from {', '.join(FAULTS)}")
    if args.num_cpus < 2 or args.clients < 1 or args.probes < 1 or args.writers < 2 or args.users < args.probes:
        p.error("--num-cpus must be >= 2, --clients and --probes >= 1, --writers >= 2, --users >= --probes")
    if args.timeout_scale <= 0:
        p.error(f"--timeout-scale must be > 0, got {args.timeout_scale}")
    if not 0 <= args.write_fraction <= 1:
        p.error(f"--write-fraction must be in [0, 1], got {args.write_fraction}")
    from xserve.config import MixerConfig, load_config
    from xserve.synth.world import WORLD_SIZES

    if args.world not in WORLD_SIZES:
        p.error(f"--world must be one of {', '.join(WORLD_SIZES)}, got {args.world!r}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="xserve-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    fresh = args.data_dir is None
    data_dir = (work / "data" if fresh else args.data_dir).resolve()
    # a raylet gives its dashboard agent 15 s to start and aborts the node otherwise; a loaded machine needs longer
    # (the app's head, and the node node_loss starts from this process)
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "XSERVE__SERVING__DEMO_WORLD": args.world,  # a string field takes the raw value
           # a cluster of its own: without it, `ray.init()` joins a Ray another job started on this machine
           "RAY_ADDRESS": "local"}
    for fault in args.faults:  # node_loss: the user store prefers the node the fault joins and loses
        env |= FAULTS[fault].app_env()
    mixer = MixerConfig()
    for name in _STAGE_TIMEOUTS:  # a loaded machine trips the default timeouts without any fault
        env[f"XSERVE__MIXER__{name.upper()}"] = json.dumps(getattr(mixer, name) * args.timeout_scale)
    # cold start lifts a post drawn afresh for every request (its exploration), so two probe rounds could differ
    # at its slot; the state comparison needs repeatable feeds, so the chaos run goes without it
    env.setdefault("XSERVE__COLD_START__ENABLED", "false")
    if args.world == "tiny":  # a first model in seconds; the chaos run needs a model, not a good one
        env |= {"XSERVE__SERVING__BOOTSTRAP_TRAIN_EXAMPLES": "500", "XSERVE__TRAIN__EPOCHS": "1"}
    config = load_config(None, environ={k: v for k, v in env.items() if k.startswith("XSERVE")},
                         overrides={"storage": {"data_dir": str(data_dir)}})
    app = AppProcess(data_dir, args.port, args.num_cpus, env, work / "app.log", args.start_timeout)
    say(args.quiet, f"starting the app on 127.0.0.1:{args.port} over {data_dir} (log: {work / 'app.log'})")
    started = time.monotonic()
    try:
        app.start()
        say(args.quiet, f"app healthy after {time.monotonic() - started:.0f} s (Ray at {app.ray_address})")
        return asyncio.run(run(args, app, config))
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"chaos: error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chaos: interrupted", file=sys.stderr)
        return 130
    finally:
        app.stop()
        if fresh and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
