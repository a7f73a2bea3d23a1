"""Toy stages over a dict query and an ``Item`` candidate, for the framework tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from xserve.pipeline import (
    Filter,
    FilterResult,
    Hydrator,
    QueryHydrator,
    Scorer,
    SideEffect,
    Source,
    TopKSelector,
)


@dataclass
class Item:
    id: int
    tags: dict[str, Any] = field(default_factory=dict)
    score: float | None = None


@dataclass
class Query:
    request_id: str = "r1"
    flags: dict[str, Any] = field(default_factory=dict)


class SetFlag(QueryHydrator[Query, Any]):
    def __init__(self, key: str, value: Any, delay: float = 0.0, fail: bool = False) -> None:
        self.key, self.value, self.delay, self.fail = key, value, delay, fail

    async def hydrate(self, query: Query) -> Any:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("user store down")
        return self.value

    def update(self, query: Query, value: Any) -> None:
        query.flags[self.key] = value


class Ids(Source[Query, Item]):
    def __init__(self, ids: list[int], delay: float = 0.0, fail: bool = False, name: str | None = None) -> None:
        self.ids, self.delay, self.fail = ids, delay, fail
        self._name = name

    @property
    def name(self) -> str:
        return self._name or super().name

    async def get_candidates(self, query: Query) -> list[Item]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("source down")
        return [Item(i) for i in self.ids]


class Tag(Hydrator[Query, Item, Any]):
    """Sets ``tags[key] = f(id)``; ``drop`` returns one value too few (a contract breach)."""

    def __init__(self, key: str, delay: float = 0.0, drop: bool = False, fail: bool = False) -> None:
        self.key, self.delay, self.drop, self.fail = key, delay, drop, fail

    async def hydrate(self, query: Query, candidates: list[Item]) -> list[Any]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("hydrator down")
        values = [c.id * 10 for c in candidates]
        return values[:-1] if self.drop else values

    def update(self, candidate: Item, value: Any) -> None:
        candidate.tags[self.key] = value


class DropOdd(Filter[Query, Item]):
    def filter(self, query: Query, candidates: list[Item]) -> FilterResult[Item]:
        return FilterResult([c for c in candidates if c.id % 2 == 0], [c for c in candidates if c.id % 2])


class AsyncDropAbove(Filter[Query, Item]):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def filter(self, query: Query, candidates: list[Item]) -> FilterResult[Item]:
        await asyncio.sleep(0)
        return FilterResult([c for c in candidates if c.id <= self.limit], [c for c in candidates if c.id > self.limit])


class Broken(Filter[Query, Item]):
    def filter(self, query: Query, candidates: list[Item]) -> FilterResult[Item]:
        raise ValueError("bad filter")


class Inventing(Filter[Query, Item]):
    def filter(self, query: Query, candidates: list[Item]) -> FilterResult[Item]:
        return FilterResult(candidates + [Item(999)], [])


class ScoreBy(Scorer[Query, Item, float]):
    """score = f(candidate), where f sees fields set by earlier scorers."""

    def __init__(self, fn: Any, fail: bool = False, delay: float = 0.0) -> None:
        self._fn, self.fail, self.delay = fn, fail, delay

    async def score(self, query: Query, candidates: list[Item]) -> list[float]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("ranker down")
        return [self._fn(c) for c in candidates]

    def update(self, candidate: Item, value: float) -> None:
        candidate.score = value


class ByScore(TopKSelector[Query, Item]):
    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def score(self, candidate: Item) -> float | None:
        return candidate.score


class BrokenSelector(ByScore):
    def score(self, candidate: Item) -> float | None:
        raise ValueError("bad selector")


class Record(SideEffect[Query, Item]):
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self._seen: list[list[int]] = []

    async def run(self, query: Query, selected: list[Item]) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("side effect down")
        self._seen.append([c.id for c in selected])


class Disabled(Ids):
    def enable(self, query: Query) -> bool:
        return False


class CancelledUnder(ScoreBy):
    """Awaits a future that something else cancels (a shared fetch another stage abandoned)."""

    def __init__(self) -> None:
        super().__init__(lambda c: 1.0)

    async def score(self, query: Query, candidates: list[Item]) -> list[float]:
        loop = asyncio.get_running_loop()
        routed: asyncio.Future[list[float]] = loop.create_future()
        loop.call_later(0.01, routed.cancel)
        return await routed
