"""Smoke test: the Thunder benchmark runs tiny and prints its required lines."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# a tail over the tiny run's 5 requests is a maximum, and the bench says so (p99 from 1,000 requests)
REQUIRED = [
    "thunder.ingest_events_per_s",
    "thunder.query_requests_per_figure",
    "thunder.query_uncached_p50_us.follows200",
    "thunder.query_uncached_max_us.follows200",
    "thunder.query_uncached_max_us.follows2000",
    "thunder.baseline_naive_max_us.follows2000",
    "thunder.query_uncached_to_naive_max.follows2000",
    "thunder.query_cache_hit_max_us.follows200",
    "thunder.rss_mb_per_million_posts",
    "thunder.rss_mb_per_million_posts.shards1_per_shard",
    "thunder.rss_mb_per_million_posts.shards4_per_shard",
]


def test_bench_thunder_runs_tiny():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_thunder.py"), "--posts", "3000", "--authors", "300",
         "--queries", "5", "--repeats", "1", "--no-actors"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    for name in REQUIRED:
        assert re.fullmatch(r"-?[0-9.]+ \S+", lines[name]), (name, out)
    assert not any(".query_uncached_p99" in name for name in lines), out  # 5 samples make no p99
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_thunder.py"), "--posts", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr
