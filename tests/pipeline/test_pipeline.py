"""CandidatePipeline.execute with toy stages: order, concurrency, degradation, side effects."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.pipeline.toys import (
    AsyncDropAbove,
    Broken,
    BrokenSelector,
    ByScore,
    CancelledUnder,
    Disabled,
    DropOdd,
    Ids,
    Inventing,
    Item,
    Query,
    Record,
    ScoreBy,
    SetFlag,
    Tag,
)
from xserve.pipeline import CandidatePipeline, ComponentReport, Stage, Status


def run(pipeline: CandidatePipeline, query: Query | None = None):
    return asyncio.run(pipeline.execute(query or Query()))


def statuses(result) -> dict[str, Status]:
    return {r.component: r.status for r in result.reports}


def ids(items: list[Item]) -> list[int]:
    return [c.id for c in items]


def test_sources_concatenate_in_list_order_not_finish_order():
    p = CandidatePipeline(sources=[Ids([1, 2], delay=0.05, name="slow"), Ids([3], name="fast")])
    assert ids(run(p).selected) == [1, 2, 3]


def test_parallel_stages_overlap_in_time():
    p = CandidatePipeline(
        query_hydrators=[SetFlag("a", 1, delay=0.2), SetFlag("b", 2, delay=0.2)],
        sources=[Ids([1], delay=0.2, name="s1"), Ids([2], delay=0.2, name="s2")],
        hydrators=[Tag("x", delay=0.2), Tag("y", delay=0.2)],
    )
    start = time.perf_counter()
    result = run(p)
    elapsed = time.perf_counter() - start
    # three stages of two 0.2 s components each: 0.6 s if each stage overlaps, 1.2 s if not
    assert elapsed < 1.0, elapsed
    by_stage = {r.stage: r.duration_ms for r in result.reports}
    assert set(by_stage) == {Stage.QUERY_HYDRATOR, Stage.SOURCE, Stage.HYDRATOR}
    assert result.query.flags == {"a": 1, "b": 2}
    assert [c.tags for c in result.selected] == [{"x": 10, "y": 10}, {"x": 20, "y": 20}]


def test_two_sleeping_sources_finish_together():
    p = CandidatePipeline(sources=[Ids([1], delay=0.2, name="s1"), Ids([2], delay=0.2, name="s2")])
    start = time.perf_counter()
    run(p)
    assert time.perf_counter() - start < 0.35


def test_raising_source_is_skipped_and_reported():
    p = CandidatePipeline(sources=[Ids([1], fail=True, name="bad"), Ids([2], name="good")])
    result = run(p)
    assert ids(result.selected) == [2]
    assert statuses(result) == {"bad": Status.ERROR, "good": Status.OK}
    assert result.degraded == ["bad"]
    bad = result.reports[0]
    assert bad.error == "RuntimeError: source down" and bad.count_out == 0


def test_failing_query_hydrator_is_skipped_others_merge_in_list_order():
    p = CandidatePipeline(
        query_hydrators=[SetFlag("k", "first", delay=0.02), SetFlag("k", "second"), SetFlag("z", 1, fail=True)],
        sources=[Ids([1])],
    )
    result = run(p)
    assert result.query.flags == {"k": "second"}  # applied in list order although "second" finished first
    assert result.degraded == ["SetFlag"]


def test_wrong_length_hydrator_is_skipped_and_touches_nothing():
    p = CandidatePipeline(sources=[Ids([1, 2, 3])], hydrators=[Tag("ok"), Tag("short", drop=True)])
    result = run(p)
    assert [c.tags for c in result.selected] == [{"ok": 10}, {"ok": 20}, {"ok": 30}]
    short = result.reports[-1]
    assert (short.status, short.count_in, short.count_out) == (Status.LENGTH_MISMATCH, 3, 0)
    assert "returned 2 values for 3 candidates" in short.error
    assert result.degraded == ["Tag"]


def test_raising_filter_keeps_its_input_and_later_filters_still_run():
    p = CandidatePipeline(sources=[Ids([1, 2, 3, 4])], filters=[Broken(), DropOdd(), AsyncDropAbove(2)])
    result = run(p)
    assert ids(result.selected) == [2]
    assert result.reports[1].status is Status.ERROR and result.reports[1].error == "ValueError: bad filter"
    assert {k: ids(v) for k, v in result.filtered.items()} == {"DropOdd": [1, 3], "AsyncDropAbove": [4]}
    assert result.degraded == ["Broken"]


def test_filter_that_invents_candidates_breaks_its_contract_and_is_undone():
    result = run(CandidatePipeline(sources=[Ids([1, 2])], filters=[Inventing()]))
    assert ids(result.selected) == [1, 2]
    assert result.reports[-1].status is Status.LENGTH_MISMATCH


def test_scorers_run_in_order_and_a_raising_scorer_is_skipped():
    p = CandidatePipeline(
        sources=[Ids([1, 2, 3])],
        scorers=[
            ScoreBy(lambda c: float(c.id)),
            ScoreBy(lambda c: 0.0, fail=True),
            ScoreBy(lambda c: -c.score),  # sees the first scorer's field
        ],
        selector=ByScore(),
    )
    result = run(p)
    assert [c.score for c in result.selected] == [-1.0, -2.0, -3.0]
    assert result.degraded == ["ScoreBy"]


def test_timing_out_component_is_reported_and_contributes_nothing():
    slow = ScoreBy(lambda c: 1.0, delay=1.0)
    slow.timeout_s = 0.05
    start = time.perf_counter()
    result = run(CandidatePipeline(sources=[Ids([1])], scorers=[slow]))
    assert time.perf_counter() - start < 0.5
    assert result.selected[0].score is None
    report = result.reports[-1]
    assert report.status is Status.TIMEOUT and report.error == "TimeoutError: no result within 0.05 s"
    assert result.degraded == ["ScoreBy"]


def test_a_call_cancelled_under_a_stage_degrades_it_and_the_request_goes_on():
    # a CancelledError handed over by something the stage awaited (a shared fetch another stage abandoned):
    # let through, it ended the feed as if its client had gone, and the proxy answered a plain-text 500
    result = run(CandidatePipeline(sources=[Ids([1, 2])], scorers=[CancelledUnder()], selector=ByScore()))
    assert ids(result.selected) == [1, 2]
    assert statuses(result)["CancelledUnder"] is Status.ERROR and result.degraded == ["CancelledUnder"]
    assert result.reports[-2].error.startswith("CancelledError: the call was cancelled under the request")


def test_cancelling_the_request_itself_still_ends_it():
    async def cancelled_while_scoring() -> None:
        slow = ScoreBy(lambda c: 1.0, delay=5.0)
        task = asyncio.ensure_future(CandidatePipeline(sources=[Ids([1])], scorers=[slow]).execute(Query()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(cancelled_while_scoring())


def test_request_deadline_skips_late_io_stages_but_still_runs_filters():
    p = CandidatePipeline(
        sources=[Ids([1, 2, 3, 4], delay=0.1)],
        hydrators=[Tag("x")],
        filters=[DropOdd()],
        request_timeout_s=0.05,
    )
    result = run(p)
    # the source ran past the deadline, so there is nothing; every stage is still reported
    assert result.selected == [] and statuses(result) == {
        "Ids": Status.TIMEOUT, "Tag": Status.TIMEOUT, "DropOdd": Status.OK,
    }


def test_disabled_components_are_not_called_and_reported():
    p = CandidatePipeline(sources=[Disabled([9]), Ids([1])])
    result = run(p)
    assert ids(result.selected) == [1]
    assert statuses(result)["Disabled"] is Status.DISABLED and result.degraded == []


def test_selector_orders_nan_and_none_last_then_post_selection_then_truncate():
    scores = {1: 0.5, 2: math.nan, 3: None, 4: 2.0, 5: 0.5, 6: 1.0}
    p = CandidatePipeline(
        sources=[Ids(list(scores))],
        scorers=[ScoreBy(lambda c: scores[c.id])],
        selector=ByScore(size=5),
        post_selection_hydrators=[Tag("post")],
        post_selection_filters=[DropOdd()],
        result_size=2,
    )
    result = run(p)
    # ranked: 4, 6, 1, 5, (2, 3 last in input order) -> top 5 = 4, 6, 1, 5, 2 -> even: 4, 6
    assert ids(result.selected) == [4, 6]
    assert all(c.tags == {"post": c.id * 10} for c in result.selected)
    assert ids(result.filtered["DropOdd"]) == [1, 5]
    assert [r.stage for r in result.reports][-2:] == [Stage.POST_SELECTION_HYDRATOR, Stage.POST_SELECTION_FILTER]


def test_result_size_may_depend_on_the_query():
    p = CandidatePipeline(sources=[Ids([1, 2, 3])], result_size=lambda q: q.flags.get("limit"))
    assert ids(run(p, Query(flags={"limit": 1})).selected) == [1]
    assert ids(run(p).selected) == [1, 2, 3]


def test_side_effects_do_not_delay_the_result_and_failures_never_raise():
    slow, failing = Record(delay=1.0), Record(fail=True)
    observed: list[ComponentReport] = []

    class Sink:
        def observe(self, report: ComponentReport) -> None:
            observed.append(report)

    p = CandidatePipeline(sources=[Ids([1, 2])], side_effects=[slow, failing], metrics=Sink())

    async def scenario():
        start = time.perf_counter()
        result = await p.execute(Query())
        returned_after = time.perf_counter() - start
        assert slow._seen == []  # not done yet when the result is back
        await p.drain()
        return result, returned_after

    result, returned_after = asyncio.run(scenario())
    assert returned_after < 0.3
    assert slow._seen == [[1, 2]]
    assert "SideEffect" not in {r.stage for r in result.reports}
    side = [r for r in observed if r.stage is Stage.SIDE_EFFECT]
    assert sorted(r.status for r in side) == [Status.ERROR, Status.OK]


def test_side_effects_beyond_the_pending_bound_are_skipped_and_reported():
    observed: list[ComponentReport] = []

    class Sink:
        def observe(self, report: ComponentReport) -> None:
            observed.append(report)

    slow = Record(delay=0.2)
    p = CandidatePipeline(sources=[Ids([1])], side_effects=[slow], metrics=Sink(), max_pending_side_effects=2)

    async def scenario():
        for _ in range(5):
            await p.execute(Query())
        assert len(p._tasks) == 2  # bounded while the first two still run
        await p.drain()
        await p.execute(Query())  # room again once they finished
        await p.drain()

    asyncio.run(scenario())
    side = [r for r in observed if r.stage is Stage.SIDE_EFFECT]
    assert len(slow._seen) == 3
    skipped = [r for r in side if r.status is Status.ERROR]
    assert len(skipped) == 3 and all("max_pending_side_effects" in r.error for r in skipped)


def test_every_component_is_reported_to_the_metrics_sink_in_order():
    observed: list[str] = []

    class Sink:
        def observe(self, report: ComponentReport) -> None:
            observed.append(report.component)

    result = run(CandidatePipeline(sources=[Ids([1])], filters=[DropOdd()], selector=ByScore(), metrics=Sink()))
    assert observed == ["Ids", "DropOdd", "ByScore"] == [r.component for r in result.reports]


def test_repr_shows_parameters_and_hides_private_state():
    f = AsyncDropAbove(7)
    assert repr(f) == "AsyncDropAbove(limit=7)"
    f.timeout_s = 0.1
    assert repr(f) == "AsyncDropAbove(limit=7, timeout_s=0.1)"
    assert repr(ScoreBy(abs)) == "ScoreBy(fail=False, delay=0.0)"


def test_a_broken_metrics_sink_does_not_fail_the_request():
    class Broken:
        def observe(self, report: ComponentReport) -> None:
            raise RuntimeError("exporter down")

    assert ids(run(CandidatePipeline(sources=[Ids([1])], metrics=Broken())).selected) == [1]


@given(st.lists(st.none() | st.floats(allow_infinity=True, allow_nan=True), max_size=20), st.none() | st.integers(0, 25))
def test_top_k_selector_matches_a_reference_sort(scores, size):
    items = [Item(i, score=s) for i, s in enumerate(scores)]
    got = ids(ByScore(size).select(Query(), items))
    numbers = sorted((i for i, s in enumerate(scores) if s is not None and not math.isnan(s)), key=lambda i: -scores[i])
    rest = [i for i, s in enumerate(scores) if s is None or math.isnan(s)]
    expected = numbers + rest  # Python's sort is stable: ties keep input order
    assert got == (expected if size is None else expected[:size])


# --------------------------------------------------------------------------- late requests, fail-closed stages


def test_stages_marked_to_run_past_the_deadline_still_run_and_the_others_are_skipped():
    late_tag, skipped_tag = Tag("late"), Tag("skipped")
    late_tag.runs_past_deadline = True
    slow = ScoreBy(lambda c: 100.0, delay=1.0)  # the ranker: runs into the deadline
    fallback = ScoreBy(lambda c: c.score if c.score is not None else -c.id)
    fallback.runs_past_deadline = True
    p = CandidatePipeline(
        sources=[Ids([3, 1, 2])],
        scorers=[slow, fallback],
        selector=ByScore(),
        post_selection_hydrators=[late_tag, skipped_tag],
        request_timeout_s=0.05,
    )
    result = run(p)
    assert ids(result.selected) == [1, 2, 3]  # ordered by the fallback scorer, not the source order
    assert all(c.tags == {"late": c.id * 10} for c in result.selected)
    reports = [(r.component, r.status) for r in result.reports]
    assert reports == [
        ("Ids", Status.OK), ("ScoreBy", Status.TIMEOUT), ("ScoreBy", Status.OK), ("ByScore", Status.OK),
        ("Tag", Status.OK), ("Tag", Status.TIMEOUT),
    ]


def test_a_fail_closed_filter_that_fails_removes_its_input():
    closed = Broken()
    closed.fail_closed = True
    result = run(CandidatePipeline(sources=[Ids([1, 2])], filters=[Broken(), closed]))
    assert result.selected == [] and ids(result.filtered["Broken"]) == [1, 2]
    assert result.degraded == ["Broken", "Broken"]  # the first kept its input, the second removed it


def test_a_fail_closed_hydrator_that_fails_or_times_out_removes_every_candidate():
    for hydrator in (Tag("x", fail=True), Tag("x", drop=True), Tag("x", delay=1.0)):
        hydrator.fail_closed = True
        hydrator.timeout_s = 0.05
        p = CandidatePipeline(sources=[Ids([1, 2])], post_selection_hydrators=[Tag("ok"), hydrator])
        result = run(p)
        assert result.selected == [] and ids(result.filtered["Tag"]) == [1, 2], hydrator
        assert result.degraded == ["Tag"]


def test_a_fail_closed_query_hydrator_that_fails_serves_nothing():
    needed = SetFlag("blocks", (), fail=True)
    needed.fail_closed = True
    result = run(CandidatePipeline(query_hydrators=[needed], sources=[Ids([1, 2])]))
    assert result.selected == [] and ids(result.filtered["SetFlag"]) == [1, 2]


def test_a_failing_selector_selects_nothing_instead_of_passing_its_input_through():
    result = run(CandidatePipeline(sources=[Ids([2, 1])], selector=BrokenSelector()))
    assert result.selected == [] and ids(result.filtered["BrokenSelector"]) == [2, 1]
    assert result.degraded == ["BrokenSelector"]


def test_repr_shows_the_deadline_and_failure_policy_where_it_differs_from_the_stage_default():
    tag = Tag("x")
    tag.fail_closed = tag.runs_past_deadline = True
    assert repr(tag) == "Tag(key='x', delay=0.0, drop=False, fail=False, fail_closed=True, runs_past_deadline=True)"
    flt, selector = DropOdd(), ByScore()
    flt.runs_past_deadline = selector.fail_closed = True  # the defaults of filters and selectors
    assert (repr(flt), repr(selector)) == ("DropOdd()", "ByScore(size=None)")
