"""What one fault measured: request and error counts, latency and recovery, from the load's records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scripts.chaoslib.load import Sample

__all__ = ["APP_DOWN_STATUSES", "Result", "measure"]

# what a request gets while there is no app: refused (0), not routed yet (404), refused by the starting proxy
APP_DOWN_STATUSES = (0, 404, 502, 503, 504)


@dataclass
class Result:
    fault: str
    killed: str = ""
    requests: int = 0
    errors_5xx: int = 0
    errors_4xx: int = 0
    conn_errors: int = 0  # no HTTP answer (refused, reset, client timeout)
    down_errors: int = 0  # failed for want of an app: while it was down (full_restart), or in the killed ingress
    degraded_during: int = 0
    # the answered requests' latencies; the report gives each window's tail (``scripts.figures.tail``)
    ms_during: list[float] = field(default_factory=list)
    ms_during_feed: list[float] = field(default_factory=list)  # feed reads only (writes wait for a restarting shard)
    ms_after: list[float] = field(default_factory=list)
    recovery_s: float = float("nan")
    state_match: int = 0
    mismatch: str = ""
    writes_read_back: int = 0  # acknowledged writes (of the whole run so far) read back after recovery
    lost_writes: int = 0  # of those, missing (or unreadable)
    first_lost: str = ""
    first_error: str = ""  # the first failed request of the fault's window

    def failure(self) -> str | None:
        if self.recovery_s != self.recovery_s:
            return f"{self.fault} did not recover" + (f" ({self.mismatch})" if self.mismatch else "")
        if self.lost_writes:
            return f"{self.fault} lost {self.lost_writes} acknowledged writes; first: {self.first_lost}"
        if self.errors_5xx:
            return f"{self.fault} produced {self.errors_5xx} 5xx responses; first: {self.first_error}"
        if self.conn_errors or self.errors_4xx:
            return f"{self.fault} produced {self.conn_errors + self.errors_4xx} failed requests; first: {self.first_error}"
        if not self.state_match:
            return f"{self.fault} state mismatch: {self.mismatch}"
        return None


def measure(res: Result, samples: Sequence[Sample], t0: float, end_during: float, end_after: float,
            app_down_until: float | None = None, died_in_flight_until: float | None = None) -> Result:
    """Fill ``res`` from the requests sent in ``[t0, end_after)`` or still in flight at ``t0`` (the kill);
    "during" ends at ``end_during``.

    Requests sent before ``app_down_until`` (when the app answered again after a full restart) that found
    no app to answer are counted apart as ``down_errors``: nothing the app could have done better; so are
    the failed requests sent before ``died_in_flight_until``, when the kill took the process holding the
    requests (they were in it when it died).
    """
    window = [s for s in samples if s.started < end_after and (s.started >= t0 or s.started + s.ms / 1000 > t0)]

    def app_down(s: Sample) -> bool:
        if died_in_flight_until is not None and s.started < died_in_flight_until and (s.status == 0 or s.status >= 500):
            return True
        return app_down_until is not None and s.started < app_down_until and s.status in APP_DOWN_STATUSES

    counted = [s for s in window if not app_down(s)]
    failed = [s for s in counted if s.status == 0 or s.status >= 400]
    res.requests = len(window)
    res.down_errors = len(window) - len(counted)
    res.errors_5xx = sum(1 for s in failed if s.status >= 500)
    res.errors_4xx = sum(1 for s in failed if 400 <= s.status < 500)
    res.conn_errors = sum(1 for s in failed if s.status == 0)
    first = sorted(failed, key=lambda s: (s.status < 500, s.started))  # a 5xx first, if any
    res.first_error = f"{first[0].op} {first[0].status}: {first[0].error}" if first else ""
    res.degraded_during = sum(1 for s in counted if s.degraded and s.started < end_during)
    during = [s for s in counted if s.started < end_during and s.status]
    after = [s.ms for s in counted if s.started >= end_during and s.status]
    res.ms_during = [s.ms for s in during]
    res.ms_during_feed = [s.ms for s in during if s.op == "feed"]
    res.ms_after = after
    return res
