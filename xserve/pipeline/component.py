"""What every pipeline component shares: a name, ``enable``, a timeout, a repr, and a guarded call.

A stage's provided ``run()`` goes through :meth:`Component._guarded`, which
times the call, applies the component's timeout (and the request deadline),
turns any exception into a report instead of raising, and checks the stage's
contract on the result. The framework never lets a component fail a request.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "Component",
    "ComponentReport",
    "ContractViolation",
    "MetricsSink",
    "NullMetricsSink",
    "Stage",
    "Status",
    "stray_cancellation",
]

Q = TypeVar("Q")
C = TypeVar("C")

log = logging.getLogger("xserve.pipeline")


class Stage(enum.StrEnum):
    """Where in ``CandidatePipeline.execute`` a component ran."""

    QUERY_HYDRATOR = "query_hydrator"
    SOURCE = "source"
    HYDRATOR = "hydrator"
    FILTER = "filter"
    SCORER = "scorer"
    SELECTOR = "selector"
    POST_SELECTION_HYDRATOR = "post_selection_hydrator"
    POST_SELECTION_FILTER = "post_selection_filter"
    SIDE_EFFECT = "side_effect"


class Status(enum.StrEnum):
    OK = "ok"
    ERROR = "error"  # raised; the component contributed nothing
    TIMEOUT = "timeout"  # ran past its timeout or the request deadline; contributed nothing
    LENGTH_MISMATCH = "length_mismatch"  # broke the same-length contract; its output was discarded
    DISABLED = "disabled"  # enable(query) was False; not called

    @property
    def degraded(self) -> bool:
        return self in (Status.ERROR, Status.TIMEOUT, Status.LENGTH_MISMATCH)


@dataclass(frozen=True, slots=True)
class ComponentReport:
    """Timing and counts of one component for one request (one line of the trace)."""

    stage: Stage
    component: str
    status: Status
    duration_ms: float
    count_in: int  # candidates given to the component (1 for a query hydrator)
    count_out: int  # candidates it returned / kept / values it produced
    error: str = ""  # "<ExceptionType>: <message>" when status is not ok


class MetricsSink(Protocol):
    """Receives every component report, e.g. to export latency histograms and counters."""

    def observe(self, report: ComponentReport) -> None: ...


class NullMetricsSink:
    """The default sink: drops reports (deployments plug in an exporter)."""

    def observe(self, report: ComponentReport) -> None:
        pass

    def __repr__(self) -> str:
        return "NullMetricsSink()"


class ContractViolation(Exception):
    """A component returned something its stage forbids (e.g. the wrong number of values)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class Component(Generic[Q]):
    """Base of every stage: ``name``, ``enable(query)``, ``timeout_s``, the two policy flags, a parameter repr.

    Subclasses store their parameters as public attributes (shown by ``repr``)
    and their service clients as ``_private`` ones (hidden).

    The policy flags say what a late or failing component does; the product's
    builder sets them on the stages that need them:

    * ``runs_past_deadline``: the request deadline never skips it; only its own
      ``timeout_s`` bounds it. For cheap CPU stages (a late feed is still
      ordered) and for stages that carry safety choices (a late feed is still
      checked). Filters and the selector do by default.
    * ``fail_closed``: when it fails (raises, times out, breaks its contract),
      the candidates it was given are not served: they are removed and listed
      under its name in ``PipelineResult.filtered``, instead of passing through
      unchecked. For a query hydrator that is every candidate of the request.
      The selector does by default (an unsorted pass-through is no feed).
    """

    timeout_s: float | None = None  # per-call limit; None = only the request deadline applies
    runs_past_deadline: bool = False  # True: the request deadline does not skip it (timeout_s still applies)
    fail_closed: bool = False  # True: when it fails, its candidates are removed rather than passed through

    @property
    def name(self) -> str:
        return type(self).__name__

    def enable(self, query: Q) -> bool:
        return True

    def __repr__(self) -> str:
        params = [
            f"{k}={v!r}"
            for k, v in vars(self).items()
            if not k.startswith("_") and not (k in _POLICY and v == getattr(type(self), k))
        ]
        return f"{self.name}({', '.join(params)})"

    async def _guarded(
        self,
        stage: Stage,
        query: Q,
        count_in: int,
        call: Callable[[], Any],
        check: Callable[[Any], int],
        deadline: float | None,
    ) -> tuple[Any, ComponentReport]:
        """Run ``call()`` (sync or async) under the timeouts; ``check(result)`` returns count_out.

        Returns ``(result, report)``; ``result`` is None unless the report is ok.
        ``deadline`` is an ``asyncio`` loop time after which the call is not started
        (ignored when ``runs_past_deadline``).
        """
        if self.runs_past_deadline:
            deadline = None
        start = time.perf_counter()
        result: Any = None
        timeout: float | None = None
        status, error, count_out = Status.OK, "", 0
        try:
            if not self.enable(query):
                return None, ComponentReport(stage, self.name, Status.DISABLED, 0.0, count_in, 0)
            timeout = _effective_timeout(self.timeout_s, deadline)
            if timeout is not None and timeout <= 0:
                raise TimeoutError("request deadline exceeded before start")
            result = call()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, timeout)
            count_out = check(result)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            status, error = Status.TIMEOUT, f"TimeoutError: {str(exc) or f'no result within {timeout:.3g} s'}"
        except asyncio.CancelledError:
            if not stray_cancellation():
                raise  # the request itself is cancelled (its client went away): it ends here
            status, error = Status.ERROR, "CancelledError: the call was cancelled under the request, not by it"
            log.warning("%s: %s", self.name, error)
        except ContractViolation as exc:
            status, error = exc.status, str(exc)
        except Exception as exc:  # noqa: BLE001 - a component failure degrades, never fails the request
            status, error = Status.ERROR, f"{type(exc).__name__}: {exc}"
        if status is not Status.OK:
            result, count_out = None, 0
        duration_ms = (time.perf_counter() - start) * 1000.0
        return result, ComponentReport(stage, self.name, status, duration_ms, count_in, count_out, error)


_POLICY = ("timeout_s", "runs_past_deadline", "fail_closed")  # shown by repr only where they differ from the class


def stray_cancellation() -> bool:
    """Whether a ``CancelledError`` being handled now is stray: the running task is not being cancelled, so
    the error came from something it awaited, not from anyone cancelling it.

    A shared wait can hand one over (the request's post cache did: a hydrator past its timeout cancelled
    the fetch others waited on, ``docs/cluster.md``), and so does a Ray Serve handle whose routing was
    cancelled without the caller cancelling the response. Let through, it ends the whole request as if
    its client had gone away, and Serve's proxy answers that with a plain-text 500 and logs nothing. A
    stage treats it as a failed call instead (the feed degrades), the ingress as a 503 to retry.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def _effective_timeout(timeout_s: float | None, deadline: float | None) -> float | None:
    if deadline is None:
        return timeout_s
    remaining = deadline - asyncio.get_running_loop().time()
    return remaining if timeout_s is None else min(timeout_s, remaining)
