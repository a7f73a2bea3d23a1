"""Raw ids and schema records → the ranker's and towers' input tensors.

Everything here is vectorised numpy over whole batches: ids are hashed with the
model's ``PhoenixHasher``, action sets become multi-hot rows in ``ACTIONS``
order, post ages become the reference's age buckets. Id 0 means padding
everywhere; valid history entries come first in each row, padding after.

Two inputs added by issue 17, built here and only here, so training and serving
agree (``tests/phoenix/test_history_parity.py``):

* ``history_age_buckets``: a history entry holding a negative action (not
  interested, mute, block, report) gets ``1 + floor(log2(1 + age_days))`` (capped
  at the last bucket), its age measured from the request's ``now_ms`` (training:
  the example's cut); every other entry gets 0. Only negative entries carry it:
  their fading is what the model should learn, and a positive entry's token then
  stays the same as time passes, so the serving cache keeps reusing it.
* ``context_ids``: the user's context (country, language, client app, declared
  interest topics) as ids of the ``context`` hash table, one field-tagged
  64-bit digest per value (0 = unknown), hashed like every other id.

And one by issue 15, ``content_ids``: the first ``max_content_tokens`` distinct
tokens of a post's text (the muted-keyword tokenizer's: case-folded words and
hashtags, ``xserve.mixer.tokenize``) as ids of the ``content`` table, for every
history entry and candidate. Hash embeddings of ids learn what a post is about
only from its engagements, and a young post has few; its words say it at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import functools
import hashlib

import numpy as np
import torch

from xserve.clock import DAY_MS, HOUR_MS
from xserve.config import PhoenixConfig
from xserve.phoenix.model.embeddings import PhoenixHasher
from xserve.phoenix.model.ranker import NUM_ACTIONS, CandidateBatch, ContextBatch
from xserve.mixer.tokenize import tokenize
from xserve.schema import ACTION_INDEX, NEGATIVE_ACTIONS, HistoryItem, RankCandidate, RankRequest, UserContext

__all__ = ["Featurizer", "action_bits", "age_buckets", "content_ids", "context_ids", "history_age_buckets",
           "multi_hot"]

_BIT_VALUES = (1 << np.arange(NUM_ACTIONS)).astype(np.int64)


def multi_hot(bits: np.ndarray) -> np.ndarray:
    """Action bitmasks ``(...)`` (bit i = ``ACTIONS[i]``) → float32 multi-hot ``(..., A)``."""
    return ((np.asarray(bits, np.int64)[..., None] & _BIT_VALUES) != 0).astype(np.float32)


def action_bits(actions: "frozenset | set | Sequence") -> int:
    """A set of ``Action`` → its bitmask."""
    out = 0
    for a in actions:
        out |= 1 << ACTION_INDEX[a]
    return out


_NEGATIVE_BITS = sum(1 << ACTION_INDEX[a] for a in NEGATIVE_ACTIONS)


def history_age_buckets(bits: np.ndarray, ts_ms: np.ndarray, now_ms: np.ndarray | int, num_buckets: int) -> np.ndarray:
    """Entries' action ``bits`` and times ``(...)`` → the age bucket of those holding a negative action (module
    docstring), 0 for the others and when ``now_ms`` is unknown (≤ 0) or before the entry."""
    now = np.asarray(now_ms, np.int64)
    age = now - np.asarray(ts_ms, np.int64)
    bucket = np.minimum(1 + np.floor(np.log2(1.0 + np.maximum(age, 0) / DAY_MS)).astype(np.int64), num_buckets - 1)
    negative = (np.asarray(bits, np.int64) & _NEGATIVE_BITS) != 0
    return np.where(negative & (now > 0) & (age >= 0), bucket, 0).astype(np.int64)


def _value_id(field: str, value: str) -> int:
    """A field-tagged positive int64 id of a context value (0 for an empty value)."""
    if not value:
        return 0
    digest = hashlib.blake2b(f"{field}\x00{value.strip().lower()}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & (2**63 - 1)) or 1


def context_ids(context: UserContext | None, max_topics: int) -> np.ndarray:
    """A user's context → ``(3 + max_topics,)`` int64 ids: country, language, client app, then the first
    ``max_topics`` declared topics (0 = unknown or absent). Case and surrounding spaces do not matter."""
    out = np.zeros(3 + max_topics, np.int64)
    if context is None:
        return out
    out[0] = _value_id("country", context.country_code)
    out[1] = _value_id("language", context.language_code)
    out[2] = _value_id("client_app", str(context.client_app_id) if context.client_app_id else "")
    for i, topic in enumerate(context.topics[:max_topics]):
        out[3 + i] = _value_id("topic", topic)
    return out


def content_ids(text: str | None, max_tokens: int) -> np.ndarray:
    """A post's text → ``(max_tokens,)`` int64 ids of its first distinct tokens (module docstring), 0 = none."""
    return np.array(_content_ids(text or "", max_tokens), np.int64)


@functools.lru_cache(maxsize=1 << 16)
def _content_ids(text: str, max_tokens: int) -> tuple[int, ...]:
    # cached: a served candidate is scored again and again while it is young, and tokenizing is pure Python
    out = [_value_id("word", token) for token in list(dict.fromkeys(tokenize(text)))[:max_tokens]]
    return tuple(out + [0] * (max_tokens - len(out)))


def age_buckets(created_at_ms: np.ndarray, now_ms: np.ndarray | int, num_buckets: int) -> np.ndarray:
    """``docs/reference.md`` §6.7: ``floor(age_min/60)+1`` (= whole hours + 1), overflow bucket ``num_buckets−1``,
    0 when the creation time is unknown (≤ 0) or in the future."""
    created = np.asarray(created_at_ms, np.int64)
    age = np.asarray(now_ms, np.int64) - created
    bucket = np.minimum(age // HOUR_MS + 1, num_buckets - 1)
    return np.where((created > 0) & (age >= 0), bucket, 0).astype(np.int64)


class Featurizer:
    """Builds ``ContextBatch`` / ``CandidateBatch`` from id arrays with one model's hashes."""

    def __init__(self, config: PhoenixConfig, hasher: PhoenixHasher) -> None:
        self.config = config
        self.hasher = hasher

    def _surface(self, surface: np.ndarray) -> torch.Tensor:
        s = np.asarray(surface, np.int64)
        return torch.from_numpy(np.where((s >= 0) & (s < self.config.product_surface_vocab), s, 0))  # unknown = 0

    def context(self, user_ids: np.ndarray, post_ids: np.ndarray, author_ids: np.ndarray,
                bits: np.ndarray, surface: np.ndarray, history_age: np.ndarray | None = None,
                content: np.ndarray | None = None, user_context: np.ndarray | None = None) -> ContextBatch:
        """``user_ids (B,)``; history ``(B, S)`` arrays with post id 0 for padding (after the valid entries);
        ``history_age (B, S)`` buckets (``history_age_buckets``; None = all 0); ``user_context (B, 3+T)``
        ids (``context_ids``; None = unknown); ``content (B, S, M)`` ids of each post's text (``content_ids``;
        None = no text)."""
        post_ids = np.asarray(post_ids, np.int64)
        pad = post_ids == 0
        age = np.zeros(post_ids.shape, np.int64) if history_age is None else np.asarray(history_age, np.int64)
        age = np.where(pad | (age < 0) | (age >= self.config.history_age_buckets), 0, age)
        ids = (np.zeros((len(post_ids), 3 + self.config.max_context_topics), np.int64) if user_context is None
               else np.asarray(user_context, np.int64))
        return ContextBatch(
            user_hashes=torch.from_numpy(self.hasher("user", np.asarray(user_ids, np.int64))),
            post_hashes=torch.from_numpy(self.hasher("post", post_ids)),
            author_hashes=torch.from_numpy(self.hasher("author", np.where(pad, 0, author_ids))),
            actions=torch.from_numpy(multi_hot(np.where(pad, 0, bits))),
            surface=self._surface(np.where(pad, 0, surface)),
            history_age=torch.from_numpy(age),
            context=torch.from_numpy(self.hasher("context", ids)[..., 0]),
            content=self._content(content, pad),
        )

    def _content(self, ids: np.ndarray | None, pad: np.ndarray) -> torch.Tensor:
        """``(B, N, M)`` content ids (None = no text) → content-table rows, 0 on padding slots."""
        if ids is None:
            return torch.zeros((*pad.shape, self.config.max_content_tokens), dtype=torch.int64)
        ids = np.asarray(ids, np.int64)[..., : self.config.max_content_tokens]
        return torch.from_numpy(np.where(pad[..., None], 0, self.hasher("content", ids)[..., 0]))

    def candidates(self, post_ids: np.ndarray, author_ids: np.ndarray, surface: np.ndarray,
                   age_bucket: np.ndarray, content: np.ndarray | None = None) -> CandidateBatch:
        """Candidate ``(B, C)`` arrays; post id 0 marks a padding slot; ``content (B, C, M)`` (``content_ids``;
        None = no text). A model trained without creation times (``post_age`` off) sees every age as unknown
        (0), as it did in training."""
        post_ids = np.asarray(post_ids, np.int64)
        pad = post_ids == 0
        bucket = np.asarray(age_bucket, np.int64) if self.config.post_age else np.zeros(post_ids.shape, np.int64)
        return CandidateBatch(
            post_hashes=torch.from_numpy(self.hasher("post", post_ids)),
            author_hashes=torch.from_numpy(self.hasher("author", np.where(pad, 0, author_ids))),
            surface=self._surface(np.where(pad, 0, surface)),
            age_bucket=torch.from_numpy(np.where((bucket >= 0) & (bucket < self.config.age_buckets) & ~pad, bucket, 0)),
            content=self._content(content, pad),
        )

    def history_arrays(self, histories: Sequence[Sequence[HistoryItem]],
                       now_ms: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
        """Newest ``history_len`` items of each history, oldest first, padded to the longest → 5 ``(B, S)`` arrays:
        post, author, action bits, surface, and the age bucket (``history_age_buckets`` from ``now_ms``, one per
        history; None = all 0), then the ``(B, S, M)`` content ids of each item's text (``content_ids``): the
        first arguments of ``context`` after the user ids."""
        keep = [sorted(h, key=lambda it: it.timestamp_ms)[-self.config.history_len :] for h in histories]
        s, m = max([len(h) for h in keep] + [1]), self.config.max_content_tokens
        out = [np.zeros((len(keep), s), np.int64) for _ in range(5)] + [np.zeros((len(keep), s, m), np.int64)]
        for i, items in enumerate(keep):
            for j, it in enumerate(items):
                out[0][i, j], out[1][i, j] = it.post_id, it.author_id
                out[2][i, j], out[3][i, j] = action_bits(it.actions), int(it.product_surface)
                out[4][i, j] = it.timestamp_ms
            out[5][i, : len(items)] = self.text_content([it.text for it in items])
        now = np.zeros(len(keep), np.int64) if now_ms is None else np.asarray(now_ms, np.int64)
        out[4] = history_age_buckets(out[2], out[4], now[:, None], self.config.history_age_buckets)
        return tuple(out)

    def text_content(self, texts: Sequence[str]) -> np.ndarray:
        """Post texts → ``(n, M)`` content ids (``content_ids``; "" = none)."""
        m = self.config.max_content_tokens
        return np.array([_content_ids(t, m) for t in texts], np.int64).reshape(len(texts), m)

    def user_contexts(self, contexts: Sequence[UserContext | None]) -> np.ndarray:
        """``(B, 3 + max_context_topics)`` context ids of a batch (``context_ids``)."""
        t = self.config.max_context_topics
        return np.stack([context_ids(c, t) for c in contexts]) if contexts else np.zeros((0, 3 + t), np.int64)

    def from_requests(self, requests: Sequence[RankRequest]) -> tuple[ContextBatch, CandidateBatch]:
        """A batch of ``RankRequest`` → (context, candidates); candidate slots padded to the longest request."""
        history = self.history_arrays([r.history for r in requests], [r.now_ms for r in requests])
        ctx = self.context(np.array([r.user_id for r in requests], np.int64), *history,
                           user_context=self.user_contexts([r.context for r in requests]))
        c, m = max([len(r.candidates) for r in requests] + [1]), self.config.max_content_tokens
        cand = np.zeros((4, len(requests), c), np.int64)
        content = np.zeros((len(requests), c, m), np.int64)
        for i, r in enumerate(requests):
            for j, rc in enumerate(r.candidates):
                cand[:, i, j] = self._candidate_row(rc, r.now_ms)
            content[i, : len(r.candidates)] = self.text_content([rc.text for rc in r.candidates])
        return ctx, self.candidates(cand[0], cand[1], cand[2], cand[3], content)

    def _candidate_row(self, c: RankCandidate, now_ms: int) -> tuple[int, int, int, int]:
        created = 0 if c.created_at_ms is None or now_ms <= 0 else c.created_at_ms
        bucket = int(age_buckets(np.array(created), now_ms, self.config.age_buckets))
        return c.post_id, c.author_id, int(c.product_surface), bucket
