"""The stage ABCs: each has one method to implement and a provided ``run()`` that enforces its contract.

=====================  ==============================================  ==========================================
stage                  implement                                       contract enforced by ``run()``
=====================  ==============================================  ==========================================
``QueryHydrator``      ``async hydrate(query) -> T``, ``update``       failure => no update
``Source``             ``async get_candidates(query) -> list[C]``      failure => no candidates
``Hydrator``           ``async hydrate(query, cands) -> list[T]``      one value per candidate, same order
``Filter``             ``filter(query, cands) -> FilterResult``        kept + removed partition the input;
                       (sync or async)                                 failure => input kept unchanged
                                                                       (``fail_closed``: input removed)
``Scorer``             ``async score(query, cands) -> list[T]``        one value per candidate, same order
``Selector``           ``select(query, cands) -> list[C]``             failure => nothing selected
                                                                       (unless ``fail_closed`` is False)
``SideEffect``         ``async run(query, selected)``                  scheduled after the result; never raises
=====================  ==============================================  ==========================================

Hydrators and scorers return *values*, not candidates; the pipeline applies
them with ``update(candidate, value)`` only after the whole stage succeeded,
so a failed or wrong-length component leaves every candidate untouched (and a
``fail_closed`` one has the pipeline remove them all).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from xserve.pipeline.component import Component, ComponentReport, ContractViolation, Stage, Status

__all__ = [
    "FilterResult",
    "Filter",
    "Hydrator",
    "QueryHydrator",
    "Scorer",
    "Selector",
    "SideEffect",
    "Source",
    "TopKSelector",
]

Q = TypeVar("Q")
C = TypeVar("C")
T = TypeVar("T")


class QueryHydrator(Component[Q], ABC, Generic[Q, T]):
    """Fetches part of the query (e.g. the user's features); all run concurrently."""

    @abstractmethod
    async def hydrate(self, query: Q) -> T:
        """Return the value this hydrator owns; must not modify ``query``."""

    @abstractmethod
    def update(self, query: Q, value: T) -> None:
        """Copy ``value`` into the fields of ``query`` this hydrator owns (and no others)."""

    async def run(self, query: Q, deadline: float | None = None) -> tuple[T | None, ComponentReport]:
        return await self._guarded(Stage.QUERY_HYDRATOR, query, 1, lambda: self.hydrate(query), lambda _: 1, deadline)


class Source(Component[Q], ABC, Generic[Q, C]):
    """Produces candidates; all sources run concurrently and are concatenated in list order."""

    @abstractmethod
    async def get_candidates(self, query: Q) -> list[C]: ...

    async def run(self, query: Q, deadline: float | None = None) -> tuple[list[C] | None, ComponentReport]:
        out: list[C] | None
        out, report = await self._guarded(
            Stage.SOURCE, query, 0, lambda: self.get_candidates(query), _count, deadline
        )
        return (list(out) if out is not None else None), report


class _PerCandidate(Component[Q], ABC, Generic[Q, C, T]):
    """Shared by hydrators and scorers: one value per candidate, applied with ``update``."""

    _stage = Stage.HYDRATOR

    @abstractmethod
    def _values(self, query: Q, candidates: Sequence[C]) -> Awaitable[Sequence[T]]: ...

    @abstractmethod
    def update(self, candidate: C, value: T) -> None:
        """Copy ``value`` into the fields of ``candidate`` this component owns (and no others)."""

    async def run(
        self, query: Q, candidates: Sequence[C], deadline: float | None = None, stage: Stage | None = None
    ) -> tuple[Sequence[T] | None, ComponentReport]:
        def check(values: Sequence[T]) -> int:
            if len(values) != len(candidates):
                raise ContractViolation(
                    Status.LENGTH_MISMATCH, f"returned {len(values)} values for {len(candidates)} candidates"
                )
            return len(values)

        return await self._guarded(
            stage or self._stage, query, len(candidates), lambda: self._values(query, candidates), check, deadline
        )

    def update_all(self, candidates: Sequence[C], values: Sequence[T]) -> None:
        for candidate, value in zip(candidates, values, strict=True):
            self.update(candidate, value)


class Hydrator(_PerCandidate[Q, C, T], ABC):
    """Adds fields to candidates; never drops one (that is a Filter's job). Runs concurrently."""

    @abstractmethod
    async def hydrate(self, query: Q, candidates: Sequence[C]) -> list[T]:
        """Return one value per candidate, in the same order."""

    def _values(self, query: Q, candidates: Sequence[C]) -> Awaitable[Sequence[T]]:
        return self.hydrate(query, candidates)


class Scorer(_PerCandidate[Q, C, T], ABC):
    """Like a Hydrator, but scorers run in order, so a later scorer sees earlier scorers' fields."""

    _stage = Stage.SCORER

    @abstractmethod
    async def score(self, query: Q, candidates: Sequence[C]) -> list[T]:
        """Return one value per candidate, in the same order."""

    def _values(self, query: Q, candidates: Sequence[C]) -> Awaitable[Sequence[T]]:
        return self.score(query, candidates)


@dataclass(slots=True)
class FilterResult(Generic[C]):
    kept: list[C]
    removed: list[C] = field(default_factory=list)


class Filter(Component[Q], ABC, Generic[Q, C]):
    """Partitions candidates into kept and removed; filters run in order on the survivors.

    ``filter`` may be a plain or an ``async`` method. The component timeout
    bounds async filters only, and by default the request deadline never skips
    a filter: filters are cheap and some of them (blocks, mutes, visibility)
    must run. A failing filter keeps its input, or removes it all when
    ``fail_closed`` (a filter that carries a safety choice).
    """

    runs_past_deadline = True

    @abstractmethod
    def filter(self, query: Q, candidates: list[C]) -> FilterResult[C] | Awaitable[FilterResult[C]]: ...

    async def run(
        self, query: Q, candidates: list[C], stage: Stage = Stage.FILTER, deadline: float | None = None
    ) -> tuple[FilterResult[C], ComponentReport]:
        def check(result: FilterResult[C]) -> int:
            if len(result.kept) + len(result.removed) != len(candidates):
                raise ContractViolation(
                    Status.LENGTH_MISMATCH,
                    f"kept {len(result.kept)} + removed {len(result.removed)} != {len(candidates)} given",
                )
            return len(result.kept)

        result, report = await self._guarded(
            stage, query, len(candidates), lambda: self.filter(query, list(candidates)), check, deadline
        )
        if result is not None:
            return result, report
        if report.status.degraded and self.fail_closed:
            return FilterResult([], list(candidates)), report
        return FilterResult(list(candidates)), report


class Selector(Component[Q], ABC, Generic[Q, C]):
    """Orders and cuts the scored candidates (synchronous).

    A failing selector selects nothing (``fail_closed``): its input is not in
    feed order. A disabled one passes its input through.
    """

    runs_past_deadline = True
    fail_closed = True

    @abstractmethod
    def select(self, query: Q, candidates: list[C]) -> list[C]: ...

    async def run(
        self, query: Q, candidates: list[C], deadline: float | None = None
    ) -> tuple[list[C], ComponentReport]:
        out, report = await self._guarded(
            Stage.SELECTOR, query, len(candidates), lambda: self.select(query, list(candidates)), _count, deadline
        )
        if out is not None:
            return list(out), report
        return ([] if report.status.degraded and self.fail_closed else list(candidates)), report


class TopKSelector(Selector[Q, C], ABC):
    """Stable descending sort by ``score(c)``, keeping the first ``size`` (None = all).

    A score that is None or NaN sorts after every number (ties keep input order).
    """

    size: int | None = None

    @abstractmethod
    def score(self, candidate: C) -> float | None: ...

    def select(self, query: Q, candidates: list[C]) -> list[C]:
        def key(c: C) -> tuple[int, float]:
            s = self.score(c)
            if s is None or math.isnan(s):
                return (1, 0.0)
            return (0, -s)

        ranked = sorted(candidates, key=key)
        return ranked if self.size is None else ranked[: self.size]


class SideEffect(Component[Q], ABC, Generic[Q, C]):
    """Work done after the feed is built (e.g. recording what was served); fire-and-forget.

    The pipeline schedules :meth:`launch` as a task after building the result
    and never awaits it; failures are logged and reported to the metrics sink.
    """

    @abstractmethod
    async def run(self, query: Q, selected: Sequence[C]) -> None: ...

    async def launch(self, query: Q, selected: Sequence[C], deadline: float | None = None) -> ComponentReport:
        _, report = await self._guarded(
            Stage.SIDE_EFFECT,
            query,
            len(selected),
            lambda: self.run(query, selected),
            lambda _: len(selected),
            deadline,
        )
        return report


def _count(values: Any) -> int:
    return len(values)
