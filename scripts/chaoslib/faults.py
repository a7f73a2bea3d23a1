"""One class per fault: how to hit one part of the app, tell that it answers again, and read its state directly.

``FAULTS`` maps the names ``--faults`` takes to the classes, in the order a run
takes them by default.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from scripts.chaoslib.parts import Parts
from scripts.chaoslib.state import same_posts, same_users
from xserve.sharding import shard_for

__all__ = ["FAULTS", "ActorFault", "Fault", "FullRestart", "RankerReplica", "RetrievalShard", "ThunderShard", "UserStore"]


class Fault:
    """One fault on ``parts``, aimed where it hits the probe viewers (``probes``).

    ``inject`` hits the part and says what it hit; ``answers`` tells whether that part answers again;
    ``state`` reads the part's own state directly (given the baseline's clock and the writers' new posts)
    and ``same_state`` compares two such reads.
    """

    name: ClassVar[str]  # what ``--faults`` calls it
    components: ClassVar[frozenset[str]] = frozenset()  # what a feed's ``degraded`` names while it lasts (empty: anything)

    def __init__(self, parts: Parts, probes: Sequence[int]) -> None:
        self.parts, self.probes = parts, probes
        self.app_down_until: float | None = None  # when the app answered again, if the fault took it down

    def inject(self) -> str:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def state(self, now_ms: int, new: set[int]) -> Any:
        return None

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        """None when ``after`` matches ``before`` (posts created before ``cutoff_ms`` left out), else the difference."""
        return None


class ActorFault(Fault):
    """``ray.kill(actor, no_restart=False)`` of one of the app's named actors: Ray restarts it and it rebuilds
    from the data directory."""

    def __init__(self, parts: Parts, probes: Sequence[int]) -> None:
        super().__init__(parts, probes)
        self.actor_name = self.target()
        self._handle: Any = None

    def target(self) -> str:
        """The name of the actor to kill."""
        raise NotImplementedError

    @property
    def handle(self) -> Any:
        if self._handle is None:
            self._handle = self.parts.cluster().actor(self.actor_name)
        return self._handle

    def inject(self) -> str:
        self.parts.cluster().kill(self.handle)
        return self.actor_name

    def answers(self) -> bool:
        try:
            handle = self.handle
        except RuntimeError:  # not found: being restarted
            return False
        return self.parts.cluster().answers(handle)


class ThunderShard(ActorFault):
    """Kill replica 0 of the Thunder shard holding most of the probes' followed authors (so it hits their feeds)."""

    name = "thunder_shard"
    components = frozenset({"ThunderSource"})

    def target(self) -> str:
        n = self.parts.config.thunder.num_shards
        owners = Counter(shard_for(a, n) for v in self.probes for a in self.parts.follows(v))
        return self.parts.names.thunder_shard(owners.most_common(1)[0][0] if owners else 0, 0)

    def state(self, now_ms: int, new: set[int]) -> list[tuple[int, int]]:
        return self.parts.thunder_posts(self.handle, self.probes, now_ms)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_posts(before, after, cutoff_ms)


class RetrievalShard(ActorFault):
    """Kill retrieval shard 0."""

    name = "retrieval_shard"
    components = frozenset({"PhoenixSource"})

    def target(self) -> str:
        return self.parts.names.retrieval_shard(0)

    def state(self, now_ms: int, new: set[int]) -> list[tuple[int, int]]:
        return self.parts.retrieval_top(self.handle, now_ms, new)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_posts(before, after, cutoff_ms)


class UserStore(ActorFault):
    """Kill the user-store shard owning the first probe viewer."""

    name = "user_store"
    components = frozenset({"user_store_stale", "AuthorInfoHydrator"})

    def target(self) -> str:
        n = self.parts.config.serving.num_user_shards
        return self.parts.names.user_shard(shard_for(self.probes[0], n), n)

    def state(self, now_ms: int, new: set[int]) -> dict[int, tuple[Any, Any]]:
        return self.parts.user_state(self.probes)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_users(before, after, cutoff_ms)


class RankerReplica(Fault):
    """Kill the first Serve replica of the Ranker (by name); Serve replaces it. No state of its own to compare."""

    name = "ranker_replica"
    components = frozenset({"PhoenixScorer"})

    def __init__(self, parts: Parts, probes: Sequence[int]) -> None:
        super().__init__(parts, probes)
        self._before: list[tuple[str, str]] = []  # the replicas running when it was injected

    def inject(self) -> str:
        c = self.parts.cluster()
        self._before = c.ranker_replicas()
        if not self._before:
            raise RuntimeError("no Ranker replica is running")
        name, namespace = self._before[0]
        c.kill(c.replica(name, namespace))
        return name

    def answers(self) -> bool:
        c = self.parts.cluster()
        now = c.ranker_replicas()
        return bool(now) and now != self._before and c.ranker_answers()


class FullRestart(Fault):
    """kill -9 of every process of the app (``xserve serve`` and the whole Ray cluster under it), then the app
    starts again over the same data directory."""

    name = "full_restart"

    def inject(self) -> str:
        self.parts.disconnect()  # before the cluster dies under this driver
        n = self.parts.app.kill9()
        started = time.monotonic()
        self.parts.app.start()
        self.app_down_until = time.monotonic()
        return f"{n} processes (kill -9), restarted in {self.app_down_until - started:.1f} s"

    def answers(self) -> bool:
        return self.parts.app.healthy()

    def state(self, now_ms: int, new: set[int]) -> dict[int, tuple[Any, Any]]:
        return self.parts.user_state(self.probes)

    def same_state(self, before: Any, after: Any, cutoff_ms: int) -> str | None:
        return same_users(before, after, cutoff_ms)


FAULTS: dict[str, type[Fault]] = {f.name: f for f in (ThunderShard, RetrievalShard, RankerReplica, UserStore, FullRestart)}
