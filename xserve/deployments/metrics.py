"""Pipeline metrics exported through Ray's metrics agent (scraped at Ray's Prometheus endpoint).

Every component report of every request updates:

* ``xserve_component_latency_ms`` (histogram; tags stage, component),
* ``xserve_component_candidates_in`` / ``_out`` (counters; tags stage, component),
* ``xserve_component_degraded`` (counter; tags stage, component, status).

The two candidate counters are summed in process and recorded once per ``flush_s`` per component
(:class:`PendingCounts`): a feed's ~35 reports made ~100 Ray metric records, ~3 ms of the ingress's CPU a
feed (``docs/measurements.md``, "Feed latency and the local default"); a scrape sees them at most
``flush_s`` late, and a replica that dies loses at most that much of them.

Ray exposes them, with Serve's own request metrics (``ray_serve_*``), on each
node's metrics export port (``ray start --metrics-export-port=8080``;
``curl localhost:8080/metrics``), names prefixed ``ray_``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ray.util import metrics

__all__ = ["PendingCounts", "RayMetricsSink"]

_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2500]


class PendingCounts:
    """Counter increments summed per key between flushes; :meth:`due` hands them over once ``flush_s`` has
    passed since the last hand-over (checked when a count is added: no thread of its own)."""

    def __init__(self, flush_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.flush_s = flush_s
        self._clock = clock
        self._counts: dict[Any, int] = defaultdict(int)
        self._last = clock()

    def add(self, key: Any, n: int) -> None:
        self._counts[key] += n

    def due(self) -> dict[Any, int]:
        """The sums since the last hand-over when ``flush_s`` has passed (and clears them), else nothing."""
        now = self._clock()
        if now - self._last < self.flush_s or not self._counts:
            return {}
        self._last = now
        counts, self._counts = dict(self._counts), defaultdict(int)
        return counts


class RayMetricsSink:
    """A ``xserve.pipeline.MetricsSink`` writing Ray metrics (one instance per ingress replica)."""

    def __init__(self, flush_s: float = 1.0) -> None:
        keys = ("stage", "component")
        self._latency = metrics.Histogram(
            "xserve_component_latency_ms", "Pipeline component latency", boundaries=_BOUNDARIES, tag_keys=keys
        )
        self._in = metrics.Counter("xserve_component_candidates_in", "Candidates given to a component", tag_keys=keys)
        self._out = metrics.Counter("xserve_component_candidates_out", "Candidates a component kept or returned", tag_keys=keys)
        self._degraded = metrics.Counter(
            "xserve_component_degraded", "Components that failed, timed out or broke their contract", tag_keys=(*keys, "status")
        )
        self._pending = PendingCounts(flush_s)  # (counter, stage, component) -> candidates since the last flush

    def __repr__(self) -> str:
        return "RayMetricsSink()"

    def observe(self, report: Any) -> None:
        tags = {"stage": str(report.stage), "component": report.component}
        self._latency.observe(report.duration_ms, tags)
        if report.count_in:
            self._pending.add((self._in, tags["stage"], report.component), report.count_in)
        if report.count_out:
            self._pending.add((self._out, tags["stage"], report.component), report.count_out)
        if report.status.degraded:
            self._degraded.inc(1, {**tags, "status": str(report.status)})
        for (counter, stage, component), n in self._pending.due().items():
            counter.inc(n, {"stage": stage, "component": component})
