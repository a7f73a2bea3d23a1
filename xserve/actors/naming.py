"""The names of the stateful actors of one data directory: one scheme for every part.

Every named actor of an app is ``xserve-<tag>-<part>``, where ``<tag>`` is 8 hex
digits of the resolved data directory's path, so two apps on one cluster never
share state by accident, and every replica of a deployment derives the same
names. They live in :data:`NAMESPACE`. Tools that find a part to inspect or
kill (``scripts/chaos``, tests) use these functions, never patterns of their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NAMESPACE", "PART_KINDS", "ActorNames"]

NAMESPACE = "xserve"
# the first word of every part: what a setting keyed by part (``serving.actor_node_labels``) may name
PART_KINDS = ("users", "posts", "thunder", "retrieval", "ads")


@dataclass(frozen=True, slots=True)
class ActorNames:
    """The actor names of the data directory whose tag is ``prefix`` (``ActorNames.of(data_dir)``)."""

    prefix: str  # "xserve-<8 hex of the resolved data dir>"

    @classmethod
    def of(cls, data_dir: str | Path) -> ActorNames:
        digest = hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
        return cls(f"xserve-{digest}")

    def owns(self, name: str) -> bool:
        """Whether ``name`` is one of this data directory's actors."""
        return name.startswith(f"{self.prefix}-")

    def part(self, name: str) -> str:
        """What one of its actors is: the name after the tag (``users-0-of-2``, ``thunder-ingest``)."""
        if not self.owns(name):
            raise ValueError(f"{name!r} is not an actor of {self.prefix}")
        return name[len(self.prefix) + 1:]

    def user_shard(self, shard: int, num_shards: int) -> str:
        return f"{self.prefix}-users-{shard}-of-{num_shards}"

    def post_shard(self, shard: int, num_shards: int) -> str:
        return f"{self.prefix}-posts-{shard}-of-{num_shards}"

    def thunder_shard(self, shard: int, replica: int) -> str:
        return f"{self.prefix}-thunder-shard-{shard}-{replica}"

    def thunder_ingest(self) -> str:
        return f"{self.prefix}-thunder-ingest"

    def retrieval_shard(self, shard: int) -> str:
        return f"{self.prefix}-retrieval-shard-{shard}"

    def retrieval_indexer(self) -> str:
        return f"{self.prefix}-retrieval-indexer"

    def ads(self) -> str:
        return f"{self.prefix}-ads"
