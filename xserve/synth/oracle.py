"""The synthetic world's own action model, as a scorer: the ceiling offline metrics are measured against.

``TrueActionModel(ground_truth)`` takes the arrays ``xserve seed`` writes to ``DATA_DIR/ground_truth.npz``
(the latents and the generative model's own parameters, ``World.ground_truth``) and gives, for any
(user, post, time), the probability of each action *given an impression* of the post to the user at that
time: the world's logistic models (``xserve.synth.world.action_logits``, the very function the generator
draws from), its gates (a photo expand needs a photo, a follow an author not yet followed) and its rule
that a negative action drops the positive ones (so a positive's probability is
``σ(z_a) · Π_negatives (1 − σ(z_n))``).

What it does not know is exposure: which posts a user is shown at all (followed authors, topics,
popularity). A model trained on engaged posts against sampled unengaged ones learns some exposure too,
so it can pass this ceiling on exposure-driven actions (dwell, click) and on retrieval.

``durations(user_ids, post_ids, times)`` gives the world's expected duration of each ``DURATION_ACTIONS``
action given that it happened (seconds; ``xserve.synth.world.expected_durations_ms``), what the ranker's
duration head should learn.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from xserve.synth.world import (
    _affinity,
    _member,
    _sigmoid,
    action_gates,
    action_logits,
    expected_durations_ms,
    expected_dwell_ms,
    impression_features,
)

__all__ = ["ORACLE_KEYS", "TrueActionModel"]

# ground-truth arrays the oracle reads (worlds seeded before it existed lack the last ones)
ORACLE_KEYS = (
    "user_ids", "user_interests", "author_topics", "author_quality", "user_propensity", "post_ids", "post_topic",
    "post_content_author", "num_topics", "post_author", "post_created_at_ms", "post_labelled", "post_has_photo",
    "post_has_video", "post_is_quote", "follow_keys", "action_weights", "negative_actions", "post_has_link",
    "post_video_ms",
)


class TrueActionModel:
    """``model(user_ids, post_ids, times) -> (n, A)`` true action probabilities (see the module docstring)."""

    def __init__(self, ground_truth: Mapping[str, np.ndarray]) -> None:
        missing = [k for k in ORACLE_KEYS if k not in ground_truth]
        if missing:
            raise ValueError(f"the ground truth lacks {', '.join(missing)}: seeded before the oracle existed; "
                             "run `xserve seed --force` again")
        self.gt = {k: np.asarray(ground_truth[k]) for k in ORACLE_KEYS}
        self.num_users = len(self.gt["user_ids"])

    def __repr__(self) -> str:
        return f"TrueActionModel(users={self.num_users}, posts={len(self.gt['post_ids'])})"

    def _features(self, user_ids: np.ndarray, post_ids: np.ndarray, times_ms: np.ndarray):
        gt = self.gt
        user_ids, post_ids = np.asarray(user_ids, np.int64), np.asarray(post_ids, np.int64)
        u = np.minimum(np.searchsorted(gt["user_ids"], user_ids), self.num_users - 1)
        p = np.minimum(np.searchsorted(gt["post_ids"], post_ids), len(gt["post_ids"]) - 1)
        known = (gt["user_ids"][u] == user_ids) & (gt["post_ids"][p] == post_ids)
        content = gt["post_content_author"][p]
        follows = _member(gt["follow_keys"], u.astype(np.int64) * self.num_users + gt["post_author"][p])
        aff = _affinity(gt["user_interests"][u], gt["author_topics"][content], gt["post_topic"][p])
        age_ms = np.maximum(np.asarray(times_ms, np.int64) - gt["post_created_at_ms"][p], 0)
        features = impression_features(aff, int(gt["num_topics"]), gt["author_quality"][content], follows, age_ms,
                                       gt["post_labelled"][p])
        return u, p, known, follows, features

    def durations(self, user_ids: np.ndarray, post_ids: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
        """(n,) ids and impression times → (n, 3) float32 expected seconds of each ``DURATION_ACTIONS`` action given
        it happened; 0 for ids the world does not hold."""
        _, p, known, _, features = self._features(user_ids, post_ids, times_ms)
        seconds = expected_durations_ms(features, self.gt["post_video_ms"][p]) / 1000.0
        return np.where(known[:, None], seconds, 0.0).astype(np.float32)

    def value_inputs(self, user_ids: np.ndarray, post_ids: np.ndarray, times_ms: np.ndarray) -> dict[str, np.ndarray]:
        """What the value model reads of ``n`` impressions, from the truth instead of the ranker: ``scores (n,
        ActionScores fields)`` (the probabilities of :meth:`__call__`, then the dwell seconds given a dwell as
        ``dwell_time`` (the ranker's dwell head learns that too) and :meth:`durations`), ``video_ms``,
        ``has_link`` and ``mutual`` (viewer and author follow each other) per impression."""
        gt = self.gt
        u, p, known, follows, features = self._features(user_ids, post_ids, times_ms)
        dwell_s = np.where(known, expected_dwell_ms(features[:, 1]) / 1000.0, 0.0)
        scores = np.concatenate([self(user_ids, post_ids, times_ms), dwell_s[:, None],
                                 self.durations(user_ids, post_ids, times_ms)], axis=1).astype(np.float64)
        followed_back = _member(gt["follow_keys"], gt["post_author"][p].astype(np.int64) * self.num_users + u)
        return {"scores": scores, "video_ms": np.where(known, gt["post_video_ms"][p], 0),
                "has_link": known & gt["post_has_link"][p].astype(bool), "mutual": known & follows & followed_back}

    def __call__(self, user_ids: np.ndarray, post_ids: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
        """(n,) ids and impression times → (n, A) float32 probabilities in ``ACTIONS`` order; 0 for ids the
        world does not hold (a post created after seeding and not given to ``add_posts``)."""
        prob, _ = self.independent(user_ids, post_ids, times_ms)
        negative = self.gt["negative_actions"]
        no_negative = np.prod(1.0 - prob[:, negative], axis=1, keepdims=True)  # (n, 1)
        prob[:, ~negative] *= no_negative
        return prob

    def independent(self, user_ids: np.ndarray, post_ids: np.ndarray,
                    times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The world's independent draws before its negative rule: ``(n, A)`` gated σ(logit) per action (0 for
        unknown ids) and the ``(n,)`` affinity feature its dwell time grows with (``world.draw_dwell_ms``)."""
        gt = self.gt
        u, p, known, follows, features = self._features(user_ids, post_ids, times_ms)
        prob = _sigmoid(action_logits(features, gt["user_propensity"][u], gt["action_weights"]))  # (n, A)
        prob *= action_gates(gt["post_has_photo"][p], gt["post_has_video"][p], gt["post_is_quote"][p], follows,
                             gt["post_has_link"][p])
        return np.where(known[:, None], prob, 0.0).astype(np.float32), features[:, 1]

    def add_posts(self, post_ids: np.ndarray, author_ids: np.ndarray, topics: np.ndarray,
                  created_at_ms: np.ndarray) -> None:
        """Make plain text posts created after seeding known (ids above every known one; authors are user ids):
        an original by its author, on ``topics``, without media, link or labels."""
        gt, post_ids = self.gt, np.asarray(post_ids, np.int64)
        if len(post_ids) == 0:
            return
        if post_ids.min() <= gt["post_ids"][-1] or np.any(np.diff(post_ids) <= 0):
            raise ValueError("new post ids must be increasing and above every known post id")
        author = np.searchsorted(gt["user_ids"], np.asarray(author_ids, np.int64))
        no, zero = np.zeros(len(post_ids), dtype=bool), np.zeros(len(post_ids), dtype=np.int64)
        for key, value in (("post_ids", post_ids), ("post_author", author), ("post_content_author", author),
                           ("post_topic", topics), ("post_created_at_ms", created_at_ms), ("post_labelled", no),
                           ("post_has_photo", no), ("post_has_video", no), ("post_is_quote", no),
                           ("post_has_link", no), ("post_video_ms", zero)):
            gt[key] = np.concatenate([gt[key], np.asarray(value).astype(gt[key].dtype)])
