"""The load test's pure parts: per-stage times from a feed's trace, and the knee of a client ramp."""

from __future__ import annotations

import math
import os

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


def test_the_cpu_lines_attribute_a_local_servers_processes_by_kind(capsys):
    """``load.cpu_ms_per_feed.*``: the app is found from the process listening on its port (here this test, on
    an ephemeral port), its processes' CPU read from /proc before and after, named by kind, per feed."""
    import socket
    import time

    from scripts.load_test import cpu_lines
    from scripts.proc_cpu import AppProcesses, cpu_by_kind, kind_of

    assert kind_of("ray::ServeReplica:xserve:FeedIngress") == "FeedIngress"
    assert kind_of("ray::UserStoreShard.query_data") == "UserStoreShard"
    assert kind_of("/v/bin/python -u /v/ray/_private/log_monitor.py --logs-dir=x") == "log_monitor"
    assert kind_of("/v/ray/core/src/ray/raylet/raylet --x=1") == "raylet"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        app = AppProcesses.serving(listener.getsockname()[1])
        assert app is not None and app.root == os.getpid()  # no `xserve serve` above it: the listener itself
        before = app.cpu_s()
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:  # burn 50 ms of CPU
            pass
        spent = cpu_by_kind(before, app.cpu_s())
    assert sum(spent.values()) >= 0.03
    stats = Stats()
    stats.latency_ms["feed"] = [1.0] * 10
    stats.cpu_s = {"FeedIngress": 0.5, "Ranker": 1.0}
    cpu_lines(stats, seconds=2.0)
    assert capsys.readouterr().out.splitlines() == [
        "load.cpu_ms_per_feed.Ranker 100 ms", "load.cpu_ms_per_feed.FeedIngress 50 ms",
        "load.cpu_ms_per_feed.total 150 ms", "load.cpu_cores_busy 0.75 cores"]
    assert AppProcesses.serving(_free_port()) is None  # nothing listens: no lines, the server is not here


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
