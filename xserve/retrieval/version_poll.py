"""Which embedding version is current, without a file read per query."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["PolledVersion"]


class PolledVersion:
    """The current embedding version, re-read at most every ``poll_s`` seconds (a cheap file read)."""

    def __init__(self, read: Callable[[], str | None], poll_s: float, monotonic: Callable[[], float] = time.monotonic):
        self._read = read
        self._poll_s = poll_s
        self._monotonic = monotonic
        self._value: str | None = None
        self._checked_at = -math.inf

    def __call__(self) -> str | None:
        now = self._monotonic()
        if now - self._checked_at >= self._poll_s:
            self._value = self._read()
            self._checked_at = now
        return self._value
