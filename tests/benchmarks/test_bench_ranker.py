"""Smoke test: the ranker benchmark runs tiny and prints every figure as `name value unit`."""

from __future__ import annotations

import re

import torch

from benchmarks.bench_ranker import main


def test_bench_ranker_tiny_prints_every_figure(capsys):
    assert main(["--small", "--history", "6", "--candidates", "9", "--repeats", "1", "--onepass-repeats", "1",
                 "--naive-sample", "3", "--chunk-size", "4", "--extra-shapes", "5x4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = {line.split()[0] for line in lines}
    for path in ("naive", "onepass", "miss", "hit"):
        assert f"ranker.candidates_per_s.{path}.s6_c9" in names
    for name in ("speedup_vs_naive.s6_c9", "speedup_vs_onepass.s6_c9", "cache_hit_speedup.s6_c9",
                 "latency_ms.s6_c9", "gflops_achieved", "gflops_matmul_peak", "candidates_per_s.onepass_fused.s6_c9",
                 "candidates_per_s.naive_fused.s6_c9", "speedup_vs_onepass_fused.s6_c9", "reuse_bound_fraction.s5_c4"):
        assert f"ranker.{name}" in names
    assert {"ranker.peak_fraction", "ranker.gflops_matmul_torch", "ranker.peak_fraction_torch"} <= names
    value = {line.split()[0]: float(line.split()[1]) for line in lines}
    # the peak is the faster of torch's matmul and oneDNN's (the fused kernels' own), never below torch's
    assert value["ranker.gflops_matmul_peak"] >= 0.8 * value["ranker.gflops_matmul_torch"]
    assert all(re.fullmatch(r"ranker\.\S+ \d+(\.\d+)? \S+", line) for line in lines), lines
