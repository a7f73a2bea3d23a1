"""``UserStore``: the user data of one shard, updated by user events.

Holds, per user it owns (``shard_for(user_id) == shard``): the profile (screen
name, follower count), the follow / block / mute / subscription sets, the muted
keywords, the aggregated engagement sequence (``EngagementSequence``), the
served history, and the latest negative signal per (author, negative action)
(``UserFeatures.negative_feedback``: the sequence forgets old entries, but a
not-interested from months ago still weighs, faded, on that author's posts).
It also keeps each owned user's *followers* (the reverse follow edges, which
arrive through events of other shards' users), so the follower count stays
consistent with follow edits.

Contract of ``apply(event)``: idempotent (a second application changes
nothing), never raises on a well-typed event, and touches only users this
shard owns; an event naming a user the shard has not seen creates a blank
record for it. Validation (does the user exist, is a cap exceeded) is
``check(event)``, called by the shell before the event is logged, so an event
that is logged is always applied in full.

Memory is bounded by config: ``max_edges_per_kind`` per user and kind (the
follower sets are bounded by everyone's follow caps), ``max_history_items``
per user, ``max_negative_signals`` per user (the oldest dropped first), and
``max_served_ids`` per user of the served history, whose ids also
expire after ``max_served_age_ms`` (dropped on the next write, left out of
``query_data`` at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xserve.config import MixerConfig, ServingConfig
from xserve.schema import (
    ACTION_INDEX,
    ACTIONS,
    NEGATIVE_ACTIONS,
    Action,
    EdgeKind,
    EdgeSet,
    EdgeUnset,
    Engagement,
    EngagementRecorded,
    HistoryItem,
    MutedKeywordsSet,
    NegativeSignal,
    Served,
    UserEvent,
    UserFeatures,
    UserProfile,
    UserQueryData,
    UserUpserted,
)
from xserve.sharding import shard_array, shard_for
from xserve.users.history import AggregatedActions, EngagementSequence, aggregate_actions

__all__ = ["UserStore", "event_user_ids"]


_ENGAGEMENT_COLUMNS = ("user_id", "post_id", "author_id", "action", "timestamp_ms", "dwell_ms", "product_surface")


def event_user_ids(event: UserEvent) -> tuple[int, ...]:
    """Users whose shards must apply ``event`` (a follow also changes the target's follower count)."""
    match event:
        case EdgeSet(user_id=u, target_id=t, kind=EdgeKind.FOLLOW) | EdgeUnset(user_id=u, target_id=t, kind=EdgeKind.FOLLOW):
            return (u, t) if u != t else (u,)
        case EngagementRecorded(engagement=e):
            return (e.user_id,)
        case _:
            return (event.user_id,)


@dataclass(slots=True)
class _User:
    history: EngagementSequence
    screen_name: str = ""
    known: bool = False  # created by UserUpserted or the users table (not only referenced by an edge)
    extra_followers: int = 0  # followers the users table counts beyond the follow edges it holds
    edges: dict[EdgeKind, set[int]] = field(default_factory=lambda: {k: set() for k in EdgeKind})
    followers: set[int] = field(default_factory=set)
    muted_keywords: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()  # declared interest topics (PUT /v1/users/{id}, or the users table)
    served: dict[int, int] = field(default_factory=dict)  # post id -> served at, oldest first
    negatives: dict[tuple[int, Action], int] = field(default_factory=dict)  # (author, negative action) -> latest at

    def profile(self, user_id: int) -> UserProfile:
        return UserProfile(user_id, self.screen_name, self.extra_followers + len(self.followers))


class UserStore:
    """The users of shard ``shard`` of ``num_shards`` (see the module docstring)."""

    def __init__(self, serving: ServingConfig, mixer: MixerConfig, shard: int = 0, num_shards: int = 1) -> None:
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
        self.shard = shard
        self.num_shards = num_shards
        self._cfg = serving
        self._window_ms = mixer.history_window_ms
        self._users: dict[int, _User] = {}
        self._bulk: list[AggregatedActions] = []  # engagement entries loaded from tables
        # user -> (bulk chunk, first entry, first kept entry, end) not yet folded
        self._pending: dict[int, list[tuple[int, int, int, int]]] = {}

    def __repr__(self) -> str:
        return f"UserStore(shard={self.shard}/{self.num_shards}, users={len(self._users)})"

    def owns(self, user_id: int) -> bool:
        return shard_for(user_id, self.num_shards) == self.shard

    def _user(self, user_id: int) -> _User:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _User(EngagementSequence(self._cfg.max_history_items, self._window_ms))
        return user

    # ---------------------------------------------------------------- reads

    def exists(self, user_id: int) -> bool:
        user = self._users.get(user_id)
        return user is not None and user.known

    def missing(self, user_ids: Iterable[int]) -> list[int]:
        """The owned users among ``user_ids`` that do not exist (users of other shards are ignored)."""
        return [u for u in user_ids if self.owns(u) and not self.exists(u)]

    def features(self, user_id: int) -> UserFeatures:
        user = self._users.get(user_id)
        if user is None:
            return UserFeatures()
        e = user.edges
        return UserFeatures(
            followed_user_ids=frozenset(e[EdgeKind.FOLLOW]),
            blocked_user_ids=frozenset(e[EdgeKind.BLOCK]),
            muted_user_ids=frozenset(e[EdgeKind.MUTE]),
            muted_keywords=user.muted_keywords,
            subscribed_user_ids=frozenset(e[EdgeKind.SUBSCRIBE]),
            negative_feedback=tuple(sorted(
                (NegativeSignal(author, action, at_ms) for (author, action), at_ms in user.negatives.items()),
                key=lambda n: (n.timestamp_ms, n.author_id, n.action),
            )),
            mutual_follow_ids=frozenset(e[EdgeKind.FOLLOW] & user.followers),  # followers live on this shard too
            topics=user.topics,
        )

    def history(self, user_id: int, limit: int) -> tuple[HistoryItem, ...]:
        known = user_id in self._users or user_id in self._pending
        return self._sequence(user_id).latest(limit) if known else ()

    def query_data(self, user_id: int, history_limit: int, now_ms: int, trim_block: int = 1) -> UserQueryData | None:
        """Features, history and the ids served within ``max_served_age_ms`` before ``now_ms`` (oldest first) of an
        existing user; None when the user does not exist. The history is the context window of ``history_limit``
        trimmed in blocks of ``trim_block`` entries (``EngagementSequence.window``; 1: the newest ``history_limit``)."""
        if not self.exists(user_id):
            return None
        user = self._users[user_id]
        oldest = now_ms - self._cfg.max_served_age_ms
        served = tuple(pid for pid, at_ms in user.served.items() if at_ms >= oldest)
        history = self._sequence(user_id).window(history_limit, trim_block)
        return UserQueryData(user_id, self.features(user_id), history, served)

    def profiles(self, user_ids: Iterable[int]) -> dict[int, UserProfile]:
        """Profiles of the existing owned users among ``user_ids``."""
        return {u: self._users[u].profile(u) for u in user_ids if self.owns(u) and self.exists(u)}

    # ---------------------------------------------------------------- writes

    def check(self, event: UserEvent) -> str | None:
        """Why ``event`` must be refused on this shard (a one-line reason), or None when it may be applied."""
        if isinstance(event, EdgeSet) and self.owns(event.user_id):
            if event.user_id == event.target_id:
                return f"a user cannot {event.kind} themself (user {event.user_id})"
            user = self._users.get(event.user_id)
            held = user.edges[event.kind] if user is not None else set()
            if event.target_id not in held and len(held) >= self._cfg.max_edges_per_kind:
                return f"user {event.user_id} already has {len(held)} {event.kind} edges (max_edges_per_kind)"
        return None

    def apply(self, event: UserEvent) -> bool:
        """Apply one event to the owned users it names; returns whether anything changed."""
        match event:
            case UserUpserted(user_id=u, screen_name=name, topics=topics):
                if not self.owns(u):
                    return False
                user = self._user(u)
                changed = not user.known or user.screen_name != name or (topics is not None and topics != user.topics)
                user.known, user.screen_name = True, name
                if topics is not None:  # None: the request left the topics alone
                    user.topics = tuple(topics)
                return changed
            case EdgeSet(user_id=u, target_id=t, kind=kind):
                changed = False
                if self.owns(u) and t not in (edges := self._user(u).edges[kind]):
                    edges.add(t)
                    changed = True
                if kind is EdgeKind.FOLLOW and self.owns(t) and u not in (followers := self._user(t).followers):
                    followers.add(u)
                    changed = True
                return changed
            case EdgeUnset(user_id=u, target_id=t, kind=kind):
                changed = False
                if self.owns(u) and u in self._users and t in (edges := self._users[u].edges[kind]):
                    edges.discard(t)
                    changed = True
                if kind is EdgeKind.FOLLOW and self.owns(t) and t in self._users and u in self._users[t].followers:
                    self._users[t].followers.discard(u)
                    changed = True
                return changed
            case MutedKeywordsSet(user_id=u, keywords=keywords):
                if not self.owns(u):
                    return False
                user = self._user(u)
                changed = user.muted_keywords != keywords
                user.muted_keywords = keywords
                return changed
            case EngagementRecorded(engagement=e):
                if not self.owns(e.user_id):
                    return False
                changed = self._sequence(e.user_id).add(e)
                if e.action in NEGATIVE_ACTIONS:
                    changed = self._record_negative(self._user(e.user_id), e.author_id, e.action, e.timestamp_ms) or changed
                return changed
            case Served(user_id=u, post_ids=post_ids, at_ms=at_ms):
                if not self.owns(u):
                    return False
                return self._record_served(self._user(u), post_ids, at_ms)
        raise TypeError(f"not a user event: {type(event).__name__}")

    def _record_negative(self, user: _User, author_id: int, action: Action, at_ms: int) -> bool:
        """Keep the latest ``action`` on ``author_id``; beyond ``max_negative_signals`` the oldest signal goes."""
        key = (author_id, action)
        if user.negatives.get(key, -1) >= at_ms:
            return False  # a replay, or an older signal than the one kept
        user.negatives[key] = at_ms
        if len(user.negatives) > self._cfg.max_negative_signals:
            del user.negatives[min(user.negatives, key=lambda k: (user.negatives[k], k))]
        return True

    def _record_served(self, user: _User, post_ids: Sequence[int], at_ms: int) -> bool:
        served = user.served
        changed = False
        for pid in post_ids:
            if served.get(pid, -1) >= at_ms:
                continue  # already recorded at this time or later: replay or out-of-order
            served.pop(pid, None)
            served[pid] = at_ms  # re-served posts move to the newest end
            changed = True
        oldest = at_ms - self._cfg.max_served_age_ms
        while served and (len(served) > self._cfg.max_served_ids or next(iter(served.values())) < oldest):
            del served[next(iter(served))]  # oldest first (a replay slightly out of order only delays a drop)
        return changed

    # ---------------------------------------------------------------- bulk load (the data directory's tables)

    def load_users(self, user_ids: Sequence[int], screen_names: Sequence[str], followers_counts: Sequence[int],
                   topics: Sequence[Sequence[str] | None] | None = None) -> int:
        """Create the owned users of a users table (``topics``: their declared topics); call before
        ``load_edges``. Returns users loaded."""
        n = 0
        topics = topics if topics is not None else [None] * len(user_ids)
        for u, name, count, declared in zip(user_ids, screen_names, followers_counts, topics):
            u = int(u)
            if self.owns(u):
                user = self._user(u)
                user.known, user.screen_name, user.extra_followers = True, str(name), int(count)
                user.topics = tuple(declared or ())
                n += 1
        return n

    def load_edges(self, user_ids: Sequence[int], target_ids: Sequence[int], kinds: Sequence[str]) -> int:
        """Add the edges of an edges table; the users table's follower counts then cover these edges."""
        n = 0
        for u, t, kind in zip(user_ids, target_ids, kinds):
            n += self.apply(EdgeSet(int(u), int(t), EdgeKind(kind)))
        for user in self._users.values():
            user.extra_followers = max(0, user.extra_followers - len(user.followers))
        return n

    def load_engagement_arrays(self, cols: Mapping[str, np.ndarray]) -> int:
        """Take an engagements table given as arrays (``action`` as ``ACTION_INDEX`` codes, any row order).

        The owned users' rows are aggregated at once by the history rule (``aggregate_actions``, the
        one training uses) and only each user's newest ``max_history_items`` entries are kept (the older
        ones are counted: ``EngagementSequence.note_dropped``); they are folded into the user's sequence on
        its first use, so a large table loads in about a second. Returns the entries kept.
        """
        users = np.asarray(cols["user_id"], dtype=np.int64)
        if not len(users):
            return 0
        idx = np.nonzero(shard_array(users, self.num_shards) == self.shard)[0]
        rows = {k: np.asarray(cols[k])[idx] for k in _ENGAGEMENT_COLUMNS}
        negative = np.isin(rows["action"], [ACTION_INDEX[a] for a in NEGATIVE_ACTIONS])
        for u, author, code, at_ms in zip(*(rows[k][negative].tolist() for k in ("user_id", "author_id", "action", "timestamp_ms"))):
            self._record_negative(self._user(u), author, ACTIONS[code], at_ms)
        entries = aggregate_actions(rows["user_id"], rows["post_id"], rows["author_id"], rows["action"],
                                    rows["timestamp_ms"], rows["product_surface"], rows["dwell_ms"], self._window_ms)
        self._bulk.append(entries)
        kept = 0
        for start, b in zip(entries.starts.tolist(), entries.ends.tolist()):
            a = max(start, b - self._cfg.max_history_items)
            self._pending.setdefault(int(entries.user[a]), []).append((len(self._bulk) - 1, start, a, b))
            kept += b - a
        return kept

    def _sequence(self, user_id: int) -> EngagementSequence:
        """The user's sequence, with any bulk-loaded entries folded in first."""
        seq = self._user(user_id).history
        for chunk, start, a, b in self._pending.pop(user_id, ()):
            entries = self._bulk[chunk]
            if a > start:  # the entries left out still count: the context window is anchored to the first
                seq.note_dropped(a - start, int(entries.ts[a - 1]))
            for item, first_ms in zip(entries.items(range(a, b)), entries.first_ts[a:b].tolist()):
                seq.add_item(item, first_ms)
        return seq
