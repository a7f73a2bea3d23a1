"""``CandidatePipeline``: the stages listed explicitly, and ``execute(query)`` running them in order.

Order (reference ``candidate_pipeline.rs``):

1. query hydrators, concurrently; successful values merged in list order;
2. sources, concurrently; candidates concatenated in source-list order;
3. hydrators, concurrently over the same candidates; values applied in list order;
4. filters, in order, each on the survivors of the previous;
5. scorers, in order;
6. selector (pass-through when absent or disabled);
7. post-selection hydrators (as 3) and 8. post-selection filters (as 4);
9. truncate to ``result_size``;
10. side effects, scheduled as tasks after the result is built, never awaited;
    at most ``max_pending_side_effects`` run at once, a further one is skipped
    (reported as an error to the metrics sink), so a slow store cannot pile up
    tasks without bound.

No component failure fails the request: a failed query hydrator, source,
hydrator or scorer contributes nothing, a failed filter keeps its input, and
each is named in ``PipelineResult.degraded``; but the candidates given to a
failed ``fail_closed`` component are removed (listed under its name in
``filtered``) instead, and a failed selector selects nothing. A fail-closed
query hydrator that fails removes every candidate of the request.
``request_timeout_s`` is a deadline for the I/O stages (query hydrators,
sources, hydrators, scorers): once it has passed they are reported ``timeout``
without being called, except those marked ``runs_past_deadline`` (cheap CPU
stages and safety checks), which only their own timeout bounds. Filters and
the selector run past the deadline by default, so a late request never skips
a filter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from xserve.pipeline.component import ComponentReport, MetricsSink, NullMetricsSink, Stage, Status
from xserve.pipeline.stages import Filter, Hydrator, QueryHydrator, Scorer, Selector, SideEffect, Source

__all__ = ["CandidatePipeline", "PipelineResult"]

Q = TypeVar("Q")
C = TypeVar("C")

log = logging.getLogger("xserve.pipeline")


@dataclass(slots=True)
class PipelineResult(Generic[Q, C]):
    query: Q  # after query hydration
    retrieved: list[C]  # every candidate the sources returned (hydrated in place)
    filtered: dict[str, list[C]]  # removed candidates per filter name, in filter order
    selected: list[C]  # the final, truncated result
    reports: list[ComponentReport]  # one per component, in execution order (side effects excluded)
    degraded: list[str]  # names of components that failed, timed out or broke their contract


@dataclass(frozen=True, kw_only=True)
class CandidatePipeline(Generic[Q, C]):
    """A product's pipeline: its components in execution order. No registry; build it in one function.

    ``query`` may carry a ``request_id`` attribute; it keys the log lines.
    ``result_size`` is an int, None (no truncation) or a function of the query.
    """

    query_hydrators: Sequence[QueryHydrator[Q, Any]] = ()
    sources: Sequence[Source[Q, C]] = ()
    hydrators: Sequence[Hydrator[Q, C, Any]] = ()
    filters: Sequence[Filter[Q, C]] = ()
    scorers: Sequence[Scorer[Q, C, Any]] = ()
    selector: Selector[Q, C] | None = None
    post_selection_hydrators: Sequence[Hydrator[Q, C, Any]] = ()
    post_selection_filters: Sequence[Filter[Q, C]] = ()
    side_effects: Sequence[SideEffect[Q, C]] = ()
    result_size: int | Callable[[Q], int | None] | None = None
    request_timeout_s: float | None = None
    metrics: MetricsSink = field(default_factory=NullMetricsSink)
    max_pending_side_effects: int | None = None  # side-effect tasks alive at once; None = unbounded
    _tasks: set[asyncio.Task[ComponentReport]] = field(default_factory=set, init=False, repr=False, compare=False)

    async def execute(self, query: Q) -> PipelineResult[Q, C]:
        loop = asyncio.get_running_loop()
        deadline = None if self.request_timeout_s is None else loop.time() + self.request_timeout_s
        run = _Run(self, str(getattr(query, "request_id", "-")))

        # 1. query hydrators
        outcomes = await asyncio.gather(*(h.run(query, deadline) for h in self.query_hydrators))
        closed_by = None  # a fail-closed query hydrator that failed: nothing of this request is served
        for hydrator, (value, report) in zip(self.query_hydrators, outcomes):
            if _failed(run.record(report, lambda h=hydrator, v=value: h.update(query, v))) and hydrator.fail_closed:
                closed_by = closed_by or hydrator

        # 2. sources: concatenated in list order, whichever finished first
        candidates: list[C] = []
        for found, report in await asyncio.gather(*(s.run(query, deadline) for s in self.sources)):
            if run.record(report).status is Status.OK:
                candidates.extend(found)
        retrieved = list(candidates)
        filtered: dict[str, list[C]] = {}
        if closed_by is not None:
            candidates = _close(closed_by, candidates, filtered)

        # 3. hydrators
        candidates = await self._hydrate(run, self.hydrators, Stage.HYDRATOR, query, candidates, deadline, filtered)

        # 4. filters
        candidates = await self._filter(run, self.filters, Stage.FILTER, query, candidates, filtered, deadline)

        # 5. scorers, in order
        for scorer in self.scorers:
            values, report = await scorer.run(query, candidates, deadline)
            if _failed(run.record(report, lambda s=scorer, v=values: s.update_all(candidates, v))) and scorer.fail_closed:
                candidates = _close(scorer, candidates, filtered)

        # 6. selector
        if self.selector is not None:
            selected, report = await self.selector.run(query, candidates, deadline)
            if _failed(run.record(report)) and self.selector.fail_closed:
                _close(self.selector, candidates, filtered)
            candidates = selected

        # 7, 8. post-selection hydrators and filters
        candidates = await self._hydrate(
            run, self.post_selection_hydrators, Stage.POST_SELECTION_HYDRATOR, query, candidates, deadline, filtered
        )
        candidates = await self._filter(
            run, self.post_selection_filters, Stage.POST_SELECTION_FILTER, query, candidates, filtered, deadline
        )

        # 9. truncate
        size = self.result_size(query) if callable(self.result_size) else self.result_size
        selected = candidates if size is None else candidates[:size]
        result = PipelineResult(query, retrieved, filtered, selected, run.reports, run.degraded)

        # 10. side effects: after the result exists, not awaited
        for effect in self.side_effects:
            if self.max_pending_side_effects is not None and len(self._tasks) >= self.max_pending_side_effects:
                self._shed(effect, len(selected), run.request_id)
                continue
            task = loop.create_task(self._side_effect(effect, query, tuple(selected), run.request_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return result

    async def drain(self) -> None:
        """Wait for every scheduled side effect (tests and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _hydrate(
        self,
        run: _Run,
        hydrators: Sequence[Hydrator[Q, C, Any]],
        stage: Stage,
        query: Q,
        candidates: list[C],
        deadline: float | None,
        filtered: dict[str, list[C]],
    ) -> list[C]:
        """Run ``hydrators`` at once and apply their values; returns the candidates still served."""
        outcomes = await asyncio.gather(*(h.run(query, candidates, deadline, stage) for h in hydrators))
        closed_by = None
        for hydrator, (values, report) in zip(hydrators, outcomes):
            if _failed(run.record(report, lambda h=hydrator, v=values: h.update_all(candidates, v))) and hydrator.fail_closed:
                closed_by = closed_by or hydrator
        return candidates if closed_by is None else _close(closed_by, candidates, filtered)

    async def _filter(
        self,
        run: _Run,
        filters: Sequence[Filter[Q, C]],
        stage: Stage,
        query: Q,
        candidates: list[C],
        filtered: dict[str, list[C]],
        deadline: float | None,
    ) -> list[C]:
        for flt in filters:
            result, report = await flt.run(query, candidates, stage, deadline)
            run.record(report)
            candidates = result.kept
            if result.removed:
                filtered.setdefault(flt.name, []).extend(result.removed)
        return candidates

    def _shed(self, effect: SideEffect[Q, C], count: int, request_id: str) -> None:
        error = f"skipped: {len(self._tasks)} side effects still running (max_pending_side_effects)"
        report = ComponentReport(Stage.SIDE_EFFECT, effect.name, Status.ERROR, 0.0, count, 0, error)
        _log(request_id, report)
        _observe(self.metrics, report)

    async def _side_effect(
        self, effect: SideEffect[Q, C], query: Q, selected: Sequence[C], request_id: str
    ) -> ComponentReport:
        report = await effect.launch(query, selected)
        _log(request_id, report)
        _observe(self.metrics, report)
        return report


class _Run:
    """Per-request bookkeeping: the reports, the degraded list, logging and metrics."""

    def __init__(self, pipeline: CandidatePipeline[Any, Any], request_id: str) -> None:
        self.metrics = pipeline.metrics
        self.request_id = request_id
        self.reports: list[ComponentReport] = []
        self.degraded: list[str] = []

    def record(self, report: ComponentReport, apply: Callable[[], None] | None = None) -> ComponentReport:
        """Keep ``report``; if it is ok, call ``apply`` (an update), downgrading it to error if that raises.

        Returns the report as kept."""
        if report.status is Status.OK and apply is not None:
            try:
                apply()
            except Exception as exc:  # noqa: BLE001 - a broken update degrades like a broken hydrate
                report = replace(report, status=Status.ERROR, count_out=0, error=f"update: {type(exc).__name__}: {exc}")
        self.reports.append(report)
        if report.status.degraded:
            self.degraded.append(report.component)
        _log(self.request_id, report)
        _observe(self.metrics, report)
        return report


def _failed(report: ComponentReport) -> bool:
    return report.status.degraded


def _close(component: Any, candidates: list[C], filtered: dict[str, list[C]]) -> list[C]:
    """A fail-closed ``component`` failed: none of ``candidates`` is served; returns what is left (nothing)."""
    if candidates:
        filtered.setdefault(component.name, []).extend(candidates)
    return []


def _observe(metrics: MetricsSink, report: ComponentReport) -> None:
    try:
        metrics.observe(report)
    except Exception:  # noqa: BLE001 - a broken metrics exporter must not fail the request
        log.exception("metrics sink %r failed on %s", metrics, report.component)


def _log(request_id: str, report: ComponentReport) -> None:
    level = logging.INFO if report.status.degraded else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "request_id=%s stage=%s component=%s status=%s in=%d out=%d ms=%.2f %s",
            request_id,
            report.stage,
            report.component,
            report.status,
            report.count_in,
            report.count_out,
            report.duration_ms,
            report.error,
        )
