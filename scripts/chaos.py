"""Chaos: kill parts of a running xserve app under load; measure errors, latency, recovery and state.

    python scripts/chaos.py --port 8000                     # a fresh tiny demo world in a temp dir
    python scripts/chaos.py --data-dir ./xserve-data --world small --port 8200

Starts the app itself (``xserve serve`` in a child process, on its own local
Ray with ``--num-cpus`` CPUs and no dashboard) over a data directory, drives it
over loopback HTTP with a load loop (feed reads, and writes by dedicated writer
users), and for each fault F in turn:

1. records a baseline: the feeds of a few probe viewers (non-bottom requests,
   so served history plays no part) until two rounds agree, and a direct read
   of the part about to be killed;
2. injects F while the load keeps running: ``thunder_shard``, ``retrieval_shard``
   and ``user_store`` are ``ray.kill(actor, no_restart=False)`` of the named
   actor (Ray restarts it and it rebuilds from the data directory);
   ``ranker_replica`` kills a Serve replica of the Ranker (Serve replaces it);
   ``full_restart`` is kill -9 of every process of the app (the ``xserve serve``
   process and its descendants: the whole Ray cluster), then the app starts
   again over the same data directory;
3. waits for recovery: the killed part answers again and the probes' For You
   feeds come back with none of its components in ``degraded``;
4. keeps the load on for ``--after-seconds``, then compares the probes' feeds
   and the direct read with the baseline.

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
and history of the probes (not served history, which every read appends to).
Time moves on between baseline and check: the direct reads pass the baseline's
clock where the part takes one, and a post that has since passed the age
limit (``mixer.max_post_age_ms`` less a minute) is left out on both sides.
Everything else must be equal, in order, except that two posts whose scores are
equal within 0.1 % may trade places (see ``chaoslib.state.compare_feeds``). Baseline and check each use the first
probe round with nothing degraded (a loaded machine trips a timeout now and then).

Prints per fault ``chaos.F.requests``, ``chaos.F.errors_5xx``, ``chaos.F.p99_ms_during``,
``chaos.F.recovery_s`` and ``chaos.F.state_match`` lines (and ``errors_4xx``,
``conn_errors``, ``down_errors``, ``degraded_during``, ``p99_ms_during_feed``,
``p99_ms_after``), then a
table. ``requests`` counts every request sent from the injection to the end of
the after-window, the error counts those of them that failed. While the app is
down in ``full_restart`` (until it answers ``/healthz`` again) there is no app to
answer: requests refused, not routed yet (404) or refused by the starting proxy
(502-504) are counted apart as ``down_errors``. ``p99_ms_during`` is over the
answered requests sent between the injection and the end of the fault window
(recovery, or ``--fault-seconds`` if later). ``recovery_s`` runs from the kill to
the first clean probe round. Exit status 1, with a one-line reason, when any
fault produced a 5xx or another failed request, no recovery, or a state
mismatch; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from xserve import clock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing: `scripts` is a package of it

from scripts.chaoslib.load import Load  # noqa: E402
from scripts.chaoslib.probes import Round, probe_round  # noqa: E402
from scripts.chaoslib.report import report, say  # noqa: E402
from scripts.chaoslib.results import Result, measure  # noqa: E402
from scripts.chaoslib.state import Ages, Probe, compare_feeds, created_ms, same_posts, same_users  # noqa: E402

FAULTS = ("thunder_shard", "retrieval_shard", "ranker_replica", "user_store", "full_restart")
WRITER_BASE_ID = 7_700_000_000  # the script's writer users: ids no world uses
_STAGE_TIMEOUTS = ("query_hydrator_timeout_s", "source_timeout_s", "hydrator_timeout_s", "scorer_timeout_s",
                   "filter_timeout_s", "request_timeout_s", "side_effect_timeout_s")


# --------------------------------------------------------------------------- the app in a child process


class AppProcess:
    """``xserve serve`` in a child process (a session of its own); its Ray cluster is its descendants."""

    def __init__(self, data_dir: Path, port: int, num_cpus: int, env: dict[str, str], log_path: Path) -> None:
        self.data_dir, self.port, self.num_cpus, self.env, self.log_path = data_dir, port, num_cpus, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ray_address: str | None = None

    def start(self, timeout_s: float) -> None:
        """Start and wait until ``/healthz`` answers 200; raises RuntimeError (with the log's tail) if not."""
        _wait_port_free(self.port, 30.0)  # a listener of the killed app may take a moment to go
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "xserve", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--num-cpus", str(self.num_cpus)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/healthz"
        while True:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if self.ray_address is None and (m := re.search(r"Ray at ([^;\s]+);", text)):
                self.ray_address = m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with status {self.proc.returncode}: {_tail(text)}")
            if self.ray_address is not None:
                try:
                    if httpx.get(url, timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app was not healthy within {timeout_s:g} s: {_tail(text)}")
            time.sleep(0.5)

    def pids(self) -> list[int]:
        """The server process, its descendants, and anything left in its session (orphans reparented to init)."""
        if self.proc is None:
            return []
        root = self.proc.pid
        children: dict[int, list[int]] = {}
        session: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
            pid, ppid, sid = int(entry), int(fields[1]), int(fields[3])
            children.setdefault(ppid, []).append(pid)
            if sid == root:
                session.append(pid)
        found, stack = set(), [root]
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(children.get(pid, ()))
        return sorted(found | set(session))

    def kill9(self, timeout_s: float = 30.0) -> int:
        """kill -9 every process of the app; returns how many; waits until they are gone."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.ray_address = None
        return len(pids)

    def stop(self) -> None:
        """Ctrl-C the server (it shuts its Ray down), then kill -9 whatever is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()
        self.proc = None


def _wait_port_free(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} is still taken {timeout_s:g} s after the app was killed") from None
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _tail(text: str, n: int = 600) -> str:
    return " | ".join(text.strip().splitlines()[-8:])[-n:]


# --------------------------------------------------------------------------- Ray-side access to the parts


class Cluster:
    """The chaos process's connection to the app's Ray cluster: find, kill and read the parts directly."""

    def __init__(self, address: str) -> None:
        import ray

        self.ray = ray
        # quiet: Ray's driver warns about signal handlers off the main thread, Serve's handle router logs at
        # INFO (both reset their levels, so they are switched off rather than raised)
        for name in ("ray._private.worker", "ray.serve"):
            logging.getLogger(name).disabled = True
        ray.init(address=address, namespace="xserve", log_to_driver=False, logging_level="ERROR",
                 configure_logging=False)

    def close(self) -> None:
        self.ray.shutdown()

    def named(self, pattern: str) -> tuple[str, Any]:
        """(name, handle) of the first named actor (sorted by name) matching ``pattern`` (a regex)."""
        found = sorted((a["name"], a["namespace"]) for a in self.ray.util.list_named_actors(all_namespaces=True)
                       if re.search(pattern, a["name"]))
        if not found:
            raise RuntimeError(f"no named actor matches {pattern!r}")
        name, namespace = found[0]
        return name, self.ray.get_actor(name, namespace=namespace)

    def kill(self, handle: Any) -> None:
        self.ray.kill(handle, no_restart=False)  # restart allowed: Ray re-runs the constructor

    def call(self, method: Any, *args: Any, timeout_s: float = 5.0) -> Any:
        return self.ray.get(method.remote(*args), timeout=timeout_s)

    def ranker_replicas(self) -> list[str]:
        return sorted(a["name"] for a in self.ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith("SERVE_REPLICA::") and "#Ranker#" in a["name"])

    def ranker_answers(self) -> bool:
        from ray import serve

        try:
            serve.get_deployment_handle("Ranker", app_name="default").stats.remote().result(timeout_s=5)
            return True
        except Exception:  # noqa: BLE001 - not answering yet is the expected state here
            return False


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    """How to hit one part, tell that it answers again, and read its state directly."""

    name: str
    inject: Callable[[], str]  # kills; returns what it killed
    answers: Callable[[], bool]
    read: Callable[[int, set[int]], Any]  # (baseline now_ms, new post ids) -> comparable state
    same: Callable[[Any, Any, int], str | None]  # (before, after, aged-cutoff ms) -> None or the difference
    components: frozenset[str] = frozenset()  # what a feed's ``degraded`` names while F lasts (empty: anything)


class Chaos:
    def __init__(self, args: argparse.Namespace, app: AppProcess, config: Any) -> None:
        self.args, self.app, self.config = args, app, config
        self.cluster: Cluster | None = None
        self.ages = Ages(app.data_dir)
        self.rng = random.Random(args.seed)
        self.writers = [WRITER_BASE_ID + i for i in range(args.writers)]
        self.probes: list[int] = []
        self.viewers: list[int] = []
        self._app_back: float | None = None  # when the app answered again after a full restart

    def say(self, msg: str) -> None:
        say(self.args.quiet, msg)

    def connect(self) -> Cluster:
        if self.cluster is None:
            assert self.app.ray_address is not None
            self.cluster = Cluster(self.app.ray_address)
        return self.cluster

    # ------------------------------------------------------------ setup

    async def setup(self, http: httpx.AsyncClient) -> None:
        """Create the writer users; pick probe viewers (world users with a clean, non-empty feed)."""
        for w in self.writers:
            (await http.put(f"/v1/users/{w}", json={"screen_name": f"chaos{w - WRITER_BASE_ID}"})).raise_for_status()
        candidates = list(range(1, self.args.users + 1))
        self.rng.shuffle(candidates)
        for v in candidates:
            if len(self.probes) >= self.args.probes:
                break
            full = await probe_round(http, [v], self.args.probe_limit)
            own = await probe_round(http, [v], self.args.probe_limit, in_network_only=True)
            if full.clean and own.clean and len(own.ids[v]) >= 5:
                self.probes.append(v)
        if len(self.probes) < self.args.probes:
            raise RuntimeError(f"found only {len(self.probes)} probe viewers with clean feeds (5+ in-network posts) "
                               f"among {self.args.users} users")
        rest = [v for v in candidates if v not in self.probes]
        self.viewers = self.probes + rest[: max(self.args.viewers - len(self.probes), 0)]
        for v in self.viewers:  # every viewer once, so the ingress knows them before a user-store fault
            await http.post("/v1/feed/for_you", json={"viewer_id": v})

    # ------------------------------------------------------------ faults

    def _probe_user_shard(self) -> int:
        from xserve.sharding import shard_for

        return shard_for(self.probes[0], self.config.serving.num_user_shards)

    def _probe_thunder_shard(self) -> int:
        """The Thunder shard holding most of the probes' followed authors (so the fault hits their feeds)."""
        from collections import Counter

        from xserve.sharding import shard_for

        n = self.config.thunder.num_shards
        owners = Counter(shard_for(a, n) for v in self.probes for a in self._user_read_one(v)[0])
        return owners.most_common(1)[0][0] if owners else 0

    def fault(self, name: str) -> Fault:
        c = self.connect()
        cfg = self.config
        killed: dict[str, Any] = {}

        def actor(pattern: str) -> Any:
            if "handle" not in killed:
                killed["name"], killed["handle"] = c.named(pattern)
            return killed["handle"]

        def kill(pattern: str) -> Callable[[], str]:
            def go() -> str:
                c.kill(actor(pattern))
                return killed["name"]
            return go

        def answers(pattern: str) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    c.call(actor(pattern).stats, timeout_s=2)
                    return True
                except Exception:  # noqa: BLE001 - restarting
                    return False
            return check

        if name == "thunder_shard":
            pattern = rf"-thunder-shard-{self._probe_thunder_shard()}-0$"
            return Fault(name, kill(pattern), answers(pattern), lambda now, new: self._thunder_read(actor(pattern), now),
                         same_posts, frozenset({"ThunderSource"}))
        if name == "retrieval_shard":
            pattern = r"-retrieval-shard-0$"
            return Fault(name, kill(pattern), answers(pattern),
                         lambda now, new: self._retrieval_read(actor(pattern), now, new), same_posts,
                         frozenset({"PhoenixSource"}))
        if name == "user_store":
            pattern = rf"-users-{self._probe_user_shard()}-of-{cfg.serving.num_user_shards}$"
            return Fault(name, kill(pattern), answers(pattern), lambda now, new: self._user_read(), same_users,
                         frozenset({"user_store_stale", "AuthorInfoHydrator"}))
        if name == "ranker_replica":
            def kill_replica() -> str:
                replicas = c.ranker_replicas()
                if not replicas:
                    raise RuntimeError("no Ranker replica is running")
                killed["replicas"] = replicas
                _, handle = c.named("^" + re.escape(replicas[0]) + "$")
                c.kill(handle)
                return replicas[0]

            def replaced() -> bool:
                now = c.ranker_replicas()
                return bool(now) and now != killed.get("replicas") and c.ranker_answers()

            return Fault(name, kill_replica, replaced, lambda now, new: None, lambda a, b, cutoff: None,
                         frozenset({"PhoenixScorer"}))
        if name == "full_restart":
            return Fault(name, self._full_restart, self._healthy, lambda now, new: self._user_read(), same_users)
        raise ValueError(name)

    def _thunder_read(self, shard: Any, now_ms: int) -> list[tuple[int, int]]:
        from xserve.schema import InNetworkRequest

        c = self.connect()
        out = []
        for v in self.probes:
            follows = self._user_read_one(v)[0]
            req = InNetworkRequest(viewer_id=v, followed_ids=tuple(follows), max_results=self.config.mixer.thunder_max_results)
            out.extend((p.post_id, p.created_at_ms) for p in c.call(shard.in_network_posts, req, now_ms))
        return out

    def _retrieval_read(self, shard: Any, now_ms: int, new: set[int]) -> list[tuple[int, int]]:
        rng = np.random.default_rng(self.args.seed)
        vector = rng.standard_normal(self.config.retrieval.embedding_dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        hits = self.connect().call(shard.search, vector, 100, now_ms, sorted(new))
        return list(zip(hits.post_ids.tolist(), hits.created_at_ms.tolist()))

    def _user_read_one(self, viewer: int) -> tuple[list[int], Any]:
        import msgspec

        from xserve.schema import UserQueryData
        from xserve.sharding import shard_for

        n = self.config.serving.num_user_shards
        _, shard = self.connect().named(rf"-users-{shard_for(viewer, n)}-of-{n}$")
        blob = self.connect().call(shard.query_data, viewer, self.config.mixer.history_length)
        data = msgspec.msgpack.decode(blob, type=UserQueryData | None)
        assert data is not None, viewer
        return sorted(data.features.followed_user_ids), data

    def _user_read(self) -> dict[int, tuple[Any, Any]]:
        """Every probe's features and history (served history left out: see the module doc)."""
        return {v: (data.features, data.history) for v in self.probes for data in [self._user_read_one(v)[1]]}

    def _full_restart(self) -> str:
        if self.cluster is not None:
            self.cluster.close()  # disconnect before the cluster dies under this driver
            self.cluster = None
        n = self.app.kill9()
        started = time.monotonic()
        self.app.start(self.args.start_timeout)
        self._app_back = time.monotonic()
        return f"{n} processes (kill -9), restarted in {self._app_back - started:.1f} s"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.app.port}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    # ------------------------------------------------------------ one fault

    async def clean_round(self, http: httpx.AsyncClient, rounds: int) -> Round | None:
        """The first in-network probe round with nothing degraded, of at most ``rounds`` (a loaded machine
        times out at times)."""
        for _ in range(rounds):
            r = await probe_round(http, self.probes, self.args.probe_limit, in_network_only=True)
            if r.clean:
                return r
            await asyncio.sleep(0.2)
        return None

    async def baseline(self, http: httpx.AsyncClient, fault: Fault, new: set[int]) -> Probe:
        """Probe feeds once two clean rounds in a row agree (a few tries), and the direct read."""
        last: Round | None = None
        for _ in range(6):
            r = await self.clean_round(http, 10)
            if r is not None and last is not None and all(compare_feeds(last.ids[v], r.ids[v]) is None for v in r.ids):
                break
            last = r
        if last is None:
            raise RuntimeError(f"{fault.name}: the probes' feeds stay degraded before the fault")
        now = clock.now_ms()
        return Probe(last.ids, now, await asyncio.to_thread(fault.read, now, set(new)))

    async def run_fault(self, http: httpx.AsyncClient, load: Load, name: str) -> Result:
        res = Result(name)
        fault = await asyncio.to_thread(self.fault, name)
        base = await self.baseline(http, fault, load.created)
        self.say(f"{name}: baseline taken ({len(self.probes)} probes); injecting")
        t_inject = time.monotonic()
        try:
            res.killed = await asyncio.to_thread(fault.inject)
        except RuntimeError as exc:  # e.g. the app did not come back after a full restart
            res.mismatch = f"injecting failed: {exc}"
            self.say(f"{name}: {res.mismatch}")
            return self._measure(res, load, t_inject, time.monotonic(), time.monotonic())
        recovered = await self.wait_recovery(http, fault, t_inject)
        if recovered is None:
            self.say(f"{name}: no recovery within {self.args.recovery_timeout:g} s")
            return self._measure(res, load, t_inject, time.monotonic(), time.monotonic())
        res.recovery_s = recovered - t_inject
        self.say(f"{name}: killed {res.killed}; recovered in {res.recovery_s:.2f} s")
        end_during = max(recovered, t_inject + self.args.fault_seconds)
        await asyncio.sleep(max(end_during - time.monotonic(), 0) + self.args.after_seconds)
        end_after = time.monotonic()
        self._measure(res, load, t_inject, end_during, end_after)
        await self.check_state(http, fault, base, set(load.created), res)
        for what, detail in (("first error", res.first_error), ("state differs", res.mismatch)):
            if detail:
                self.say(f"{name}: {what}: {detail}")
        return res

    async def wait_recovery(self, http: httpx.AsyncClient, fault: Fault, t_inject: float) -> float | None:
        """When the part answered again and a probe round then came back with none of its components degraded."""
        deadline = t_inject + self.args.recovery_timeout
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(fault.answers):
                await asyncio.sleep(0.1)
                continue
            started = time.monotonic()
            r = await probe_round(http, self.probes, self.args.probe_limit)
            failed = {d for d in r.degraded if d == "transport" or d.startswith("http_")}
            if not failed and not (r.degraded & fault.components if fault.components else r.degraded):
                return started
            await asyncio.sleep(0.1)
        return None

    def _measure(self, res: Result, load: Load, t0: float, end_during: float, end_after: float) -> Result:
        down = self._app_back if res.fault == "full_restart" else None
        return measure(res, load.samples, t0, end_during, end_after, down)

    async def check_state(self, http: httpx.AsyncClient, fault: Fault, base: Probe, new: set[int], res: Result) -> None:
        """``new``: every post the writers created (some may have reached the part only after the baseline)."""
        r = await self.clean_round(http, 20)
        now = clock.now_ms()
        if r is None:
            res.mismatch = "no probe round without degraded parts after recovery"
            return
        ids = r.ids
        new = new | {p for v in ids for p, _ in ids[v] if created_ms(p) >= base.now_ms}  # posts whose create timed out
        cutoff = now - self.config.mixer.max_post_age_ms + 60_000
        for v in self.probes:
            aged = self.ages.aged([p for p, _ in base.ids[v]], cutoff)
            why = compare_feeds(base.ids[v], ids[v], new, aged)
            if why is not None:
                res.mismatch = f"viewer {v} feed differs at {why}"
                return
        direct = await asyncio.to_thread(fault.read, base.now_ms, set(new))
        why = fault.same(base.direct, direct, cutoff)
        if why is not None:
            res.mismatch = f"direct read of the part differs: {why}"
            return
        res.state_match = 1


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, app: AppProcess, config: Any) -> int:
    chaos = Chaos(args, app, config)
    results: list[Result] = []
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port}", timeout=args.timeout, limits=limits) as http:
        await chaos.setup(http)
        chaos.say(f"probes {chaos.probes}, {len(chaos.viewers)} viewers, {len(chaos.writers)} writers; load for "
                  f"{args.warmup_seconds:g} s")
        load = Load(http, chaos.viewers, chaos.writers, args.write_fraction, random.Random(args.seed + 1))
        clients = [asyncio.create_task(load.client()) for _ in range(args.clients)]
        try:
            await asyncio.sleep(args.warmup_seconds)
            for name in args.faults:
                results.append(await chaos.run_fault(http, load, name))
                if results[-1].recovery_s != results[-1].recovery_s:
                    break  # the app may be broken: later faults would measure nothing
        finally:
            load.stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
            if chaos.cluster is not None:
                chaos.cluster.close()
    report(results)
    failures = [why for r in results if (why := r.failure()) is not None]
    if failures:
        print(f"chaos: FAILED: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
              file=sys.stderr)
        return 1
    return 0


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
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds (default 10)")
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "XSERVE__SERVING__DEMO_WORLD": args.world}  # a string field takes the raw value
    # a raylet gives its dashboard agent 15 s to start and aborts the node otherwise; a loaded machine needs longer
    env.setdefault("RAY_agent_register_timeout_ms", "120000")
    mixer = MixerConfig()
    for name in _STAGE_TIMEOUTS:  # a loaded machine trips the default timeouts without any fault
        env[f"XSERVE__MIXER__{name.upper()}"] = json.dumps(getattr(mixer, name) * args.timeout_scale)
    if args.world == "tiny":  # a first model in seconds; the chaos run needs a model, not a good one
        env |= {"XSERVE__SERVING__BOOTSTRAP_TRAIN_EXAMPLES": "500", "XSERVE__TRAIN__EPOCHS": "1"}
    config = load_config(None, environ={k: v for k, v in env.items() if k.startswith("XSERVE")},
                         overrides={"storage": {"data_dir": str(data_dir)}})
    app = AppProcess(data_dir, args.port, args.num_cpus, env, work / "app.log")
    say(args.quiet, f"starting the app on 127.0.0.1:{args.port} over {data_dir} (log: {work / 'app.log'})")
    started = time.monotonic()
    try:
        app.start(args.start_timeout)
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
