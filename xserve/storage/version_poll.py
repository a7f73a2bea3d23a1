"""Following a version pointer (``embeddings/CURRENT``, ``models/CURRENT``) without a file read per request.

Two pure helpers, used by retrieval shards, the Retrieval deployment and the Ranker deployment:

* :class:`PolledVersion`: the pointer's value, re-read at most every ``poll_s`` seconds;
* :class:`VersionFollower`: the pointer's value *and* the object loaded for it (a ranker, a user tower),
  swapped together as one :class:`Followed` pair. :meth:`VersionFollower.poll` loads a new version
  beside the live one and replaces the pair with one assignment, so a reader that took
  :attr:`VersionFollower.live` once uses one version for its whole request, and requests never wait
  for a load (the shell calls ``poll`` off the request path, on a timer). A load that fails keeps the
  live pair and is retried on the next poll.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Followed", "PolledVersion", "VersionFollower"]

T = TypeVar("T")


class PolledVersion:
    """The current version, re-read at most every ``poll_s`` seconds (a cheap file read)."""

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


@dataclass(frozen=True, slots=True)
class Followed(Generic[T]):
    """One version and what was loaded for it; replaced whole, never changed in place."""

    version: str | None  # the pointer's value it was loaded for (None: no pointer yet, the default was loaded)
    value: T


class VersionFollower(Generic[T]):
    """The live ``(version, loaded object)`` pair of a version pointer (see the module docstring).

    ``read()`` returns the pointer's value (None when there is none); ``load(version)`` builds the
    object for a value (``load(None)``: the default). The first pair is loaded in the constructor.
    """

    def __init__(self, read: Callable[[], str | None], load: Callable[[str | None], T]) -> None:
        self._read = read
        self._load = load
        version = read()
        self.live: Followed[T] = Followed(version, load(version))
        self.swaps = 0  # versions taken since the first
        self.failed_loads = 0  # loads that raised (the live pair was kept)
        self.last_error = ""

    def __repr__(self) -> str:
        return f"VersionFollower(live={self.live.version!r}, swaps={self.swaps}, failed_loads={self.failed_loads})"

    def poll(self) -> bool:
        """Read the pointer; when it names another version, load it and swap the pair. True when swapped."""
        version = self._read()
        if version == self.live.version:
            return False
        try:
            value = self._load(version)
        except Exception as exc:  # noqa: BLE001 - keep serving the live version; retried next poll
            self.failed_loads += 1
            self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return False
        self.live = Followed(version, value)  # one assignment: readers see the old pair or the new one
        self.swaps += 1
        return True

    def stats(self) -> dict[str, object]:
        return {"version": self.live.version, "swaps": self.swaps, "failed_loads": self.failed_loads,
                "last_error": self.last_error}
