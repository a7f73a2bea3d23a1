"""``LogTail``: one consumer of several event logs (one per producer shard), with a committed watermark.

The post catalog is the source of truth for posts: every post write is logged
(fsynced) by its catalog shard before it is acknowledged. Thunder and
retrieval keep their own views of the posts and consume those logs like Kafka
consumers: a ``LogTail`` reads every log under ``root`` matching ``pattern``
from the consumer's committed offsets, and the consumer commits new offsets
(:meth:`commit`) only once what it read is durable on its side. After a crash
it re-reads from the last commit, so it sees every event at least once;
consumers apply events idempotently, so "at least once" is "exactly once" in
effect.

The watermark is a small JSON file ``{"offsets": {log name: next offset}, ...meta}``
replaced atomically (write, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xserve.storage.log.event_log import LogCursor
from xserve.storage.files import write_json_atomic

__all__ = ["LogTail", "TailEntry", "read_watermark"]

TailEntry = tuple[str, int, int, Any]  # (log name, offset, appended_at_ms, event)


def read_watermark(watermark: str | Path) -> tuple[dict[str, int], dict[str, Any]] | None:
    """A consumer's committed offsets per log and what it committed beside them; None when it never committed."""
    try:
        data = json.loads(Path(watermark).read_text())
    except FileNotFoundError:
        return None
    return {str(k): int(v) for k, v in data.pop("offsets", {}).items()}, data


class LogTail:
    """Reads the logs ``root/<pattern>`` (directories, found again on every poll) from the watermark ``watermark``."""

    def __init__(self, root: str | Path, pattern: str, event_type: Any, watermark: str | Path) -> None:
        self.root = Path(root)
        self.pattern = pattern
        self.event_type = event_type
        self.watermark = Path(watermark)
        self._cursors: dict[str, LogCursor] = {}
        self.committed, self.meta = read_watermark(self.watermark) or ({}, {})  # meta: committed beside the offsets
        self._from = dict(self.committed)  # where a log's cursor starts when the log is first seen

    def __repr__(self) -> str:
        return f"LogTail({str(self.root / self.pattern)!r}, committed={self.committed})"

    def poll(self) -> list[TailEntry]:
        """Every whole batch appended to the logs since the last poll (from the watermark at first)."""
        for d in sorted(self.root.glob(self.pattern)) if self.root.is_dir() else ():
            if d.is_dir() and d.name not in self._cursors:
                self._cursors[d.name] = LogCursor(d, self.event_type, self._from.get(d.name, 0))
        return [(name, o, at, e) for name, c in self._cursors.items() for o, at, e in c.poll()]

    def positions(self) -> dict[str, int]:
        """Where the last poll stopped, per log: commit this once what it returned is durable."""
        return {name: c.offset for name, c in self._cursors.items()}

    def lag(self) -> int:
        """Records polled but not committed."""
        return sum(max(0, o - self.committed.get(n, 0)) for n, o in self.positions().items())

    def commit(self, positions: dict[str, int], **meta: Any) -> None:
        """Make ``positions`` (and ``meta``) the watermark, durably; a restart resumes there."""
        if positions == self.committed and meta == self.meta:
            return
        self.watermark.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.watermark, {"offsets": positions, **meta})
        self.committed, self.meta = dict(positions), dict(meta)

    def rewind(self, positions: dict[str, int] | None = None) -> None:
        """Read again from ``positions`` (default: the watermark; ``{}``: every log from its start)."""
        self._from = dict(self.committed if positions is None else positions)
        for name, cursor in self._cursors.items():
            cursor.seek(self._from.get(name, 0))
