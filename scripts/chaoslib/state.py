"""The state a fault is judged by: the baseline snapshot, and how a later read is compared with it.

Pure functions over ids, scores and creation times (see ``scripts/chaos.py`` for
why these are the reads compared and what may differ between them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xserve.schema import Post, RankResponse

__all__ = ["Ages", "Probe", "compare_feeds", "created_ms", "same_catalog", "same_posts", "same_scores", "same_users",
           "writes_in_thunder"]


def created_ms(post_id: int) -> int:
    """When a post the API created was created: the API's post ids are ``ms << 20 | 20 random bits``."""
    return post_id >> 20


@dataclass
class Probe:
    """The baseline taken before a fault."""

    ids: dict[int, list[tuple[int, float, float, float, int]]]  # viewer -> its feed's items (``probes.Round.ids``)
    now_ms: int  # the clock of the baseline; the later direct read passes it again
    direct: Any = None  # the part's own answer (fault-specific), compared by ``Fault.same_state``


FeedItem = tuple  # (post id, score) or (post id, score, weighted score, multiplier, conversation); see compare_feeds


def compare_feeds(
    before: Sequence[FeedItem], after: Sequence[FeedItem], new: set[int] = frozenset(),
    aged: set[int] = frozenset(), rel_tol: float = 1e-3, limit: int | None = None,
) -> str | None:
    """None when ``after`` holds the posts of ``before`` in its order but for explained differences, else why not.

    Items are ``(post id, score)`` in feed order, or ``(post id, score, weighted score, multiplier,
    conversation)`` (from the feed's ``explain``: the score before the author-diversity and out-of-network
    multipliers, and their product; the conversation is the root of the post's thread). Posts in ``new``
    (created after the baseline) and ``aged`` (past the age limit since) are left out. ``limit`` is the
    page size asked for (None: unknown, pages may be full). What may differ, and nothing else:

    * two posts may trade places when they are tied: their scores, or their weighted scores, are equal
      within ``rel_tol``. The ranker's scores move slightly (up to 1e-4 relative seen) with the batch a
      request shares and whether its context came from the KV cache, a near-tie is then broken either
      way, and the demo's quickly trained ranker gives many near-equal scores. A post whose multiplier
      changed may move past any other: the diversity decay gives an author's k-th best post its
      multiplier, so a near-tie between two posts of one author moves both;
    * a post may take the place of a post of its own conversation it is tied with: the feed keeps one
      post per conversation, the better scored, and a near-tie is broken either way;
    * a post not on the baseline page may enter only when that page was full, at or below (or tied with)
      its last post: it was just below the page. One that ranks above *replaced* a baseline post;
    * a baseline post may leave the page only when the later page is full, every post still on it ranks
      at least as high (or is tied with it), and one new or entering post took each lost slot.
    """
    def tied(x: float, y: float) -> bool:
        return abs(x - y) <= rel_tol * max(abs(x), abs(y))

    def rows(items: Sequence[FeedItem], drop: set[int]) -> dict[int, tuple[int, float, float, float, int]]:
        """post id -> (position, score, weighted score, multiplier, conversation), in order, ``drop`` left out."""
        kept = [item for item in items if item[0] not in drop]
        return {it[0]: (i, it[1], *(it[2:5] if len(it) > 4 else (it[1], 1.0, it[0]))) for i, it in enumerate(kept)}

    def close(p: tuple[int, float, float, float, int], q: tuple[int, float, float, float, int]) -> bool:
        return tied(p[1], q[1]) or tied(p[2], q[2])

    was, now = rows(before, set(aged)), rows(after, set(aged) | set(new))
    last = list(was.values())[-1] if was else None  # the baseline page's last post
    full_before = limit is None or len(before) >= limit
    full_after = limit is None or len(after) >= limit
    swapped: dict[int, int] = {}  # a post that took the place of a tied one of its conversation -> that one
    for p in now:
        if p not in was:
            gone = [m for m in was if m not in now and m not in swapped.values() and was[m][4] == now[p][4]
                    and close(was[m], now[p])]
            if gone:
                swapped[p] = gone[0]
    entrants = [p for p in now if p not in was and p not in swapped]
    for p in entrants:
        i, x, *_ = now[p]
        head = f"position {i}: {p} (score {x:.6g}) is not from the baseline page"
        if last is None or not full_before:
            return f"{head}, and that page was not full: nothing was below it"
        if x > last[1] and not close(now[p], last):
            return f"{head} and ranks above its last score {last[1]:.6g}: it replaced a baseline post"
    kept = [p for p in now if p in was]
    for j, p in enumerate(kept):
        for q in kept[j + 1:]:  # q is below p now; was it above, without a tie or a new multiplier?
            if was[q][0] < was[p][0] and not (close(was[p], was[q]) or close(now[p], now[q])
                                              or was[p][3] != now[p][3] or was[q][3] != now[q][3]):
                return (f"position {now[p][0]}: {p} (score {now[p][1]:.6g}) is now above {q} (score {now[q][1]:.6g}); "
                        f"the order changed without a tie (before: {was[p][1]:.6g} below {was[q][1]:.6g})")
    newcomers = sum(1 for item in after if item[0] in new)
    missing = [p for p in was if p not in now and p not in swapped.values()]
    for p in missing:
        i, x, *_ = was[p]
        if not full_after:
            return f"position {i}: {p} (score {x:.6g}) is missing, and the later page is not full"
        below = [q for q in now if now[q][1] < x and not close(was[p], now[q])]
        if below:
            return (f"position {i}: {p} (score {x:.6g}) is missing, though {below[0]} (score {now[below[0]][1]:.6g}), "
                    f"which it outranked, is still on the page")
    if len(missing) > newcomers + len(entrants):
        p = missing[0]
        return (f"position {was[p][0]}: {p} (score {was[p][1]:.6g}) is missing: {len(missing)} baseline posts missing, "
                f"{newcomers} new and {len(entrants)} entering posts explain {newcomers + len(entrants)}")
    return None


class Ages:
    """Creation times of posts (the data directory's posts table, read once; new posts from their ids)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._created: dict[int, int] | None = None

    def aged(self, post_ids: Sequence[int], cutoff_ms: int) -> set[int]:
        if self._created is None:
            from xserve.storage import DataDir

            posts = DataDir(self._data_dir, create=False).read_posts(["post_id", "created_at_ms"]).to_pydict()
            self._created = dict(zip(posts["post_id"], posts["created_at_ms"]))
        return {p for p in post_ids if self._created.get(p, created_ms(p)) < cutoff_ms}


def same_posts(before: list[tuple[int, int]], after: list[tuple[int, int]], cutoff_ms: int) -> str | None:
    """None when the (post id, created ms) lists hold the same posts in the same order, the aged
    (created before ``cutoff_ms``) left out; else how many are missing and extra."""
    b = [p for p, created in before if created >= cutoff_ms]
    a = [p for p, created in after if created >= cutoff_ms]
    return None if a == b else f"{len(set(b) - set(a))} posts missing, {len(set(a) - set(b))} extra"


def same_users(before: dict[int, Any], after: dict[int, Any], cutoff_ms: int) -> str | None:
    """None when every user of ``before`` has the same (features, history) after; else the first who differs."""
    diff = [v for v in before if before[v] != after.get(v)]
    return None if not diff else f"features or history of user {diff[0]}"


def same_scores(before: Sequence[RankResponse], after: Sequence[RankResponse], rel_tol: float = 1e-3,
                abs_tol: float = 1e-6) -> str | None:
    """None when the ranker gave every candidate of every request the same scores (each action's, within
    ``rel_tol`` relative or ``abs_tol`` absolute) from the same model version; else the first difference.

    The tolerance covers what the batch a request shares and the KV cache change (up to 1e-4 relative seen);
    a ranker with other weights moves scores by far more.
    """
    if len(before) != len(after):
        return f"{len(after)} answers, not {len(before)}"
    for i, (b, a) in enumerate(zip(before, after)):
        if a.model_version != b.model_version:
            return f"request {i}: model version {a.model_version!r}, not {b.model_version!r}"
        if len(a.scores) != len(b.scores):
            return f"request {i}: {len(a.scores)} scores, not {len(b.scores)}"
        for j, (sb, sa) in enumerate(zip(b.scores, a.scores)):
            for name in sb.__struct_fields__:
                x, y = getattr(sb, name), getattr(sa, name)
                if abs(x - y) > max(rel_tol * max(abs(x), abs(y)), abs_tol):
                    return f"request {i}, candidate {j}: {name} {y:.6g}, not {x:.6g}"
    return None


def same_catalog(before: dict[int, Post], after: dict[int, Post], cutoff_ms: int) -> str | None:
    """None when the catalog holds the same records of the posts it held before (those created before
    ``cutoff_ms`` left out); else the first post that differs."""
    for pid, post in sorted(before.items()):
        if post.created_at_ms >= cutoff_ms and after.get(pid) != post:
            return f"post {pid}: missing" if pid not in after else f"post {pid}: {after[pid]!r}, not {post!r}"
    return None


def writes_in_thunder(in_thunder: set[int], live: set[int], deleted: set[int]) -> str | None:
    """None when Thunder holds every ``live`` (acknowledged, not deleted) post and no ``deleted`` one."""
    missing, back = sorted(live - in_thunder), sorted(deleted & in_thunder)
    if missing or back:
        return (f"{len(missing)} acknowledged posts missing from Thunder (first {missing[:3]}), "
                f"{len(back)} deleted ones still there (first {back[:3]})")
    return None
