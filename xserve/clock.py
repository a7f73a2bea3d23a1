"""The one clock and the time constants: every time in xserve is integer milliseconds since the Unix epoch.

Components take ``now_ms`` as an argument (no hidden global clock); only the
shells (actors, deployments, the CLI, scripts) call :func:`now_ms`.
"""

from __future__ import annotations

import time

__all__ = ["DAY_MS", "HOUR_MS", "MINUTE_MS", "SECOND_MS", "now_ms"]

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


def now_ms() -> int:
    """Wall-clock time in ms since the epoch."""
    return time.time_ns() // 1_000_000
