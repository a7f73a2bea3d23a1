"""The load test's pure parts: per-stage times from a feed's trace, and the knee of a client ramp."""

from __future__ import annotations

import math

import pytest

from scripts.load_test import Stats, knee, record_stages, standard_report
from xserve.config import PhoenixConfig
from xserve.phoenix.model.flops import flop_bound_s, model_flops


def report(stage, component, ms, count_in=0):
    return {"stage": stage, "component": component, "duration_ms": ms, "count_in": count_in, "count_out": count_in}


def test_a_stage_takes_its_slowest_concurrent_component_or_the_sum_of_sequential_ones():
    stats = Stats()
    trace = [
        report("query_hydrator", "A", 1.0), report("query_hydrator", "B", 2.0),
        report("source", "PhoenixSource", 30.0), report("source", "ThunderSource", 10.0),
        report("filter", "F1", 1.0), report("filter", "F2", 2.0),
        report("scorer", "PhoenixScorer", 50.0, count_in=1_400), report("scorer", "WeightedScorer", 1.0),
        report("side_effect", "ServedHistorySideEffect", 99.0),  # after the response: not in the feed's time
    ]
    record_stages(stats, viewer=5, trace=trace, feed_ms=100.0)
    assert {k: v[0] for k, v in stats.stage_wall_ms.items()} == {
        "query_hydrator": 2.0, "source": 30.0, "filter": 3.0, "scorer": 51.0, "outside_pipeline": 14.0,
    }
    assert stats.candidates_ranked == [1_400] and stats.explained == [(5, 1_400, 100.0)]


def test_the_knee_is_interpolated_where_p99_crosses_the_line_or_is_a_lower_bound_beyond_the_ramp():
    assert knee([(1, 5.0, 200.0), (2, 9.0, 400.0), (4, 11.0, 600.0)]) == (pytest.approx(10.0), True)
    assert knee([(1, 5.0, 200.0), (2, 9.0, 300.0)]) == (9.0, False)
    assert knee([(1, 5.0, 700.0)]) == (5.0, True)


def test_the_standard_lines_are_one_name_value_unit_each(capsys):
    stats = Stats()
    stats.latency_ms["feed"] = [100.0, 120.0, 140.0]
    record_stages(stats, 1, [report("scorer", "PhoenixScorer", 50.0, count_in=1_000)], 120.0)
    standard_report(stats, seconds=1.0, bounds_ms=[40.0], peak_gflops=50.0)
    lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["load.feed_p50_ms"] == "120 ms" and lines["load.feed_p50_vs_flop_bound"] == "3 x"
    assert lines["load.candidates_ranked_p50"] == "1000 candidates" and lines["load.requests_per_s"] == "3 req/s"
    assert "load.stage_p50_ms.scorer" in lines and "load.stage_p50_ms.outside_pipeline" in lines


def test_the_flop_bound_grows_with_candidates_and_history_and_is_flops_over_the_peak():
    cfg = PhoenixConfig()
    assert model_flops(cfg, 128, 1_400) > model_flops(cfg, 128, 1_000) > model_flops(cfg, 64, 1_000) > 0
    assert math.isclose(flop_bound_s(cfg, 128, 1_400, 35.0), model_flops(cfg, 128, 1_400) / 35e9)
