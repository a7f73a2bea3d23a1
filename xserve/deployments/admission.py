"""Admission control at the HTTP edge: a bounded number of requests in flight per class, the rest refused at once.

An overloaded server that queues every request answers all of them late; one
that admits a fixed number and refuses the rest immediately (503 with
``Retry-After``) keeps the admitted requests' latency near the unloaded latency
and tells clients when to come back. Requests are classed by route
(:func:`classify`): feed reads are slow (a whole pipeline) and writes are fast
(one durable append), so each class has its own limit and a flood of one does
not starve the other. Probes and documents (``GET /healthz``, ``/openapi.json``)
are not counted.

Pure Python, no I/O: the ingress (one asyncio event loop per replica) calls
:meth:`AdmissionController.try_acquire` before running a request and
:meth:`release` when its response is sent. Not thread-safe (one event loop).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["AdmissionController", "RequestClass", "Refusal", "classify"]

ADMIN_PREFIX = "/v1/admin/"
FEED_PREFIX = "/v1/feed/"


class RequestClass(enum.StrEnum):
    FEED = "feed"  # POST /v1/feed/...: the pipeline
    WRITE = "write"  # every other POST/PUT/PATCH/DELETE: one durable write
    ADMIN = "admin"  # anything under /v1/admin/: operator routes (counted with writes)
    OPEN = "open"  # GET/HEAD/OPTIONS outside /v1/admin/: probes and documents, never refused

    @property
    def needs_key(self) -> bool:
        """Whether a configured API key guards this class (feeds: only with ``serving.api_key_feeds``)."""
        return self in (RequestClass.WRITE, RequestClass.ADMIN)


_POOL = {RequestClass.ADMIN: RequestClass.WRITE}  # admin routes share the writes' limit unless given their own


def classify(method: str, path: str) -> RequestClass:
    """The class of a request from its method and path (the path after any route prefix)."""
    if path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/"):
        return RequestClass.ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return RequestClass.OPEN
    if method == "POST" and path.startswith(FEED_PREFIX):
        return RequestClass.FEED
    return RequestClass.WRITE


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted: the answer is ``status`` with ``Retry-After: retry_after`` (whole seconds)."""

    status: int
    reason: str
    retry_after: int


class AdmissionController:
    """Counts requests in flight per class against ``limits``; beyond a limit, refuses at once (no queue).

    ``limits`` maps a class to its most concurrent requests (>= 1); ``ADMIN``
    without a limit of its own counts against ``WRITE``'s; other classes
    absent from ``limits`` (``OPEN``) are always admitted and not counted. ``retry_after_s`` is the delay the refusal suggests.
    """

    def __init__(self, limits: Mapping[RequestClass, int], retry_after_s: float) -> None:
        for cls, limit in limits.items():
            if limit < 1:
                raise ValueError(f"admission limit for {cls} must be >= 1, got {limit}")
        if not retry_after_s >= 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s}")
        self._limits = dict(limits)
        # class -> the pool whose counter it uses (ADMIN uses WRITE's when only WRITE has a limit)
        self._pool = {c: p for c in RequestClass if (p := c if c in limits else _POOL.get(c)) in limits}
        self._inflight = dict.fromkeys(self._limits, 0)
        self._admitted = dict.fromkeys(self._limits, 0)
        self._refused = dict.fromkeys(self._limits, 0)
        self._peak = dict.fromkeys(self._limits, 0)
        self._retry_after = max(0, math.ceil(retry_after_s))  # RFC 9110 delay-seconds: a whole number, rounded up

    def __repr__(self) -> str:
        limits = ", ".join(f"{c}={n}" for c, n in self._limits.items())
        return f"AdmissionController({limits}, retry_after={self._retry_after}s)"

    def try_acquire(self, cls: RequestClass) -> Refusal | None:
        """Take a slot of ``cls``'s pool and return None, or return the refusal (nothing taken)."""
        pool = self._pool.get(cls)
        if pool is None:
            return None
        if self._inflight[pool] >= self._limits[pool]:
            self._refused[pool] += 1
            setting = "max_inflight_feeds" if pool is RequestClass.FEED else "max_inflight_writes"
            return Refusal(
                503,
                f"overloaded: {self._limits[pool]} {pool} requests already in flight (serving.{setting}); "
                f"retry after {self._retry_after} s",
                self._retry_after,
            )
        self._inflight[pool] += 1
        self._admitted[pool] += 1
        self._peak[pool] = max(self._peak[pool], self._inflight[pool])
        return None

    def release(self, cls: RequestClass) -> None:
        """Give back the slot a successful :meth:`try_acquire` of ``cls`` took."""
        pool = self._pool.get(cls)
        if pool is None:
            return
        if self._inflight[pool] <= 0:
            raise RuntimeError(f"release of {cls} without a matching acquire")
        self._inflight[pool] -= 1

    def stats(self) -> dict[str, dict[str, int]]:
        """Per pool: ``limit``, ``inflight`` now, ``peak`` in flight, ``admitted`` and ``refused`` so far."""
        return {
            str(pool): {
                "limit": self._limits[pool],
                "inflight": self._inflight[pool],
                "peak": self._peak[pool],
                "admitted": self._admitted[pool],
                "refused": self._refused[pool],
            }
            for pool in self._limits
        }
