"""The autoscaling check's pure parts: the load ramp, and what a trace of replica and node counts says.

No Ray here: ``scripts/autoscale_check.py`` samples Serve's replica counts and the cluster's
nodes into a ``ScaleTrace`` while a ``Ramp`` sets how many clients send feeds; the trace
then gives the figures the check prints (``cluster.autoscale.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Ramp", "ScaleTrace", "Snapshot"]


@dataclass(frozen=True)
class Ramp:
    """Clients over time: ``start`` clients, ``step`` more every ``step_s`` seconds up to ``peak``, then
    ``peak`` until the ramp is ended (by the caller: once scaled out, or at its time limit)."""

    start: int
    step: int
    step_s: float
    peak: int

    def __post_init__(self) -> None:
        if not (1 <= self.start <= self.peak and self.step >= 1 and self.step_s > 0):
            raise ValueError(f"a ramp needs 1 <= start <= peak, step >= 1 and step_s > 0, got {self}")

    def clients_at(self, elapsed_s: float) -> int:
        """How many clients run ``elapsed_s`` seconds into the ramp."""
        return min(self.peak, self.start + self.step * int(max(elapsed_s, 0.0) // self.step_s))


@dataclass(frozen=True)
class Snapshot:
    t: float  # seconds since the trace started
    replicas: Mapping[str, int]  # deployment -> RUNNING replicas
    workers: int  # alive worker nodes (the head not counted)


@dataclass
class ScaleTrace:
    """Samples of running replicas per deployment and alive worker nodes, in time order.

    ``minimum`` is each watched deployment's ``min_replicas``; ``ramp_end`` (seconds, on the trace's
    clock) is set when the load stops.
    """

    minimum: Mapping[str, int]
    snapshots: list[Snapshot] = field(default_factory=list)
    ramp_end: float | None = None

    def add(self, t: float, replicas: Mapping[str, int], workers: int) -> None:
        if self.snapshots and t < self.snapshots[-1].t:
            raise ValueError(f"samples go forward in time: {t} after {self.snapshots[-1].t}")
        self.snapshots.append(Snapshot(t, dict(replicas), workers))

    def max_replicas(self, deployment: str) -> int:
        return max((s.replicas.get(deployment, 0) for s in self.snapshots), default=0)

    def scaled_out(self, deployment: str, at_least: int = 2) -> bool:
        return self.max_replicas(deployment) >= at_least

    @property
    def initial_workers(self) -> int:
        return self.snapshots[0].workers if self.snapshots else 0

    @property
    def nodes_added(self) -> int:
        """Worker nodes the autoscaler added: the most alive at once, less those alive at the start."""
        return max((s.workers for s in self.snapshots), default=0) - self.initial_workers

    def _after_ramp(self) -> list[Snapshot]:
        if self.ramp_end is None:
            return []
        return [s for s in self.snapshots if s.t >= self.ramp_end]

    def at_minimum(self, s: Snapshot) -> bool:
        return all(s.replicas.get(d, 0) <= n for d, n in self.minimum.items())

    def scale_in_s(self) -> float | None:
        """Seconds from the ramp's end until every watched deployment was back at its minimum and stayed
        there to the last sample; None if not (yet)."""
        return self._settled_since(self.at_minimum)

    def nodes_removed_s(self) -> float | None:
        """Seconds from the ramp's end until the worker nodes were back to their count at the start and
        stayed so; None if not (yet), or if none was added."""
        if self.nodes_added <= 0:
            return None
        return self._settled_since(lambda s: s.workers <= self.initial_workers)

    def _settled_since(self, holds) -> float | None:
        after = self._after_ramp()
        if not after or not holds(after[-1]):
            return None
        first = len(after) - 1
        while first > 0 and holds(after[first - 1]):
            first -= 1
        assert self.ramp_end is not None
        return round(after[first].t - self.ramp_end, 2)
