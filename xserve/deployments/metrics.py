"""Pipeline metrics exported through Ray's metrics agent (scraped at Ray's Prometheus endpoint).

Every component report of every request updates:

* ``xserve_component_latency_ms`` (histogram; tags stage, component),
* ``xserve_component_candidates_in`` / ``_out`` (counters; tags stage, component),
* ``xserve_component_degraded`` (counter; tags stage, component, status).

Ray exposes them, with Serve's own request metrics (``ray_serve_*``), on each
node's metrics export port (``ray start --metrics-export-port=8080``;
``curl localhost:8080/metrics``), names prefixed ``ray_``.
"""

from __future__ import annotations

from typing import Any

from ray.util import metrics

__all__ = ["RayMetricsSink"]

_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2500]


class RayMetricsSink:
    """A ``xserve.pipeline.MetricsSink`` writing Ray metrics (one instance per ingress replica)."""

    def __init__(self) -> None:
        keys = ("stage", "component")
        self._latency = metrics.Histogram(
            "xserve_component_latency_ms", "Pipeline component latency", boundaries=_BOUNDARIES, tag_keys=keys
        )
        self._in = metrics.Counter("xserve_component_candidates_in", "Candidates given to a component", tag_keys=keys)
        self._out = metrics.Counter("xserve_component_candidates_out", "Candidates a component kept or returned", tag_keys=keys)
        self._degraded = metrics.Counter(
            "xserve_component_degraded", "Components that failed, timed out or broke their contract", tag_keys=(*keys, "status")
        )

    def __repr__(self) -> str:
        return "RayMetricsSink()"

    def observe(self, report: Any) -> None:
        tags = {"stage": str(report.stage), "component": report.component}
        self._latency.observe(report.duration_ms, tags)
        if report.count_in:
            self._in.inc(report.count_in, tags)
        if report.count_out:
            self._out.inc(report.count_out, tags)
        if report.status.degraded:
            self._degraded.inc(1, {**tags, "status": str(report.status)})
