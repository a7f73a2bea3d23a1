"""AdmissionController and classify, without Ray: limits per pool, instant refusals, counters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xserve.deployments.admission import AdmissionController, RequestClass, classify

FEED, WRITE, ADMIN, OPEN = RequestClass.FEED, RequestClass.WRITE, RequestClass.ADMIN, RequestClass.OPEN


def controller(feeds: int = 2, writes: int = 3, retry_after_s: float = 1.0) -> AdmissionController:
    return AdmissionController({FEED: feeds, WRITE: writes}, retry_after_s)


@pytest.mark.parametrize(
    ("method", "path", "cls"),
    [
        ("POST", "/v1/feed/for_you", FEED),
        ("GET", "/v1/feed/for_you", OPEN),  # no such route: 405, and never counted
        ("POST", "/v1/posts", WRITE),
        ("DELETE", "/v1/posts/5", WRITE),
        ("PUT", "/v1/users/1/follows/2", WRITE),
        ("PATCH", "/anything", WRITE),
        ("GET", "/v1/admin/stats", ADMIN),
        ("POST", "/v1/admin", ADMIN),
        ("GET", "/healthz", OPEN),
        ("GET", "/openapi.json", OPEN),
        ("HEAD", "/healthz", OPEN),
    ],
)
def test_classify(method, path, cls):
    assert classify(method, path) is cls


def test_beyond_the_limit_is_refused_at_once_with_retry_after():
    c = controller(feeds=2, retry_after_s=0.2)
    assert c.try_acquire(FEED) is None and c.try_acquire(FEED) is None
    refusal = c.try_acquire(FEED)
    assert refusal is not None and refusal.status == 503
    assert refusal.retry_after == 1  # whole seconds, rounded up
    assert "max_inflight_feeds" in refusal.reason and "\n" not in refusal.reason
    # the feed pool being full does not refuse writes
    assert c.try_acquire(WRITE) is None
    c.release(FEED)
    assert c.try_acquire(FEED) is None
    s = c.stats()
    assert s["feed"] == {"limit": 2, "inflight": 2, "peak": 2, "admitted": 3, "refused": 1}
    assert s["write"]["inflight"] == 1


def test_admin_counts_with_writes_and_open_is_never_counted():
    c = controller(writes=1)
    assert c.try_acquire(ADMIN) is None
    assert c.try_acquire(WRITE) is not None
    for _ in range(100):
        assert c.try_acquire(OPEN) is None
    c.release(OPEN)
    c.release(ADMIN)
    assert c.try_acquire(WRITE) is None
    assert set(c.stats()) == {"feed", "write"}


def test_bad_limits_and_unbalanced_release_are_errors():
    with pytest.raises(ValueError, match="feed"):
        AdmissionController({FEED: 0}, 1.0)
    with pytest.raises(ValueError, match="retry_after_s"):
        AdmissionController({FEED: 1}, float("nan"))
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        controller().release(FEED)
    assert "feed=2" in repr(controller())


@given(st.lists(st.tuples(st.sampled_from([FEED, WRITE, ADMIN]), st.booleans()), max_size=200), st.integers(1, 5))
def test_in_flight_never_exceeds_the_limit(ops, limit):
    """Any interleaving of acquires and releases: in flight <= limit, and every attempt is admitted or refused."""
    c = AdmissionController({FEED: limit, WRITE: limit}, 0.0)
    held: list[RequestClass] = []
    attempts = 0
    for cls, acquire in ops:
        if acquire or not held:
            attempts += 1
            if c.try_acquire(cls) is None:
                held.append(cls)
        else:
            c.release(held.pop(0))
        for pool, s in c.stats().items():
            assert 0 <= s["inflight"] <= s["limit"]
            assert s["inflight"] == sum(1 for h in held if (WRITE if h is ADMIN else h) == pool)
    stats = c.stats().values()
    assert sum(s["admitted"] + s["refused"] for s in stats) == attempts
