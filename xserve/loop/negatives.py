"""Ranker negatives from impressions: posts a user was served and did not engage with (``loop.negatives``).

Production rankers learn "not engaged" from what was shown and skipped, not from random posts the user never
saw; ``ImpressionNegatives`` swaps a ranker example's sampled negative for such an impression when there is
one: a post served to the example's user within ``max_age_ms`` before the negative's reference time, on which
that user has no engagement at all. Where the user has none in that window the sampled negative stays, so the
two modes differ only where impressions exist (``loop.negatives = "sampled"`` keeps today's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImpressionNegatives", "unengaged"]

_TIME_BITS = 41  # ms offsets below 2^41 (~70 years) share an int64 key with a dense user index below 2^21


def unengaged(imp_user: np.ndarray, imp_post: np.ndarray, eng_user: np.ndarray, eng_post: np.ndarray) -> np.ndarray:
    """(I,) bool: impression i's (user, post) has no engagement row (vectorised, by sorting)."""
    n_eng = len(eng_user)
    u = np.concatenate([eng_user, imp_user]).astype(np.int64)
    p = np.concatenate([eng_post, imp_post]).astype(np.int64)
    src = np.concatenate([np.zeros(n_eng, np.int8), np.ones(len(imp_user), np.int8)])
    order = np.lexsort((src, p, u))  # by user, post, then engagements before impressions
    us, ps, ss = u[order], p[order], src[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = (us[1:] != us[:-1]) | (ps[1:] != ps[:-1])
    group = np.cumsum(new_group) - 1
    engaged_group = ss[new_group] == 0  # the group's first row is an engagement
    out = np.empty(len(order), bool)
    out[order] = ~engaged_group[group]
    return out[n_eng:]


@dataclass
class ImpressionNegatives:
    """Unengaged impressions by (user, time), as corpus indices (build with :meth:`build`)."""

    users: np.ndarray  # (U,) distinct users with unengaged impressions, ascending
    keys: np.ndarray  # (I,) dense user << _TIME_BITS | (served_at - t0), ascending
    corpus_idx: np.ndarray  # (I,) corpus index of each impression's post
    t0: int

    @classmethod
    def build(cls, imp_user: np.ndarray, imp_post: np.ndarray, imp_ms: np.ndarray, eng_user: np.ndarray,
              eng_post: np.ndarray, corpus_post: np.ndarray) -> ImpressionNegatives:
        """From impression columns, the engagements (entries' user and post) and the corpus's post ids."""
        imp_user, imp_post = np.asarray(imp_user, np.int64), np.asarray(imp_post, np.int64)
        keep = unengaged(imp_user, imp_post, eng_user, eng_post)
        order_c = np.argsort(corpus_post, kind="stable")  # corpus index of a post id, by binary search
        sorted_post = np.asarray(corpus_post, np.int64)[order_c]
        at = np.minimum(np.searchsorted(sorted_post, imp_post), max(len(sorted_post) - 1, 0))
        keep &= (sorted_post[at] == imp_post) if len(sorted_post) else np.zeros(len(imp_post), bool)
        user, ms = imp_user[keep], np.asarray(imp_ms, np.int64)[keep]
        cidx = order_c[at[keep]] if len(sorted_post) else np.zeros(0, np.int64)
        users = np.unique(user)
        t0 = int(ms.min()) if len(ms) else 0
        keys = (np.searchsorted(users, user).astype(np.int64) << _TIME_BITS) | (ms - t0)
        order = np.argsort(keys, kind="stable")
        return cls(users, keys[order], cidx[order].astype(np.int64), t0)

    def __len__(self) -> int:
        return len(self.keys)

    def replace(self, neg: np.ndarray, user: np.ndarray, ref_ms: np.ndarray, max_age_ms: int,
                rng: np.random.Generator) -> np.ndarray:
        """``neg (X, N)`` with each entry swapped for an unengaged impression of ``user (X,)`` served in
        ``[ref − max_age, ref]`` (``ref_ms (X, N)``) when the user has one; others stay as sampled."""
        if not len(self.keys):
            return neg
        u = np.searchsorted(self.users, user)
        found = (u < len(self.users)) & (self.users[np.minimum(u, len(self.users) - 1)] == user)  # (X,)
        base = np.minimum(u, len(self.users) - 1).astype(np.int64)[:, None] << _TIME_BITS  # (X, 1)
        hi_t = np.clip(ref_ms - self.t0, -1, (1 << _TIME_BITS) - 1)
        lo_t = np.clip(ref_ms - max_age_ms - self.t0, 0, (1 << _TIME_BITS) - 1)
        hi = np.where(hi_t >= 0, np.searchsorted(self.keys, base + np.maximum(hi_t, 0), side="right"), 0)
        lo = np.searchsorted(self.keys, base + lo_t, side="left")
        ok = found[:, None] & (hi > lo)  # (X, N)
        pick = lo + np.floor(rng.random(neg.shape) * np.maximum(hi - lo, 1)).astype(np.int64)
        return np.where(ok, self.corpus_idx[np.minimum(pick, len(self.keys) - 1)], neg)
