"""The start-up benchmark's pure parts: the first run's phases from the server's log, and summing memory."""

from __future__ import annotations

import os

from benchmarks.bench_start import memory_mb, phases


def test_the_first_runs_phases_come_from_the_prepared_line():
    log = 'xserve: seeding ...\nxserve: prepared in 61.5 s: {"seed_s": 3.1, "train_s": 50.2, "indexed": 9, "index_s": 4.0}\n'
    assert phases(log) == {"seed": 3.1, "train": 50.2, "index": 4.0}
    assert phases("xserve: serving on http://127.0.0.1:8000") == {}


def test_memory_sums_the_live_processes_and_skips_the_gone():
    rss, pss = memory_mb([os.getpid(), 2**22 + 7])  # this process, and a pid above the kernel's default limit
    assert rss >= pss > 10


def test_processes_are_named_after_their_actor_or_program():
    from scripts.proc_cpu import kind_of

    assert [kind_of(cmd) for cmd in (
        "ray::ServeReplica:default:Ranker\0", "ray::ThunderShard.query\0",
        "/v/bin/python\0-m\0xserve\0serve\0--port\08000\0", "/v/bin/xserve\0serve\0--data-dir\0d\0",
        "/v/lib/ray/core/src/ray/raylet/raylet\0--x\0",
    )] == ["Ranker", "ThunderShard", "xserve_serve", "xserve_serve", "raylet"]


def test_parts_count_their_processes_cpu_and_heavy_libraries():
    import numpy  # noqa: F401 - a library this process has loaded; torch may or may not be

    from benchmarks.bench_start import by_name, libraries
    from scripts.proc_cpu import cpu_seconds

    assert cpu_seconds(os.getpid()) > 0 and cpu_seconds(2**22 + 7) == 0.0
    assert libraries(2**22 + 7) == set()
    parts = by_name([os.getpid()])
    (part,) = parts.values()
    assert part["processes"] == 1 and part["pss_mb"] > 10 and part["cpu_s"] > 0
    assert part["rss_mb"] >= part["pss_mb"], "a shared page counts whole in RSS, in part in PSS"
    import sys

    assert ("torch" in part["libraries"]) == ("torch" in sys.modules)  # mapped exactly when imported


def test_the_later_runs_phases_come_from_the_started_line():
    log = 'xserve: started in 14.0 s: {"ray_s": 6.1, "stores_s": 0.2, "serve_start_s": 2.7, "deploy_s": 5.0}\n'
    assert phases(log, "started") == {"ray": 6.1, "stores": 0.2, "serve_start": 2.7, "deploy": 5.0}
    assert phases(log) == {}
