"""`make run` on one machine: start-up time of a first run and a later run, and the app's resident memory.

    python benchmarks/bench_start.py                     # a fresh data directory (deleted afterwards)
    python benchmarks/bench_start.py --data-dir DIR      # DIR as it is: a later run only, when it holds a world

Starts ``xserve serve`` (what ``make run`` runs, with the default config) in a
child process, as a user would, and times it from launch to ``/healthz``
answering 200:

* ``run.first_start_s``: over an empty data directory: seeding the demo world
  (``serving.demo_world``), the first-run training and indexing, then Ray and
  Serve starting every part;
* ``run.later_start_s``: the same command again over the now prepared
  directory (Ray, Serve and the parts' start-up, the stores loading their data).

After each start it asks for ``--feeds`` feeds (so the lazily loaded parts
have loaded), then sums the memory of every process of the app (the server,
its Ray cluster: GCS, raylet, workers, Serve's controller and proxy, the
replicas and the store actors): ``run.rss_mb`` (resident set, shared pages
counted in every process that maps them, as ``ps`` shows) and ``run.pss_mb``
(shared pages divided among their processes: what the app costs the machine),
and ``run.processes``. Then it creates one post through the API and waits until
retrieval has indexed it (the indexer loads its candidate tower on the first
post it embeds) and reads the memory again: ``run.rss_mb_after_post``,
``run.pss_mb_after_post``. The start's own phases, from the server's log, are
``run.first_phase_s.<phase>`` (seed, train, index), and the later run's
``run.later_phase_s.<phase>``: ``ray`` (``ray.init``), ``stores`` (creating the
store actors), ``serve_start`` (Serve's controller and proxy), ``deploy`` (until
every replica is constructed); the rest of ``run.later_start_s`` is the
command's own start before them and the wait for ``/healthz`` after.

Where it goes, per part of the later run (a Ray worker is named after its actor
or replica class, other processes after their program): ``run.pss_mb.<part>``, ``run.rss_mb.<part>``,
``run.start_cpu_s.<part>`` (CPU seconds it used from launch to ``/healthz``:
its start cost, imports included; their sum is ``run.later_start_cpu_s``, and
``run.first_start_cpu_s`` the first run's, training included: unlike the start
times, these hardly depend on what else the machine runs), and
``run.processes_loading.<library>`` (how many processes loaded torch, lancedb,
pyarrow, pandas), with a ``#`` line per part naming the ones it loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.chaoslib.app_process import AppProcess  # noqa: E402
from scripts.proc_cpu import cpu_seconds, process_kind  # noqa: E402


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) of ``pids`` in MB, from ``/proc/<pid>/smaps_rollup``; a process gone is skipped."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.M))
        rss += int(fields.get("Rss", 0))
        pss += int(fields.get("Pss", 0))
    return rss / 1024, pss / 1024


HEAVY_LIBRARIES = ("torch", "lancedb", "pyarrow", "pandas")  # the large imports: a process that needs none should map none


def libraries(pid: int) -> set[str]:
    """Which of :data:`HEAVY_LIBRARIES` process ``pid`` has loaded (a shared object of theirs is mapped)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return {lib for lib in HEAVY_LIBRARIES if f"/site-packages/{lib}/" in maps or f"/site-packages/{lib}.libs/" in maps}


def by_name(pids: list[int]) -> dict[str, dict[str, Any]]:
    """Per process kind (``scripts.proc_cpu.kind_of``): processes, PSS in MB, CPU seconds, and the heavy libraries loaded."""
    out: dict[str, dict[str, Any]] = {}
    for pid in pids:
        name = re.sub(r"[^A-Za-z0-9_]", "_", process_kind(pid))
        entry = out.setdefault(name, {"processes": 0, "rss_mb": 0.0, "pss_mb": 0.0, "cpu_s": 0.0, "libraries": set()})
        entry["processes"] += 1
        rss, pss = memory_mb([pid])
        entry["rss_mb"] += rss
        entry["pss_mb"] += pss
        entry["cpu_s"] += cpu_seconds(pid)
        entry["libraries"] |= libraries(pid)
    return out


def feeds(port: int, n: int) -> int:
    """Ask for ``n`` feeds of viewers 1..n; returns how many answered 200."""
    ok = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for viewer in range(1, n + 1):
            ok += http.post("/v1/feed/for_you", json={"viewer_id": viewer}).status_code == 200
    return ok


def indexed_posts(http: httpx.Client) -> int:
    """Posts the retrieval shards have upserted since they started (``/v1/admin/stats``)."""
    return sum(s["upserted"] for s in http.get("/v1/admin/stats").json()["retrieval"]["shards"])


def post_and_wait_indexed(port: int, timeout_s: float = 120.0) -> float:
    """Create one post (the demo's user 1, no API key by default) and wait until retrieval has indexed it;
    returns the seconds that took."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        before = indexed_posts(http)
        started = time.perf_counter()
        r = http.post("/v1/posts", json={"author_id": 1, "text": "bench_start: a post to index"})
        if r.status_code != 200:
            raise RuntimeError(f"creating a post answered {r.status_code}: {r.text[:200]}")
        while indexed_posts(http) <= before:
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"the created post was not indexed within {timeout_s:g} s")
            time.sleep(0.2)
        return time.perf_counter() - started


def run_once(app: AppProcess, label: str, n_feeds: int) -> dict[str, Any]:
    started = time.perf_counter()
    app.start()
    took = time.perf_counter() - started
    started_cpu = by_name(app.pids())  # the CPU each part used to start (before any feed)
    served = feeds(app.port, n_feeds)
    pids = app.pids()
    rss, pss = memory_mb(pids)
    parts = by_name(pids)
    for name, part in parts.items():
        part["start_cpu_s"] = started_cpu.get(name, {}).get("cpu_s", 0.0)
    indexed_s = post_and_wait_indexed(app.port)
    rss_after, pss_after = memory_mb(app.pids())
    return {f"{label}_start_s": took, "rss_mb": rss, "pss_mb": pss, "processes": len(pids), "feeds_ok": served,
            "by_name": parts, "post_indexed_s": indexed_s, "rss_mb_after_post": rss_after,
            "pss_mb_after_post": pss_after}


def phases(log_text: str, line: str = "prepared") -> dict[str, float]:
    """The phases the server logs on its ``<line> in N s: {...}`` line (``prepared``: the first run's seed, train
    and index; ``started``: Ray, the stores, Serve, the deployment), when it does."""
    m = re.search(rf"{line} in [\d.]+ s: (\{{.*\}})", log_text)
    if not m:
        return {}
    done = json.loads(m.group(1))
    return {k[: -len("_s")]: float(v) for k, v in done.items() if k.endswith("_s")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None, help="use this data directory (default: a fresh one)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the app's Ray (default 2: the app's reservations)")
    p.add_argument("--feeds", type=int, default=5, help="feeds asked for after each start, before memory is read")
    p.add_argument("--start-timeout", type=float, default=900.0, help="seconds a start may take")
    args = p.parse_args(argv)
    fresh = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="xserve-start-")) if fresh else args.data_dir
    first = not data_dir.exists() or not any(data_dir.iterdir())  # an empty directory gets a first run
    log_path = data_dir.parent / f"{data_dir.name}.serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XSERVE")}  # the default config, as make run
    app = AppProcess(data_dir, args.port, args.num_cpus, env, log_path, args.start_timeout)
    out: dict[str, float] = {}
    try:
        if first:
            measured = run_once(app, "first", args.feeds)
            out["first_start_s"] = measured["first_start_s"]
            out["first_rss_mb"] = measured["rss_mb"]
            app.stop()
            for phase, secs in phases(log_path.read_text(errors="replace")).items():
                print(f"run.first_phase_s.{phase} {secs:.1f} s", flush=True)
            print(f"run.first_start_s {out['first_start_s']:.1f} s", flush=True)
            # the CPU the app used until /healthz (training included): on a loaded machine the wall time stretches, this does not
            print(f"run.first_start_cpu_s {sum(p['start_cpu_s'] for p in measured['by_name'].values()):.1f} s", flush=True)
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        measured = run_once(app, "later", args.feeds)
        app.stop()
        for phase, secs in phases(log_path.read_bytes()[log_offset:].decode(errors="replace"), "started").items():
            print(f"run.later_phase_s.{phase} {secs:.1f} s")
        print(f"run.later_start_s {measured['later_start_s']:.1f} s")
        print(f"run.rss_mb {measured['rss_mb']:.0f} MB")
        print(f"run.pss_mb {measured['pss_mb']:.0f} MB")
        print(f"run.processes {measured['processes']} processes")
        print(f"run.feeds_ok {measured['feeds_ok']} of {args.feeds}")
        print(f"run.post_indexed_s {measured['post_indexed_s']:.1f} s")
        print(f"run.rss_mb_after_post {measured['rss_mb_after_post']:.0f} MB")
        print(f"run.pss_mb_after_post {measured['pss_mb_after_post']:.0f} MB")
        parts = sorted(measured["by_name"].items(), key=lambda kv: -kv[1]["pss_mb"])
        print(f"run.later_start_cpu_s {sum(p['start_cpu_s'] for _, p in parts):.1f} s")
        for lib in HEAVY_LIBRARIES:
            print(f"run.processes_loading.{lib} {sum(p['processes'] for _, p in parts if lib in p['libraries'])} processes")
        for name, part in parts:
            print(f"run.pss_mb.{name} {part['pss_mb']:.0f} MB")
        for name, part in parts:  # each process's shared libraries counted again: what fewer processes would save
            print(f"run.rss_mb.{name} {part['rss_mb']:.0f} MB")
        for name, part in parts:  # what each part costs to start (its CPU until /healthz), and what it loaded
            print(f"run.start_cpu_s.{name} {part['start_cpu_s']:.1f} s")
        for name, part in parts:
            print(f"# {name}: {part['processes']} process(es), loads {'+'.join(sorted(part['libraries'])) or 'none of them'}")
    finally:
        app.stop()
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
