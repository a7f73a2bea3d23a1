"""scripts/chaoslib/results.py: what one fault measured, from the load's records, and when it failed."""

from __future__ import annotations

from scripts.chaoslib.load import Sample
from scripts.chaoslib.results import Result, measure


def sample(started: float, status: int = 200, ms: float = 10.0, op: str = "feed", degraded: tuple[str, ...] = (),
           error: str = "") -> Sample:
    return Sample(started, ms, op, status, degraded, error)


def test_only_requests_sent_in_the_window_count_and_latency_splits_at_the_end_of_the_fault():
    samples = [sample(0.5), sample(1.0, ms=100.0), sample(1.5, ms=300.0, op="post"), sample(2.5, ms=5.0),
               sample(3.0)]
    res = measure(Result("user_store"), samples, t0=1.0, end_during=2.0, end_after=3.0)
    assert res.requests == 3
    assert res.ms_during == [100.0, 300.0]
    assert res.ms_during_feed == [100.0]  # writes left out
    assert res.ms_after == [5.0]


def test_errors_are_counted_by_kind_and_a_5xx_is_named_first():
    samples = [sample(1.0, status=0, error="ConnectError"), sample(1.1, status=422, op="post", error="bad"),
               sample(1.2, status=503, error="busy"), sample(1.3, degraded=("ThunderSource",)),
               sample(2.5, degraded=("ThunderSource",))]
    res = measure(Result("thunder_shard"), samples, t0=0.0, end_during=2.0, end_after=3.0)
    assert (res.errors_5xx, res.errors_4xx, res.conn_errors, res.down_errors) == (1, 1, 1, 0)
    assert res.first_error == "feed 503: busy"
    assert res.degraded_during == 1  # the degraded answer after the fault window is not counted
    assert res.ms_during == [10.0] * 3  # the answered 422, 503 and 200: the transport error has no latency


def test_requests_that_found_no_app_count_apart_only_while_it_was_down():
    samples = [sample(1.0, status=0), sample(1.1, status=502), sample(1.2, status=404), sample(1.3, status=500),
               sample(2.5, status=0)]
    down = measure(Result("full_restart"), samples, t0=0.0, end_during=2.0, end_after=3.0, app_down_until=2.0)
    assert (down.requests, down.down_errors, down.errors_5xx, down.conn_errors) == (5, 3, 1, 1)
    up = measure(Result("full_restart"), samples, t0=0.0, end_during=2.0, end_after=3.0)
    assert (up.down_errors, up.errors_5xx, up.errors_4xx, up.conn_errors) == (0, 2, 1, 2)


def test_no_requests_leave_no_latencies():
    res = measure(Result("ranker_replica"), [], t0=0.0, end_during=1.0, end_after=2.0)
    assert res.requests == 0 and res.ms_during == [] and res.ms_after == []


def test_failure_names_the_worst_problem_first():
    ok = Result("user_store", recovery_s=1.0, state_match=1)
    assert ok.failure() is None
    assert Result("user_store", mismatch="injecting failed: x").failure() == "user_store did not recover (injecting failed: x)"
    assert "2 5xx responses; first: feed 503" in Result("user_store", recovery_s=1.0, errors_5xx=2, conn_errors=1,
                                                        first_error="feed 503").failure()
    assert "3 failed requests" in Result("user_store", recovery_s=1.0, errors_4xx=1, conn_errors=2).failure()
    assert Result("user_store", recovery_s=1.0, mismatch="viewer 3 feed differs").failure() == (
        "user_store state mismatch: viewer 3 feed differs")


def test_a_lost_acknowledged_write_fails_the_fault_before_anything_but_no_recovery():
    lost = Result("post_catalog", recovery_s=1.0, state_match=1, errors_5xx=1, writes_read_back=40, lost_writes=2,
                  first_lost="post 5: its create was acknowledged, but GET finds no such post")
    assert lost.failure() == ("post_catalog lost 2 acknowledged writes; first: post 5: its create was acknowledged, "
                              "but GET finds no such post")
    assert Result("post_catalog", lost_writes=2).failure() == "post_catalog did not recover"


def test_a_request_in_flight_at_the_kill_counts_and_dies_with_a_killed_ingress():
    # sent 0.2 s before the injection at 1.0, failed 0.5 s later: the kill hit it
    samples = [sample(0.8, status=500, ms=500.0, error="actor died"), sample(0.1, status=500, ms=100.0), sample(1.5)]
    res = measure(Result("user_store"), samples, t0=1.0, end_during=2.0, end_after=3.0)
    assert (res.requests, res.errors_5xx) == (2, 1)  # the one that ended before the kill is not counted
    # the ingress was killed at 1.1 (finding its replica took a while): what was sent until then was in it
    samples.append(sample(1.05, status=500, ms=60.0))
    ingress = measure(Result("ingress_replica"), samples, t0=1.0, end_during=2.0, end_after=3.0,
                      died_in_flight_until=1.1)
    assert (ingress.requests, ingress.errors_5xx, ingress.down_errors) == (3, 0, 2)
    # ...but a request sent after the kill must still be answered
    late = measure(Result("ingress_replica"), [sample(1.2, status=500)], 1.0, 2.0, 3.0, died_in_flight_until=1.1)
    assert late.errors_5xx == 1
