"""A chaos run: set up writers and probes, start the load, and for each fault take a baseline, inject it,
wait for recovery and check state (the steps are described in ``scripts/chaos.py``)."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

import httpx

from scripts.chaoslib.app_process import AppProcess
from scripts.chaoslib.faults import FAULTS, Fault
from scripts.chaoslib.load import Load
from scripts.chaoslib.parts import Parts
from scripts.chaoslib.probes import Round, probe_round
from scripts.chaoslib.report import report, say
from scripts.chaoslib.results import Result, measure
from scripts.chaoslib.state import Ages, Probe, compare_feeds, created_ms
from scripts.chaoslib.writes import Ledger, read_back
from xserve import clock
from xserve.config import XServeConfig

__all__ = ["WRITER_BASE_ID", "Chaos", "run"]

WRITER_BASE_ID = 7_700_000_000  # the script's writer users: ids no world uses


class Chaos:
    """The faults of one run, over ``app`` (configured by ``config``), with the settings of ``args``."""

    def __init__(self, args: argparse.Namespace, app: AppProcess, config: XServeConfig) -> None:
        self.args, self.config = args, config
        self.parts = Parts(app, config, args.seed)
        self.ages = Ages(app.data_dir)
        self.rng = random.Random(args.seed)
        self.writers = [WRITER_BASE_ID + i for i in range(args.writers)]
        self.probes: list[int] = []
        self.viewers: list[int] = []

    def say(self, msg: str) -> None:
        say(self.args.quiet, msg)

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

    async def clean_round(self, http: httpx.AsyncClient, rounds: int) -> Round | None:
        """The first in-network probe round with nothing degraded, of at most ``rounds`` (a loaded machine
        times out at times)."""
        for _ in range(rounds):
            r = await probe_round(http, self.probes, self.args.probe_limit, in_network_only=True)
            if r.clean:
                return r
            await asyncio.sleep(0.2)
        return None

    async def baseline(self, http: httpx.AsyncClient, fault: Fault, load: Load) -> Probe:
        """Probe feeds once two clean rounds in a row agree (a few tries), and the direct read (no write runs
        meanwhile, so the writers' posts it leaves out are all it must leave out)."""
        last: Round | None = None
        for _ in range(6):
            r = await self.clean_round(http, 10)
            limit = self.args.probe_limit
            if r is not None and last is not None and all(compare_feeds(last.ids[v], r.ids[v], limit=limit) is None
                                                          for v in r.ids):
                break
            last = r
        if last is None:
            raise RuntimeError(f"{fault.name}: the probes' feeds stay degraded before the fault")
        now = clock.now_ms()
        async with load.writes_paused():
            return Probe(last.ids, now, await asyncio.to_thread(fault.state, now, load.created))

    async def run_fault(self, http: httpx.AsyncClient, load: Load, name: str) -> Result:
        res = Result(name)
        fault = await asyncio.to_thread(FAULTS[name], self.parts, self.probes, load.writes)
        base = await self.baseline(http, fault, load)
        self.say(f"{name}: baseline taken ({len(self.probes)} probes); injecting")
        t_inject = time.monotonic()
        try:
            res.killed = await asyncio.to_thread(fault.inject)
        except RuntimeError as exc:  # e.g. the app did not come back after a full restart
            res.mismatch = f"injecting failed: {exc}"
            self.say(f"{name}: {res.mismatch}")
            return self._measure(res, load, fault, t_inject, time.monotonic(), time.monotonic())
        recovered = await self.wait_recovery(http, fault, t_inject)
        if recovered is None:
            self.say(f"{name}: no recovery within {self.args.recovery_timeout:g} s")
            return self._measure(res, load, fault, t_inject, time.monotonic(), time.monotonic())
        res.recovery_s = recovered - t_inject
        self.say(f"{name}: killed {res.killed}; recovered in {res.recovery_s:.2f} s")
        end_during = max(recovered, t_inject + self.args.fault_seconds)
        await asyncio.sleep(max(end_during - time.monotonic(), 0) + self.args.after_seconds)
        end_after = time.monotonic()
        self._measure(res, load, fault, t_inject, end_during, end_after)
        async with load.writes_paused():  # the ledger and the parts' state hold still while they are read
            await self.check_state(http, fault, base, load.created, res)
            back = await read_back(http, load.writes)
        res.writes_read_back, res.lost_writes = back.checked, len(back.lost)
        res.first_lost = back.lost[0] if back.lost else ""
        for what, detail in (("first error", res.first_error), ("state differs", res.mismatch),
                             ("lost write", res.first_lost)):
            if detail:
                self.say(f"{name}: {what}: {detail}")
        return res

    def _measure(self, res: Result, load: Load, fault: Fault, t0: float, end_during: float, end_after: float) -> Result:
        died = fault.killed_at if fault.holds_requests else None
        return measure(res, load.samples, t0, end_during, end_after, fault.app_down_until, died)

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

    async def check_state(self, http: httpx.AsyncClient, fault: Fault, base: Probe, new: set[int], res: Result) -> None:
        """``new``: every post the writers created (some may have reached the part only after the baseline)."""
        r = await self.clean_round(http, 20)
        now = clock.now_ms()
        if r is None:
            res.mismatch = "no probe round without degraded parts after recovery"
            return
        ids = r.ids
        new = new | {p for v in ids for p, *_ in ids[v] if created_ms(p) >= base.now_ms}  # posts whose create timed out
        cutoff = now - self.config.mixer.max_post_age_ms + clock.MINUTE_MS
        for v in self.probes:
            aged = self.ages.aged([p for p, *_ in base.ids[v]], cutoff)
            why = compare_feeds(base.ids[v], ids[v], new, aged, limit=self.args.probe_limit)
            if why is not None:
                res.mismatch = f"viewer {v} feed differs at {why}"
                return
        direct = await asyncio.to_thread(fault.state, base.now_ms, set(new))
        why = fault.same_state(base.direct, direct, cutoff)
        if why is not None:
            res.mismatch = f"direct read of the part differs: {why}"
            return
        res.state_match = 1


async def run(args: argparse.Namespace, app: AppProcess, config: XServeConfig) -> int:
    """Every fault of ``args.faults`` in turn under load; prints the report; 1 when any failed, else 0."""
    chaos = Chaos(args, app, config)
    results: list[Result] = []
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.port}", timeout=args.timeout, limits=limits) as http:
        await chaos.setup(http)
        chaos.say(f"probes {chaos.probes}, {len(chaos.viewers)} viewers, {len(chaos.writers)} writers; load for "
                  f"{args.warmup_seconds:g} s")
        load = Load(http, chaos.viewers, chaos.writers, args.write_fraction, random.Random(args.seed + 1),
                    Ledger(config.mixer.history_length))
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
            chaos.parts.disconnect()
    report(results)
    failures = [why for r in results if (why := r.failure()) is not None]
    if failures:
        print(f"chaos: FAILED: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
              file=sys.stderr)
        return 1
    return 0
