"""Smoke test: the retrieval benchmark runs small and prints its grep-able lines."""

from __future__ import annotations

from benchmarks.bench_retrieval import main


def _lines(out: str) -> dict[str, str]:
    return dict(line.split(" ", 2)[:2] for line in out.splitlines() if line.startswith("retrieval."))


def test_bench_retrieval_small(capsys, tmp_path):
    argv = ["--posts", "4000", "--queries", "5", "--k", "100", "--upsert-rows", "300", "--backfill-posts", "0", "--no-ray-fanout",
            "--sweep", "nprobes=4;fanout=threads", "--corpus-cache", str(tmp_path / "cache")]
    assert main([*argv, "--data-dir", str(tmp_path / "a")]) == 0
    lines = _lines(capsys.readouterr().out)
    # 5 queries: every tail is a maximum, named so (scripts/figures.py)
    for name in ("recall_at_100", "recall_at_1000", "shard_max_ms", "fanout_p50_ms", "fanout_max_ms", "upsert_rows_per_s",
                 "fanout_max_ms.before", "recall_at_100.nprobes=4", "fanout_max_ms.fanout=threads"):
        assert f"retrieval.{name}" in lines
    assert float(lines["retrieval.recall_at_100"]) >= 0.9
    assert "retrieval.index_build_s" in lines
    # second run: the written tables come from the cache, and the figures that depend on them agree
    assert main([*argv, "--data-dir", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    again = _lines(out)
    assert "# corpus tables copied" in out and "retrieval.index_build_s" not in again
    assert again["retrieval.recall_at_100"] == lines["retrieval.recall_at_100"]
