"""LastKnownViewers: an LRU bounded by the bytes it holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xserve.users.last_known import LastKnownViewers


def test_least_recently_used_goes_first():
    lru = LastKnownViewers(max_bytes=10)
    lru.put(1, b"aaaa")
    lru.put(2, b"bbbb")
    assert lru.get(1) == b"aaaa"  # 1 is now the most recent
    lru.put(3, b"cccc")  # 12 bytes > 10: the least recent (2) goes
    assert lru.get(2) is None and lru.get(1) == b"aaaa" and lru.get(3) == b"cccc"
    assert lru.nbytes == 8 and len(lru) == 2


def test_a_new_answer_replaces_the_old_one_and_a_huge_one_is_not_kept():
    lru = LastKnownViewers(max_bytes=10)
    lru.put(1, b"aaaa")
    lru.put(1, b"xy")
    assert lru.get(1) == b"xy" and lru.nbytes == 2
    lru.put(1, b"z" * 11)  # larger than the budget: dropped, and the older answer with it (it is stale)
    assert lru.get(1) is None and lru.nbytes == 0
    assert LastKnownViewers(0).get(1) is None
    with pytest.raises(ValueError, match="max_bytes"):
        LastKnownViewers(-1)


@given(st.lists(st.tuples(st.integers(1, 20), st.binary(max_size=30)), max_size=60), st.integers(0, 100))
def test_never_over_budget_and_the_last_put_fitting_is_kept(puts, budget):
    lru = LastKnownViewers(budget)
    for user, blob in puts:
        lru.put(user, blob)
        assert lru.nbytes <= budget
        assert lru.nbytes == sum(len(lru.get(u) or b"") for u in {u for u, _ in puts})
        if len(blob) <= budget:
            assert lru.get(user) == blob
