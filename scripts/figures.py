"""The one rule for a tail latency that the scripts and benchmarks print.

A 99th percentile over fewer than 1,000 samples is the sample's maximum in all but name, so a figure
over fewer is reported as the maximum and named so: ``tail("x.p99_ms", ms)`` gives ``("x.p99_ms", p99)``
over 1,000 samples or more and ``("x.max_ms", max)`` below. Every ``name value unit`` line that would say
``p99`` goes through ``tail`` or ``tail_name``, so no figure calls a maximum a p99.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_P99_SAMPLES", "percentile", "tail", "tail_name"]

MIN_P99_SAMPLES = 1_000  # fewer samples leave the 99th percentile within a sample or two of the maximum


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``; NaN when there are none."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def tail_name(name: str, samples: int) -> str:
    """``name`` with its ``p99`` read as ``max`` when ``samples`` cannot carry a p99."""
    return name if samples >= MIN_P99_SAMPLES else name.replace("p99", "max")


def tail(name: str, values: Sequence[float]) -> tuple[str, float]:
    """The figure's name and value: the p99 over 1,000 samples or more, the maximum below (NaN when empty)."""
    if len(values) >= MIN_P99_SAMPLES:
        return name, percentile(values, 99)
    return tail_name(name, len(values)), (float(max(values)) if len(values) else float("nan"))
