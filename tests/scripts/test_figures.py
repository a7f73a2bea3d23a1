"""scripts/figures.py: a tail over fewer than 1,000 samples is the maximum, and says so."""

from __future__ import annotations

import math

from scripts.figures import MIN_P99_SAMPLES, percentile, tail, tail_name


def test_a_thousand_samples_give_the_p99_under_its_name():
    ms = [float(i) for i in range(1, MIN_P99_SAMPLES + 1)]
    name, value = tail("x.p99_ms", ms)
    assert name == "x.p99_ms" and math.isclose(value, percentile(ms, 99)) and value < max(ms)


def test_fewer_give_the_maximum_named_max():
    assert tail("x.p99_ms.follows200", [3.0, 9.0, 1.0]) == ("x.max_ms.follows200", 9.0)
    assert tail_name("swap.p99_ratio", MIN_P99_SAMPLES - 1) == "swap.max_ratio"
    name, value = tail("x.p99_ms", [])
    assert name == "x.max_ms" and math.isnan(value) and math.isnan(percentile([], 50))
