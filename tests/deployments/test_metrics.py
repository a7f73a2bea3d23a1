"""``PendingCounts``: the pipeline's candidate counters summed in process and handed to Ray once per flush."""

from __future__ import annotations

from xserve.deployments.metrics import PendingCounts


def test_counts_are_summed_per_key_and_handed_over_once_the_flush_interval_has_passed():
    now = [0.0]
    pending = PendingCounts(flush_s=1.0, clock=lambda: now[0])
    pending.add(("in", "filter", "AgeFilter"), 1600)
    pending.add(("in", "filter", "AgeFilter"), 1500)
    pending.add(("out", "filter", "AgeFilter"), 1400)
    now[0] = 0.5
    assert pending.due() == {}  # not yet: nothing is lost, it waits
    now[0] = 1.0
    assert pending.due() == {("in", "filter", "AgeFilter"): 3100, ("out", "filter", "AgeFilter"): 1400}
    pending.add(("in", "filter", "AgeFilter"), 7)
    assert pending.due() == {}  # handed over: the next interval starts now
    now[0] = 2.5
    assert pending.due() == {("in", "filter", "AgeFilter"): 7}
    assert pending.due() == {}
