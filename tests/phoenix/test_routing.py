"""Viewer affinity for the Ranker's replicas (rendezvous hashing with a load escape); no Ray."""

from __future__ import annotations

from collections import Counter

import pytest

from xserve.phoenix.serving.routing import ViewerAffinity, rendezvous_order

REPLICAS = ["a1b2", "c3d4", "e5f6"]


def test_a_viewer_always_gets_the_same_order_whatever_the_listing_order():
    for viewer in range(1, 50):
        first = rendezvous_order(viewer, REPLICAS)
        assert sorted(first) == sorted(REPLICAS)
        assert rendezvous_order(viewer, list(reversed(REPLICAS))) == first


def test_viewers_spread_evenly_over_replicas():
    firsts = Counter(rendezvous_order(v, REPLICAS)[0] for v in range(1, 3001))
    assert set(firsts) == set(REPLICAS)
    assert all(800 < n < 1200 for n in firsts.values()), firsts  # 1000 each, give or take the hash


def test_a_new_replica_takes_viewers_only_for_itself_and_a_lost_one_moves_only_its_own():
    before = {v: rendezvous_order(v, REPLICAS)[0] for v in range(1, 2001)}
    grown = {v: rendezvous_order(v, REPLICAS + ["g7h8"])[0] for v in range(1, 2001)}
    moved = [v for v in before if before[v] != grown[v]]
    assert all(grown[v] == "g7h8" for v in moved) and 350 < len(moved) < 650  # ~1/4 move, all to the new one
    shrunk = {v: rendezvous_order(v, REPLICAS[1:])[0] for v in range(1, 2001)}
    assert all(shrunk[v] == before[v] for v in before if before[v] != REPLICAS[0])


def test_balanced_load_keeps_the_viewers_replica_and_offers_every_other_after_it():
    policy = ViewerAffinity(max_imbalance=4)
    for viewer in range(1, 30):
        loads = dict.fromkeys(REPLICAS, 3)
        loads[rendezvous_order(viewer, REPLICAS)[0]] = 7  # 4 above the least loaded: still within the bound
        assert policy.choose(viewer, loads) == rendezvous_order(viewer, REPLICAS)


def test_an_overloaded_replica_spills_to_the_viewers_next_choice_within_the_bound():
    policy = ViewerAffinity(max_imbalance=4)
    viewer = 7
    first, second, third = rendezvous_order(viewer, REPLICAS)
    assert policy.choose(viewer, {first: 8, second: 3, third: 3}) == [second, first, third]
    # the second choice overloaded too: the third, the only one within the bound, goes first
    assert policy.choose(viewer, {first: 9, second: 9, third: 0}) == [third, first, second]
    # unknown loads count as idle (Serve probes a replica it has no fresh queue length for before sending)
    assert policy.choose(viewer, {first: 5, second: None, third: None}) == [second, first, third]
    assert policy.choose(viewer, {first: None, second: None, third: None}) == [first, second, third]


def test_zero_imbalance_is_least_loaded_first_and_bad_bounds_are_refused():
    policy = ViewerAffinity(max_imbalance=0)
    first, second, third = rendezvous_order(3, REPLICAS)
    assert policy.choose(3, {first: 1, second: 1, third: 0})[0] == third
    assert policy.choose(3, {}) == []
    with pytest.raises(ValueError, match="max_imbalance must be >= 0"):
        ViewerAffinity(-1)
