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
