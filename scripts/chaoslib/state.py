"""The state a fault is judged by: the baseline snapshot, and how a later read is compared with it.

Pure functions over ids, scores and creation times (see ``scripts/chaos.py`` for
why these are the reads compared and what may differ between them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ages", "Probe", "compare_feeds", "created_ms", "same_posts", "same_users"]


def created_ms(post_id: int) -> int:
    """When a post the API created was created: the API's post ids are ``ms << 20 | 20 random bits``."""
    return post_id >> 20


@dataclass
class Probe:
    """The baseline taken before a fault."""

    ids: dict[int, list[tuple[int, float]]]  # viewer -> (post id, score) of its feed, in order
    now_ms: int  # the clock of the baseline; the later direct read passes it again
    direct: Any = None  # the part's own answer (fault-specific), compared by ``Fault.same_state``


def compare_feeds(
    before: Sequence[tuple[int, float]], after: Sequence[tuple[int, float]], new: set[int] = frozenset(),
    aged: set[int] = frozenset(), rel_tol: float = 1e-3,
) -> str | None:
    """None when ``after`` holds the posts of ``before`` in its order but for explained differences, else why not.

    Posts in ``new`` (created after the baseline) and ``aged`` (past the age limit since) are left out.
    What may differ, and nothing else:

    * two posts may trade places when their scores are tied (equal within ``rel_tol``): the ranker's scores
      move slightly (up to 1e-4 relative seen) with the batch a request shares and whether its context came
      from the KV cache, and a near-tie is then broken either way (the demo's quickly trained ranker gives
      many near-equal scores);
    * a post not on the baseline page may enter only at or below the page's last score (tied or lower): it
      was just below the page; one ranking above it *replaced* a baseline post, tie or not;
    * a baseline post may leave the page only when pushed off it: every post still on the page ranks at
      least as high (or is tied with it), and one new or entering post took each lost slot.
    """
    def tied(x: float, y: float) -> bool:
        return abs(x - y) <= rel_tol * max(abs(x), abs(y))

    b = [(p, x) for p, x in before if p not in aged]
    a = [(p, x) for p, x in after if p not in aged and p not in new]
    was, now = dict(b), dict(a)
    floor = b[-1][1] if b else float("inf")  # the baseline page's last score
    entrants = 0
    for i, (p, x) in enumerate(a):
        if p in was:
            continue
        entrants += 1
        if x > floor and not tied(x, floor):
            return (f"position {i}: {p} (score {x:.6g}) replaced a baseline post: it was not on the baseline page "
                    f"and ranks above its last score {floor:.6g}")
    rank_before = {p: i for i, (p, _) in enumerate(b)}
    kept = [(i, p) for i, (p, _) in enumerate(a) if p in was]
    for j, (i, p) in enumerate(kept):
        for _, q in kept[j + 1:]:  # q is below p now; was it above, without a tie?
            if rank_before[q] < rank_before[p] and not (tied(was[p], was[q]) or tied(now[p], now[q])):
                return (f"position {i}: {p} (score {now[p]:.6g}) is now above {q} (score {now[q]:.6g}); the order "
                        f"changed without a tie (before: {was[p]:.6g} below {was[q]:.6g})")
    newcomers = sum(1 for p, _ in after if p in new)
    missing = [(i, p, x) for i, (p, x) in enumerate(b) if p not in now]
    for i, p, x in missing:
        below = [q for q, y in a if y < x and not tied(x, y)]
        if below:
            return (f"position {i}: {p} (score {x:.6g}) is missing, though {below[0]} (score {now[below[0]]:.6g}), "
                    f"which it outranked, is still on the page")
    if len(missing) > newcomers + entrants:
        i, p, x = missing[0]
        return (f"position {i}: {p} (score {x:.6g}) is missing: {len(missing)} baseline posts missing, "
                f"{newcomers} new and {entrants} entering posts explain {newcomers + entrants}")
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
