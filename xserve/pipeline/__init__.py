"""A generic candidate-pipeline framework (standard library only).

Follows the reference ``candidate-pipeline/`` crate of xai-org/x-algorithm:
generic over a query type ``Q`` and a candidate type ``C``; stage ABCs with one
method to implement and a provided ``run()`` that times, counts, applies the
timeout and enforces the stage's contract; ``CandidatePipeline.execute`` runs
them in the reference order and never lets a component fail the request.
See ``stages.py`` for the contracts and ``pipeline.py`` for the order.
"""

from xserve.pipeline.component import (
    Component,
    ComponentReport,
    ContractViolation,
    MetricsSink,
    NullMetricsSink,
    Stage,
    Status,
    stray_cancellation,
)
from xserve.pipeline.pipeline import CandidatePipeline, PipelineResult
from xserve.pipeline.stages import (
    Filter,
    FilterResult,
    Hydrator,
    QueryHydrator,
    Scorer,
    Selector,
    SideEffect,
    Source,
    TopKSelector,
)

__all__ = [
    "CandidatePipeline",
    "Component",
    "ComponentReport",
    "ContractViolation",
    "Filter",
    "FilterResult",
    "Hydrator",
    "MetricsSink",
    "NullMetricsSink",
    "PipelineResult",
    "QueryHydrator",
    "Scorer",
    "Selector",
    "SideEffect",
    "Source",
    "Stage",
    "Status",
    "TopKSelector",
    "stray_cancellation",
]
