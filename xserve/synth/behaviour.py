"""How a synthetic world's users read a feed: the closed-loop simulator's behaviour model (pure NumPy).

A reader goes down a page in order. Attention decays with position as a cascade: after each post the
reader goes on with probability ``attention_decay`` and otherwise ends the session, so position ``i``
(0-based, counted over the whole session) is viewed with probability ``attention_decay ** i``. Each
viewed post draws its actions exactly as the world's generator draws an impression's actions
(``TrueActionModel.independent``: the world's logistic models and gates at the time of reading, each
action independent; a negative action drops the positive ones) and its dwell time with the world's own
``draw_dwell_ms``. :class:`SessionTally` sums what readers did into the simulator's figures; the
unregretted seconds are the dwell seconds on posts that drew no negative action, minus ``regret_s`` per
negative.

Beside the drawn figures the tally keeps their expectations given the posts viewed (the world's probability
of a negative and its expected unregretted seconds of each viewed post, summed): the same quantity without
the noise of the action and dwell draws (negatives are a few per thousand views, too rare to compare policies
by counting them), and the standard error of every figure over sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

from xserve.schema import ACTION_INDEX, ACTIONS, Action
from xserve.synth.oracle import TrueActionModel
from xserve.synth.world import draw_dwell_ms, expected_dwell_ms

__all__ = ["BehaviourConfig", "BehaviourModel", "PageReading", "SessionTally"]

_DWELL = ACTION_INDEX[Action.DWELL]


class BehaviourConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The reader's parameters (the simulator's flags of the same names)."""

    attention_decay: float = 0.9  # P(reading on after a post): position i is viewed with p = decay**i (~10 posts)
    regret_s: float = 30.0  # seconds one negative action costs the unregretted seconds (a bad post spoils more than its dwell)

    def __post_init__(self) -> None:
        if not 0.0 < self.attention_decay <= 1.0:
            raise ValueError(f"attention_decay must be in (0, 1], got {self.attention_decay}")
        if self.regret_s < 0:
            raise ValueError(f"regret_s must be >= 0, got {self.regret_s}")


@dataclass(frozen=True)
class PageReading:
    """What one reader did with one page: the first ``len(viewed)`` posts of the page, in order."""

    viewed: np.ndarray  # (v,) post ids viewed, in page order
    actions: np.ndarray  # (v, A) bool: the actions each viewed post drew (ACTIONS order)
    dwell_ms: np.ndarray  # (v,) int64 dwell milliseconds (0 unless the post drew Action.DWELL)
    read_on: bool  # the reader reached the end of the page and wants the next one
    expected_negative: np.ndarray | None = None  # (v,) the world's P(a negative action) of each viewed post
    expected_unregretted_ms: np.ndarray | None = None  # (v,) its expected dwell without a negative, less the regret

    @property
    def negative(self) -> np.ndarray:
        """(v,) bool: the post drew a negative action (not interested, mute, block, report)."""
        return self.actions[:, _NEGATIVE_COLS].any(axis=1)

    @property
    def engaged(self) -> np.ndarray:
        """(v,) bool: the post drew a positive action other than dwelling on it."""
        return self.actions[:, _ENGAGED_COLS].any(axis=1)


_NEGATIVE_COLS = [ACTION_INDEX[a] for a in (Action.NOT_INTERESTED, Action.MUTE_AUTHOR, Action.BLOCK_AUTHOR,
                                            Action.REPORT)]
_ENGAGED_COLS = [i for i, a in enumerate(ACTIONS) if i not in _NEGATIVE_COLS and a is not Action.DWELL]


class BehaviourModel:
    """``read(rng, user_id, post_ids, now_ms, position)`` -> :class:`PageReading` (see the module docstring)."""

    def __init__(self, truth: TrueActionModel, config: BehaviourConfig = BehaviourConfig()) -> None:
        self.truth, self.config = truth, config
        self._negative = np.asarray(truth.gt["negative_actions"], dtype=bool)

    def __repr__(self) -> str:
        return f"BehaviourModel(attention_decay={self.config.attention_decay}, regret_s={self.config.regret_s})"

    def read(self, rng: np.random.Generator, user_id: int, post_ids: np.ndarray, now_ms: int) -> PageReading:
        """Read ``post_ids`` (a page, in served order) top down at ``now_ms``."""
        post_ids = np.asarray(post_ids, np.int64)
        n = len(post_ids)
        # the cascade: read on after post i with p = decay; the first stop ends the session after that post
        stops = np.flatnonzero(rng.random(n) >= self.config.attention_decay)
        v = int(stops[0]) + 1 if len(stops) else n
        viewed = post_ids[:v]
        sigma, x_aff = self.truth.independent(np.full(v, user_id, np.int64), viewed, np.full(v, now_ms, np.int64))
        actions = rng.random(sigma.shape, dtype=np.float32) < sigma  # (v, A)
        negative = actions[:, self._negative].any(axis=1)
        actions[np.ix_(negative, ~self._negative)] = False  # someone who reports a post does not like it
        dwell = np.where(actions[:, _DWELL], draw_dwell_ms(rng, x_aff), 0).astype(np.int64)
        no_negative = np.prod(1.0 - sigma[:, self._negative].astype(np.float64), axis=1)  # the draws are independent
        expected = sigma[:, _DWELL] * no_negative * expected_dwell_ms(x_aff) - self.config.regret_s * 1000.0 * (1 - no_negative)
        return PageReading(viewed, actions, dwell, read_on=len(stops) == 0, expected_negative=1.0 - no_negative,
                           expected_unregretted_ms=expected)


_SESSION_SUMS = ("viewed", "engaged", "negatives", "dwell_s", "unregretted_s", "expected_negatives",
                 "expected_unregretted_s")  # SessionTally.rows' columns


@dataclass
class SessionTally:
    """Sums of what readers did under one policy; ``figures()`` gives the simulator's per-policy figures.

    ``start_session()`` opens a row of per-session sums (``_SESSION_SUMS``) that ``add`` adds to: the
    standard errors come from the spread of the sessions (a rate's as a ratio of per-session sums)."""

    regret_s: float
    sessions: int = 0
    impressions: int = 0  # viewed posts
    engaged: int = 0  # viewed posts that drew a positive action other than dwell
    negatives: int = 0  # viewed posts that drew a negative action
    dwell_s: float = 0.0
    unregretted_dwell_s: float = 0.0  # dwell on posts without a negative action
    rows: list[list[float]] = field(default_factory=list)  # per session: _SESSION_SUMS

    def start_session(self) -> None:
        self.sessions += 1
        self.rows.append([0.0] * len(_SESSION_SUMS))

    def add(self, reading: PageReading) -> None:
        negative = reading.negative
        self.impressions += len(reading.viewed)
        self.engaged += int(reading.engaged.sum())
        self.negatives += int(negative.sum())
        self.dwell_s += float(reading.dwell_ms.sum()) / 1000.0
        self.unregretted_dwell_s += float(reading.dwell_ms[~negative].sum()) / 1000.0
        if not self.rows:
            self.rows.append([0.0] * len(_SESSION_SUMS))
        row = self.rows[-1]
        unregretted = float(reading.dwell_ms[~negative].sum()) / 1000.0 - self.regret_s * float(negative.sum())
        expected_negative = reading.expected_negative if reading.expected_negative is not None else negative
        expected_ms = (reading.expected_unregretted_ms if reading.expected_unregretted_ms is not None
                       else np.array([unregretted * 1000.0]))
        for i, value in enumerate((len(reading.viewed), reading.engaged.sum(), negative.sum(),
                                   reading.dwell_ms.sum() / 1000.0, unregretted, np.sum(expected_negative),
                                   np.sum(expected_ms) / 1000.0)):
            row[i] += float(value)

    def _per_session(self, name: str) -> tuple[float, float]:
        """(mean over sessions of a per-session sum, its standard error)."""
        x = np.array([r[_SESSION_SUMS.index(name)] for r in self.rows], np.float64)
        n = max(self.sessions, len(x), 1)
        x = np.concatenate([x, np.zeros(n - len(x))])  # sessions that read nothing
        return float(x.sum() / n), float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    def _per_view(self, name: str) -> tuple[float, float]:
        """(Σ name / Σ viewed over sessions, its standard error: the ratio estimator's, by sessions)."""
        rows = np.array(self.rows, np.float64).reshape(-1, len(_SESSION_SUMS))
        y, v = rows[:, _SESSION_SUMS.index(name)], rows[:, 0]
        if v.sum() == 0:
            return 0.0, float("nan")
        ratio, n = float(y.sum() / v.sum()), len(v)
        if n < 2:
            return ratio, float("nan")
        return ratio, float(np.sqrt(np.sum((y - ratio * v) ** 2) / (n * (n - 1))) / v.mean())

    def figures(self) -> dict[str, tuple[float, str]]:
        """name -> (value, unit): ``engagement_rate``, ``negative_rate`` (per viewed post), ``dwell_s_per_session``,
        ``unregretted_s_per_session``, their expectations given the viewed posts (``expected_*``), the standard
        error of each (``<name>_se``), plus the counts they come from."""
        per_view = max(self.impressions, 1)
        per_session = max(self.sessions, 1)
        unregretted = self.unregretted_dwell_s - self.regret_s * self.negatives
        out = {
            "engagement_rate": (self.engaged / per_view, "engaged/viewed"),
            "negative_rate": (self.negatives / per_view, "negative/viewed"),
            "dwell_s_per_session": (self.dwell_s / per_session, "s"),
            "unregretted_s_per_session": (unregretted / per_session, "s"),
            "expected_negative_rate": (self._per_view("expected_negatives")[0], "negative/viewed"),
            "expected_unregretted_s_per_session": (self._per_session("expected_unregretted_s")[0], "s"),
        }
        se = {
            "engagement_rate": self._per_view("engaged")[1],
            "negative_rate": self._per_view("negatives")[1],
            "dwell_s_per_session": self._per_session("dwell_s")[1],
            "unregretted_s_per_session": self._per_session("unregretted_s")[1],
            "expected_negative_rate": self._per_view("expected_negatives")[1],
            "expected_unregretted_s_per_session": self._per_session("expected_unregretted_s")[1],
        }
        for name, error in se.items():
            out[f"{name}_se"] = (error, out[name][1])
        out["sessions"] = (float(self.sessions), "sessions")
        out["viewed"] = (float(self.impressions), "posts")
        return out

    def per_session(self, name: str) -> np.ndarray:
        """(sessions,) one per-session sum (``_SESSION_SUMS``), in session order: for paired comparisons."""
        return np.array([r[_SESSION_SUMS.index(name)] for r in self.rows], np.float64)
