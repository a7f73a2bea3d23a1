"""Smoke test: the retrieval benchmark runs small and prints its grep-able lines."""

from __future__ import annotations

from benchmarks.bench_retrieval import main


def test_bench_retrieval_small(capsys, tmp_path):
    argv = ["--posts", "4000", "--queries", "5", "--k", "100", "--upsert-rows", "300", "--backfill-posts", "0", "--no-ray-fanout",
            "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    lines = dict(line.split(" ", 2)[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("retrieval."))
    for name in ("recall_at_100", "recall_at_1000", "shard_p99_ms", "fanout_p50_ms", "fanout_p99_ms", "upsert_rows_per_s"):
        assert f"retrieval.{name}" in lines
    assert float(lines["retrieval.recall_at_100"]) >= 0.9
