"""A seeded synthetic world with a known ground truth: users, a follow graph, posts and engagements.

Pure NumPy (no storage imports): :func:`generate_world` returns a :class:`World`
whose tables are dicts of equal-length columns named and typed as the data
directory's schemas (``xserve.storage.lance.tables``), so ``DataDir.write_*`` takes
them as they are. The generative model is documented in
``docs/synthetic_world.md``; in short:

* every user has latent interests ``theta_u`` (Dirichlet over K topics), an
  activity level, a popularity (Pareto: followers follow a power law) and, as an
  author, a topic mixture ``phi_a`` and a quality ``q_a``;
* users follow ``~ popularity x exp(beta * theta_u . phi_a)`` authors;
* posts (originals, replies in conversations, reposts, quotes; photos, videos,
  subscriber-only) are spread over ``span_days`` up to ``now_ms``, denser
  towards ``now_ms``;
* impressions come from followed authors (in-network) and from topic- or
  popularity-driven discovery (out-of-network); each impression yields actions
  drawn independently from logistic models of affinity ``theta_u . tau_p``,
  author quality, follow status and recency (negatives favour low affinity,
  low quality and labelled posts and suppress the positives).

Same ``rng`` seed and ``now_ms`` => identical arrays. :func:`affinity` scores
any (user, post) pairs under the ground truth, for evaluation sanity checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from xserve.clock import DAY_MS, HOUR_MS
from xserve.schema import DURATION_ACTIONS, ACTION_INDEX, ACTIONS, Action, ProductSurface, VisibilityLabel

__all__ = [
    "POST_ID_BASE",
    "WORLD_SIZES",
    "World",
    "WorldSpec",
    "affinity",
    "draw_dwell_ms",
    "expected_dwell_ms",
    "generate_world",
]

POST_ID_BASE = 1_000_000_000  # post ids start here so they never collide with user ids (1..num_users)

_EDGE_KINDS = ("follow", "block", "mute", "subscribe")  # the data directory's EDGE_KINDS

# post kinds (internal codes)
_ORIGINAL, _REPLY, _REPOST, _QUOTE = 0, 1, 2, 3

_TOPIC_WORDS = [
    ("sports", "goal match league coach season score playoff stadium"),
    ("music", "album song tour concert guitar lyrics band vinyl"),
    ("tech", "chip model code startup cloud gpu compiler launch"),
    ("politics", "vote senate policy debate election bill campaign poll"),
    ("science", "study cell quantum galaxy data experiment theory fossil"),
    ("gaming", "quest patch speedrun console boss loot arena mod"),
    ("food", "recipe bread spicy ramen coffee brunch kitchen vegan"),
    ("film", "trailer actor sequel scene director premiere oscar script"),
    ("finance", "market stock rate bond crypto earnings inflation fund"),
    ("travel", "flight beach hostel passport island train hike map"),
    ("fashion", "style runway sneaker denim vintage fit designer drop"),
    ("health", "sleep workout protein clinic run yoga vitamin therapy"),
    ("art", "paint sketch gallery canvas mural sculpture ink studio"),
    ("books", "novel chapter author poetry library fiction memoir read"),
    ("pets", "puppy cat rescue vet leash kitten paws treat"),
    ("weather", "storm rain heatwave forecast snow wind cloud sunny"),
]


class WorldSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Size and ground-truth parameters of a synthetic world (presets in ``WORLD_SIZES``)."""

    name: str
    num_users: int
    num_posts: int
    num_engagements: int  # target; the generated count is within a few percent
    num_topics: int = 16  # K latent topics (at most len(_TOPIC_WORDS) have names; more are "topicN")
    span_days: float = 7.0  # posts are created in [now - span, now]
    recency_power: float = 1.5  # age = span * u**power: > 1 puts more posts near now (~43% within 48 h)
    interest_alpha: float = 0.25  # Dirichlet concentration of user interests (small = focused users)
    author_alpha: float = 0.15  # Dirichlet concentration of author topic mixtures
    popularity_pareto: float = 1.1  # Pareto shape of author popularity (followers ~ power law)
    mean_follows: float = 40.0  # mean out-degree of the follow graph
    follow_affinity_beta: float = 4.0  # follow weight exp(beta * theta . phi)
    reply_share: float = 0.22  # post kinds (the rest are originals)
    repost_share: float = 0.11
    quote_share: float = 0.05
    photo_share: float = 0.22  # of originals and quotes (replies: a quarter of it)
    video_share: float = 0.12  # of originals and quotes (replies: a quarter of it)
    video_median_ms: float = 14_000.0  # lognormal video durations: ~38% shorter than 10 s
    subscription_share: float = 0.2  # of a subscription author's originals
    low_quality_share: float = 0.06  # authors with low quality (spammy): most negatives land on them
    in_network_share: float = 0.5  # impressions from followed authors
    topic_discovery_share: float = 0.6  # of out-of-network impressions: topic-driven (rest: popularity)
    impression_delay_hours: float = 10.0  # mean delay from creation to impression (truncated at now)
    chunk_impressions: int = 65_536  # impressions per vectorised chunk: (chunk, 18) arrays stay in cache (5x vs 1M)


WORLD_SIZES: dict[str, WorldSpec] = {
    "tiny": WorldSpec(name="tiny", num_users=200, num_posts=3_000, num_engagements=30_000, mean_follows=20.0),
    "small": WorldSpec(name="small", num_users=2_000, num_posts=30_000, num_engagements=300_000),
    "medium": WorldSpec(name="medium", num_users=10_000, num_posts=200_000, num_engagements=2_000_000),
    "large": WorldSpec(
        name="large", num_users=100_000, num_posts=1_000_000, num_engagements=5_000_000, mean_follows=60.0
    ),
}

# Ground-truth action model: logit = bias + w_aff*x_aff + w_q*(q-0.5) + w_follow*f + w_rec*recency
#   + w_label*labelled + user propensity. x_aff = log((aff+0.01)/(1/K+0.01)) is 0 at average affinity.
# Columns: bias, w_aff, w_q, w_follow, w_rec, w_label.
_ACTION_MODEL: dict[Action, tuple[float, float, float, float, float, float]] = {
    # Dwell and clicks follow exposure more than interest; the explicit actions follow interest and quality
    # strongly, so they stay predictable among engaged impressions (the only ones the log keeps).
    Action.DWELL: (-1.18, 0.25, 0.4, 0.2, 0.5, 0.0),
    Action.CLICK: (-3.12, 0.4, 0.6, 0.2, 0.4, 0.0),
    Action.FAVORITE: (-5.91, 1.8, 3.0, 0.8, 0.5, -1.0),
    Action.REPLY: (-8.0, 1.5, 2.0, 1.2, 0.6, 0.0),
    Action.REPOST: (-7.88, 1.6, 3.0, 0.8, 0.5, -1.0),
    Action.QUOTE: (-8.65, 1.4, 2.0, 0.6, 0.5, 0.0),
    Action.PROFILE_CLICK: (-5.37, 0.8, 1.0, -0.6, 0.2, 0.0),
    Action.PHOTO_EXPAND: (-2.54, 0.9, 1.0, 0.2, 0.3, 0.0),  # photo posts only
    Action.VIDEO_QUALITY_VIEW: (-1.61, 1.2, 2.0, 0.2, 0.3, 0.0),  # video posts only
    Action.SHARE: (-8.37, 1.5, 2.5, 0.2, 0.4, 0.0),
    Action.SHARE_VIA_DM: (-8.56, 1.5, 2.5, 0.2, 0.4, 0.0),
    Action.SHARE_VIA_COPY_LINK: (-9.06, 1.5, 2.5, 0.2, 0.4, 0.0),
    Action.QUOTED_CLICK: (-3.05, 0.8, 0.5, 0.0, 0.2, 0.0),  # quote posts only
    Action.FOLLOW_AUTHOR: (-7.83, 1.8, 3.0, 0.0, 0.2, -1.0),  # authors not yet followed only
    Action.NOT_INTERESTED: (-4.99, -1.2, -4.0, -1.0, 0.0, 1.5),
    Action.MUTE_AUTHOR: (-6.63, -1.0, -4.0, -1.0, 0.0, 1.5),
    Action.BLOCK_AUTHOR: (-7.48, -1.0, -5.0, -1.0, 0.0, 2.0),
    Action.REPORT: (-8.9, -0.8, -5.0, -0.5, 0.0, 3.5),
    Action.VIDEO_OPEN: (-1.9, 1.0, 1.5, 0.2, 0.3, 0.0),  # video posts only
    Action.LINK_OPEN: (-2.8, 0.8, 1.0, 0.1, 0.3, 0.0),  # posts with an outbound link only
}
# The actions the January reference predicts (drawn first, with the world's one generator, so a world of a
# given seed keeps every one of their rows); the later ones and every duration come from a child generator.
_REFERENCE_ACTIONS = 18

# Durations of DURATION_ACTIONS (``schema.DURATION_ACTIONS`` order: watch after a video open, profile visit after a
# profile click, time on the post after a click): lognormal, log-median = log(base) + w_aff·x_aff + w_q·(q−0.5), with
# spread sigma; a watch never outlasts the video. Columns: base ms, w_aff, w_q, sigma.
_DURATION_MODEL = np.array([
    (8_000.0, 0.5, 1.0, 0.7),
    (6_000.0, 0.4, 0.5, 0.8),
    (15_000.0, 0.5, 1.0, 0.9),
])
_LINK_SHARE = 0.15  # originals and quotes carrying an outbound link
_COUNTRIES = ("us", "gb", "in", "br", "jp", "de", "fr", "ng")
_LANGUAGES = ("en", "en", "hi", "pt", "ja", "de", "fr", "en")  # each country's usual language
_CLIENT_APPS = (1, 2, 3)  # iOS, Android, web
_DECLARE_SHARE = 0.6  # users who declare interest topics (their two strongest)
_NEGATIVES = (Action.NOT_INTERESTED, Action.MUTE_AUTHOR, Action.BLOCK_AUTHOR, Action.REPORT)


@dataclass
class World:
    """Columns of each table (NumPy arrays / lists, data-directory schema names) plus the ground truth.

    ``ground_truth`` keys: ``user_ids (U,)``, ``user_interests (U,K) f32``, ``author_topics (U,K) f32``,
    ``author_quality (U,) f32``, ``author_popularity (U,) f32``, ``user_propensity (U,) f32``,
    ``post_ids (P,)``, ``post_topic (P,) i16``, ``post_content_author (P,)`` (user index of the author whose
    topic mixture the content follows: the original's author for reposts), ``num_topics``; and the action
    model's inputs and parameters (``xserve.synth.oracle.ORACLE_KEYS``): post author, creation time, labels,
    media and quote flags, ``follow_keys``, ``action_weights (6, A)``, ``negative_actions (A,)``.
    """

    spec: WorldSpec
    seed: int | None
    now_ms: int
    users: dict[str, Any]
    posts: dict[str, Any]
    edges: dict[str, Any]
    engagements: dict[str, Any]
    ground_truth: dict[str, np.ndarray]
    num_impressions: int = 0  # simulated impressions (engagements are the actions they produced)
    timings_s: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)[key]) for name, key in
                (("users", "user_id"), ("posts", "post_id"), ("edges", "user_id"), ("engagements", "user_id"))}

    def meta(self) -> dict[str, Any]:
        """The ``world`` entry for the data directory's meta.json."""
        return {
            "name": "synthetic",
            "size": self.spec.name,
            "seed": self.seed,
            "now_ms": self.now_ms,
            "num_topics": self.spec.num_topics,
            "spec": msgspec.to_builtins(self.spec),
            "counts": self.counts(),
            "num_impressions": self.num_impressions,
        }


# --------------------------------------------------------------------------- helpers


def _categorical_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (rows sum to 1), vectorised inverse-CDF sampling."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


def _csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Order of ``keys`` grouped by key, and offsets (n+1,) into it."""
    order = np.argsort(keys, kind="stable")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=offsets[1:])
    return order, offsets


def _pick_in_groups(rng: np.random.Generator, groups: np.ndarray, order: np.ndarray, offsets: np.ndarray):
    """A uniform member of each given group (-1 where the group is empty)."""
    size = offsets[groups + 1] - offsets[groups]
    pos = offsets[groups] + (rng.random(len(groups)) * size).astype(np.int64)
    return np.where(size > 0, order[np.minimum(pos, len(order) - 1)], -1)


def _pointer_jump(up: np.ndarray) -> np.ndarray:
    """Follow ``up`` (each entry points at an earlier or the same index) to its fixed point."""
    up = up.copy()
    while True:
        nxt = up[up]
        if np.array_equal(nxt, up):
            return up
        up = nxt


def _sorted_search(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted``, with the queries sorted first when the table outgrows the caches (neighbouring
    searches then share cache lines: ~3x faster); small tables are searched directly."""
    if len(sorted_keys) < 300_000:
        return np.searchsorted(sorted_keys, queries)
    order = np.argsort(queries)
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(sorted_keys, queries[order])
    return out


def _sample_cdf(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n draws of an index with probability proportional to the increments of the (unnormalised) ``cdf``."""
    return np.minimum(_sorted_search(cdf, rng.random(n) * cdf[-1]), len(cdf) - 1)


def _member(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.isin(queries, sorted_keys)`` by binary search (isin hashes both sides: several times slower here)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=bool)
    pos = np.minimum(_sorted_search(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[pos] == queries


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def _x_aff(aff: np.ndarray, k: int) -> np.ndarray:
    return np.log((aff + 0.01) / (1.0 / k + 0.01))


# --------------------------------------------------------------------------- the action model (the oracle uses it too)

IMPRESSION_FEATURES = ("bias", "affinity", "quality", "follows", "recency", "labelled")  # rows of action_weights()


def action_weights() -> np.ndarray:
    """(6, A) float32: ``_ACTION_MODEL`` in ``ACTIONS`` order, one row per ``IMPRESSION_FEATURES`` entry."""
    return np.array([_ACTION_MODEL[a] for a in ACTIONS], dtype=np.float32).T


def _affinity(interests: np.ndarray, content_topics: np.ndarray, topic: np.ndarray) -> np.ndarray:
    """(n,) theta_u . tau_p with tau_p = 0.75 e_topic + 0.25 phi_content_author; rows of (n, K) arrays."""
    topic_vec = 0.25 * content_topics
    topic_vec[np.arange(len(topic)), topic] += 0.75
    return np.einsum("ij,ij->i", interests, topic_vec)


def impression_features(aff: np.ndarray, k: int, content_quality: np.ndarray, follows: np.ndarray,
                        age_ms: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """(n, 6) float32 features of impressions, in ``IMPRESSION_FEATURES`` order."""
    # float32 throughout: NumPy's float64 exp is ~10x slower and precision is irrelevant here.
    return np.stack(
        [
            np.ones(len(aff), dtype=np.float32),
            _x_aff(aff, k).astype(np.float32),
            content_quality - np.float32(0.5),
            follows.astype(np.float32),
            np.exp(-age_ms / DAY_MS).astype(np.float32),
            labelled.astype(np.float32),
        ],
        axis=1,
    )


def action_logits(features: np.ndarray, propensity: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, A) logit of every action per impression: features ``(n, 6)`` · weights ``(6, A)`` + the viewer's propensity."""
    # A sum of outer products rather than a matmul: BLAS threads spinning after a tiny-K matmul
    # starved the single-threaded code that follows on a 2-core box.
    logits = propensity[:, None] + weights[0]  # (n, A)
    for f in range(1, features.shape[1]):
        logits += features[:, f : f + 1] * weights[f]
    return logits


def duration_params(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impression ``features (n, 6)`` → log-median ``(n, 3)`` and sigma ``(3,)`` of the ``DURATION_ACTIONS``
    durations in ms (``_DURATION_MODEL``; the oracle's expected durations use it too)."""
    m = _DURATION_MODEL
    mu = np.log(m[:, 0]) + features[:, 1:2] * m[:, 1] + features[:, 2:3] * m[:, 2]  # (n, 3)
    return mu, m[:, 3]


def expected_durations_ms(features: np.ndarray, video_ms: np.ndarray) -> np.ndarray:
    """(n, 3) mean duration of each ``DURATION_ACTIONS`` action given it happened (watch capped at the video)."""
    mu, sigma = duration_params(features)
    mean = np.exp(mu + sigma**2 / 2)
    mean[:, 0] = np.minimum(mean[:, 0], np.maximum(video_ms, 0))
    return mean


_DWELL_MEDIAN_MS, _DWELL_W_AFF, _DWELL_SIGMA = 4_000.0, 0.4, 0.8  # dwell ~ lognormal(log median + w_aff·x_aff, sigma)


def draw_dwell_ms(rng: np.random.Generator, x_aff: np.ndarray) -> np.ndarray:
    """(n,) dwell milliseconds of impressions that drew ``Action.DWELL``: lognormal around 4 s, longer with
    affinity (``x_aff``: the ``affinity`` column of ``impression_features``), clipped to [0.3 s, 10 min]."""
    return np.clip(rng.lognormal(np.log(_DWELL_MEDIAN_MS) + _DWELL_W_AFF * x_aff, _DWELL_SIGMA), 300, 600_000)


def expected_dwell_ms(x_aff: np.ndarray) -> np.ndarray:
    """(n,) mean of :func:`draw_dwell_ms` given a dwell (the lognormal's mean; the clip moves it < 0.1 %)."""
    return np.exp(np.log(_DWELL_MEDIAN_MS) + _DWELL_W_AFF * np.asarray(x_aff, np.float64) + _DWELL_SIGMA**2 / 2)


def action_gates(has_photo: np.ndarray, has_video: np.ndarray, is_quote: np.ndarray, follows: np.ndarray,
                 has_link: np.ndarray | None = None) -> np.ndarray:
    """(n, A) bool: which actions an impression can produce at all (photo expands need a photo, ...)."""
    gates = np.ones((len(has_photo), len(ACTIONS)), dtype=bool)
    col = ACTION_INDEX
    gates[:, col[Action.PHOTO_EXPAND]] = has_photo
    gates[:, col[Action.VIDEO_QUALITY_VIEW]] = has_video
    gates[:, col[Action.VIDEO_OPEN]] = has_video
    gates[:, col[Action.LINK_OPEN]] = False if has_link is None else has_link
    gates[:, col[Action.QUOTED_CLICK]] = is_quote
    gates[:, col[Action.FOLLOW_AUTHOR]] = ~follows
    return gates


# --------------------------------------------------------------------------- users and graph


def _users(spec: WorldSpec, rng: np.random.Generator, now_ms: int) -> dict[str, np.ndarray]:
    u, k = spec.num_users, spec.num_topics
    return {
        "interests": rng.dirichlet(np.full(k, spec.interest_alpha), size=u).astype(np.float32),
        "topics": rng.dirichlet(np.full(k, spec.author_alpha), size=u).astype(np.float32),
        "popularity": (rng.pareto(spec.popularity_pareto, size=u) + 1.0).astype(np.float32),
        "activity": rng.lognormal(0.0, 1.0, size=u),
        "quality": np.where(
            rng.random(u) < spec.low_quality_share, rng.beta(1.0, 6.0, size=u), rng.beta(5.0, 2.0, size=u)
        ).astype(np.float32),
        "propensity": rng.normal(0.0, 0.4, size=u).astype(np.float32),
        "created_at_ms": now_ms - (rng.uniform(30, 3650, size=u) * DAY_MS).astype(np.int64),
    }


def _follow_graph(spec: WorldSpec, rng: np.random.Generator, people: dict[str, np.ndarray]):
    """(follower index, followee index) pairs: per user ~lognormal out-degree, Gumbel-top-n of 4n
    popularity-proportional candidates keyed by beta * affinity (minus repeats, so a little fewer)."""
    n_users = spec.num_users
    mu = np.log(spec.mean_follows) - 0.5
    degree = np.clip(rng.lognormal(mu, 1.0, size=n_users), 1, min(n_users - 1, 5_000)).astype(np.int64)
    src = np.repeat(np.arange(n_users), 4 * degree)
    dst = _sample_cdf(rng, np.cumsum(people["popularity"].astype(np.float64)), len(src))
    key = np.empty(len(src), dtype=np.float32)
    for lo in range(0, len(src), 2_000_000):  # bounded (chunk, K) temporaries
        s, d = src[lo : lo + 2_000_000], dst[lo : lo + 2_000_000]
        aff = np.einsum("ij,ij->i", people["interests"][s], people["topics"][d])
        key[lo : lo + len(s)] = spec.follow_affinity_beta * aff
    key += rng.gumbel(size=len(src)).astype(np.float32)
    keep = src != dst
    src, dst, key = src[keep], dst[keep], key[keep]
    # By user, best key first: one argsort of "user index minus a (0, 1) squashing of the key" instead of a
    # two-key lexsort (several times slower at 24M candidates).
    squashed = np.float32(1.0) / (np.float32(1.0) + np.exp(key / np.float32(-8.0)))  # float32 exp: ~10x faster
    order = np.argsort(src - squashed.astype(np.float64))
    src, dst = src[order], dst[order]

    def best(src, dst, n):  # the first n[user] rows of each user (rows are grouped by user)
        rank = np.arange(len(src)) - np.searchsorted(src, np.arange(n_users))[src]
        keep = rank < n[src]
        return src[keep], dst[keep]

    # A popular author is often drawn twice: drop repeats among each user's best 2n (a smaller sort than over
    # all 4n), then keep the best n.
    src, dst = best(src, dst, 2 * degree)
    _, first = np.unique(src * n_users + dst, return_index=True)
    first.sort()
    return best(src[first], dst[first], degree)


# --------------------------------------------------------------------------- posts


def _posts(spec: WorldSpec, rng: np.random.Generator, people: dict[str, np.ndarray], now_ms: int,
           extra_rng: np.random.Generator):
    n, k = spec.num_posts, spec.num_topics
    weight = people["popularity"].astype(np.float64) ** 0.5 * people["activity"]
    author = rng.choice(spec.num_users, size=n, p=weight / weight.sum())
    age = spec.span_days * DAY_MS * rng.random(n) ** spec.recency_power
    created = np.sort(now_ms - age.astype(np.int64))  # index order == time order == post id order
    kind = rng.choice(4, size=n, p=[1 - spec.reply_share - spec.repost_share - spec.quote_share,
                                    spec.reply_share, spec.repost_share, spec.quote_share])
    kind[: min(n, 20)] = _ORIGINAL  # the first posts have nothing earlier to point at
    idx = np.arange(n)
    gap = np.floor(rng.exponential(0.02 * n, size=n)).astype(np.int64)
    parent = np.where(kind == _ORIGINAL, idx, np.clip(idx - 1 - gap, 0, None))
    # Reposts are never parents: point at what the repost reposts (indices only decrease).
    is_repost = kind == _REPOST
    while True:
        redirect = (parent != idx) & is_repost[parent]
        if not redirect.any():
            break
        parent[redirect] = parent[parent[redirect]]
    # Conversation root of a reply: climb replies until a non-reply.
    up = np.where(kind == _REPLY, parent, idx)
    root = _pointer_jump(up)

    topic = _categorical_rows(rng, people["topics"][author]).astype(np.int16)
    content_author = author.copy()
    # Replies follow the topic of their conversation, reposts carry the original's topic and author mixture.
    topic = np.where(kind == _REPLY, topic[root], topic)
    topic = np.where(is_repost, topic[parent], topic)
    content_author[is_repost] = author[parent[is_repost]]

    media_scale = np.where(kind == _REPLY, 0.25, np.where(is_repost, 0.0, 1.0))
    u = rng.random(n)
    has_photo = u < spec.photo_share * media_scale
    has_video = (u >= spec.photo_share * media_scale) & (u < (spec.photo_share + spec.video_share) * media_scale)
    duration = np.clip(rng.lognormal(np.log(spec.video_median_ms), 1.0, size=n), 1_000, 3_600_000).astype(np.int64)

    offers_subscription = (people["popularity"] > np.quantile(people["popularity"], 0.97)) & (
        rng.random(spec.num_users) < 0.5
    )
    subscription_only = (kind == _ORIGINAL) & offers_subscription[author] & (rng.random(n) < spec.subscription_share)
    label_p = np.where(people["quality"][author] < 0.2, 0.05, 0.002) * (kind != _REPOST)
    labelled = rng.random(n) < label_p
    label_names = np.array([VisibilityLabel.SPAM, VisibilityLabel.NSFW, VisibilityLabel.HATE,
                            VisibilityLabel.VIOLENCE], dtype=object)
    label_pick = label_names[rng.integers(0, len(label_names), size=n)]
    labels = [[label_pick[i]] if labelled[i] else [] for i in range(n)]

    text = _texts(rng, topic, k)
    text = np.where(is_repost, "", text)
    has_link = ((kind == _ORIGINAL) | (kind == _QUOTE)) & (extra_rng.random(n) < _LINK_SHARE)
    post_ids = POST_ID_BASE + idx
    user_ids = author + 1
    ref = lambda mask, arr: np.where(mask, arr, None).astype(object)  # noqa: E731 - nullable id column
    reply = kind == _REPLY
    posts = {
        "post_id": post_ids,
        "author_id": user_ids,
        "created_at_ms": created,
        "text": text.tolist(),
        "in_reply_to_post_id": ref(reply, post_ids[parent]),
        "in_reply_to_user_id": ref(reply, user_ids[parent]),
        "repost_of_post_id": ref(is_repost, post_ids[parent]),
        "repost_of_user_id": ref(is_repost, user_ids[parent]),
        "quote_of_post_id": ref(kind == _QUOTE, post_ids[parent]),
        "conversation_id": ref(reply, post_ids[root]),
        "video_duration_ms": ref(has_video, duration),
        "has_photo": has_photo,
        "subscription_only": subscription_only,
        "labels": labels,
        "has_link": has_link,
    }
    internal = {
        "author": author, "kind": kind, "parent": parent, "topic": topic, "content_author": content_author,
        "created": created, "has_photo": has_photo, "has_video": has_video, "labelled": labelled,
        "subscription_only": subscription_only, "offers_subscription": offers_subscription,
        "has_link": has_link, "video_ms": np.where(has_video, duration, 0),
    }
    return posts, internal


def _texts(rng: np.random.Generator, topic: np.ndarray, k: int) -> np.ndarray:
    names = [(_TOPIC_WORDS[t][0] if t < len(_TOPIC_WORDS) else f"topic{t}") for t in range(k)]
    words = [(_TOPIC_WORDS[t][1].split() if t < len(_TOPIC_WORDS) else [f"w{t}_{i}" for i in range(8)])
             for t in range(k)]
    vocab = np.array([w for ws in words for w in ws], dtype=np.dtypes.StringDType())
    tags = np.array([f" #{name}" for name in names], dtype=np.dtypes.StringDType())
    out = vocab[topic * 8 + rng.integers(0, 8, size=len(topic))]
    extra = rng.integers(2, 5, size=len(topic))  # 3 to 5 words per post
    for i in range(4):
        word = np.strings.add(" ", vocab[topic * 8 + rng.integers(0, 8, size=len(topic))])
        out = np.where(i < extra, np.strings.add(out, word), out)
    return np.strings.add(out, tags[topic])


# --------------------------------------------------------------------------- engagements


def _impressions(spec, rng, n, people, posts, follow_csr, topic_csr, cdfs, sub_keys):
    """n (viewer index, post index, in_network) impressions; own and unsubscribed subscriber-only posts dropped."""
    n_users = spec.num_users
    activity_cdf, popularity_cdf = cdfs
    viewer = _sample_cdf(rng, activity_cdf, n)
    in_net = rng.random(n) < spec.in_network_share
    f_order, f_off, f_dst, p_order, p_off = follow_csr
    followee = _pick_in_groups(rng, viewer, f_order, f_off)
    followee = np.where(followee >= 0, f_dst[np.maximum(followee, 0)], -1)
    in_post = _pick_in_groups(rng, np.maximum(followee, 0), p_order, p_off)
    in_net &= (followee >= 0) & (in_post >= 0)
    t_order, t_off = topic_csr
    topic = _categorical_rows(rng, people["interests"][viewer])
    topic_post = _pick_in_groups(rng, topic, t_order, t_off)
    pop_post = _sample_cdf(rng, popularity_cdf, n)
    use_topic = (rng.random(n) < spec.topic_discovery_share) & (topic_post >= 0)
    post = np.where(in_net, in_post, np.where(use_topic, topic_post, pop_post))
    author = posts["author"][post]
    ok = author != viewer
    needs_sub = posts["subscription_only"][post]
    ok &= ~needs_sub | _member(sub_keys, viewer.astype(np.int64) * n_users + author)
    return viewer[ok], post[ok], in_net[ok]


def _act(spec, rng, extra_rng, viewer, post, in_net, people, posts, follow_keys, now_ms):
    """Simulate the actions of each impression; returns engagement columns (internal indices)."""
    n, k = len(viewer), spec.num_topics
    created = posts["created"][post]
    horizon = np.maximum(now_ms - created, 1).astype(np.float64)
    tau = spec.impression_delay_hours * HOUR_MS
    delay = -tau * np.log1p(-rng.random(n) * -np.expm1(-horizon / tau))  # truncated exponential on [0, horizon]
    t = created + np.minimum(delay, horizon - 1).astype(np.int64)
    content_author = posts["content_author"][post]
    aff = _affinity(people["interests"][viewer], people["topics"][content_author], posts["topic"][post])
    author = posts["author"][post]
    follows = _member(follow_keys, viewer.astype(np.int64) * spec.num_users + author)
    features = impression_features(aff, k, people["quality"][content_author], follows, t - created,
                                   posts["labelled"][post])
    logits = action_logits(features, people["propensity"][viewer], action_weights())
    u = np.concatenate([rng.random((n, _REFERENCE_ACTIONS), dtype=np.float32),
                        extra_rng.random((n, len(ACTIONS) - _REFERENCE_ACTIONS), dtype=np.float32)], axis=1)
    hits = u < _sigmoid(logits)  # (n, A)
    hits &= action_gates(posts["has_photo"][post], posts["has_video"][post], posts["kind"][post] == _QUOTE, follows,
                         posts["has_link"][post])
    col = ACTION_INDEX
    negative = hits[:, [col[a] for a in _NEGATIVES]].any(axis=1)
    positive_cols = [col[a] for a in ACTIONS if a not in _NEGATIVES]
    hits[np.ix_(negative, positive_cols)] = False  # someone who reports a post does not like it

    # The reference actions' rows draw from the world's generator exactly as before issue 17; the later actions'
    # rows, and every duration, from the child generator.
    old = _rows(rng, hits[:, :_REFERENCE_ACTIONS], 0, t, in_net, post, posts, features, now_ms)
    new = _rows(extra_rng, hits[:, _REFERENCE_ACTIONS:], _REFERENCE_ACTIONS, t, in_net, post, posts, features, now_ms)
    rows, action = np.r_[old[0], new[0]], np.r_[old[1], new[1]]
    dwell, surface, ts = (np.r_[a, b] for a, b in zip(old[2:], new[2:], strict=True))
    # The DURATION_ACTIONS rows carry their own duration in dwell_ms.
    mu, sigma = duration_params(features[rows])
    own = np.exp(mu + sigma * extra_rng.standard_normal(mu.shape))  # (rows, 3) ms
    own[:, 0] = np.minimum(own[:, 0], posts["video_ms"][post[rows]])
    for j, a in enumerate(DURATION_ACTIONS):
        dwell = np.where(action == col[a], np.clip(own[:, j], 300, 3_600_000).astype(np.int64), dwell)
    return {
        "viewer": viewer[rows], "post": post[rows], "action": action.astype(np.int8), "timestamp_ms": ts,
        "dwell_ms": dwell, "product_surface": surface.astype(np.int32),
    }


def _rows(rng, hits, first_action, t, in_net, post, posts, features, now_ms):
    """The actions ``hits (n, a)`` (columns from ``first_action`` on) as rows: (impression, action, dwell,
    surface, time), every random draw from ``rng``."""
    rows, action = np.nonzero(hits)
    action = action + first_action
    dwell = np.where(action == ACTION_INDEX[Action.DWELL], draw_dwell_ms(rng, features[rows, 1]), 0).astype(np.int64)
    surface = np.where(
        in_net[rows],
        rng.choice([ProductSurface.HOME_FOR_YOU, ProductSurface.HOME_FOLLOWING], size=len(rows), p=[0.75, 0.25]),
        rng.choice(
            [ProductSurface.HOME_FOR_YOU, ProductSurface.EXPLORE, ProductSurface.SEARCH, ProductSurface.PROFILE],
            size=len(rows), p=[0.7, 0.15, 0.1, 0.05],
        ),
    )
    surface = np.where((posts["kind"][post[rows]] == _REPLY) & (rng.random(len(rows)) < 0.5),
                       ProductSurface.CONVERSATION, surface)
    room = np.minimum(60_000, now_ms - t[rows])  # actions follow the impression within a minute, never after now
    ts = t[rows] + (rng.random(len(rows)) * room).astype(np.int64)
    return rows, action, dwell, surface, ts


def _engagements(spec, rng, extra_rng, people, posts, follow_src, follow_dst, sub_keys, now_ms, tick):
    n_users, n_posts = spec.num_users, spec.num_posts
    f_order, f_off = _csr(follow_src, n_users)
    p_order, p_off = _csr(posts["author"], n_users)
    follow_csr = (f_order, f_off, follow_dst, p_order, p_off)
    topic_csr = _csr(posts["topic"].astype(np.int64), spec.num_topics)
    pop_w = people["popularity"][posts["author"]].astype(np.float64) ** 0.7
    cdfs = (np.cumsum(people["activity"]), np.cumsum(pop_w))  # built once, searched per chunk
    follow_keys = np.sort(follow_src.astype(np.int64) * n_users + follow_dst)

    impressions = 0

    def simulate(n):
        nonlocal impressions
        v, p, i = _impressions(spec, rng, n, people, posts, follow_csr, topic_csr, cdfs, sub_keys)
        impressions += len(v)
        return _act(spec, rng, extra_rng, v, p, i, people, posts, follow_keys, now_ms)

    # Pilot chunk: measures actions per impression, so the total lands near the target.
    pilot_n = min(spec.chunk_impressions, max(20_000, spec.num_engagements // 20))
    chunks = [simulate(pilot_n)]
    # Sized by the reference actions only, so the later ones (their own generator) leave the impressions, and
    # so every draw of the world's generator, as they were: a seed's world keeps its rows and gains new ones.
    reference_rows = int((chunks[0]["action"] < _REFERENCE_ACTIONS).sum())
    per_impression = max(reference_rows / pilot_n, 1e-3)
    remaining = int(max(spec.num_engagements - reference_rows, 0) / per_impression)
    tick(len(chunks[0]["action"]))
    while remaining > 0:
        n = min(remaining, spec.chunk_impressions)
        chunks.append(simulate(n))
        tick(len(chunks[-1]["action"]))
        remaining -= n
    eng = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
    # Sort by time and drop exact repeats of the table key (user, post, action, timestamp): a viewer who
    # sees a post twice can draw the same millisecond, and the engagements table keeps one row per key.
    key = (eng["viewer"].astype(np.int64) * n_posts + eng["post"]) * len(ACTIONS) + eng["action"]
    order = np.lexsort((key, eng["timestamp_ms"]))
    ts, key = eng["timestamp_ms"][order], key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (ts[1:] != ts[:-1]) | (key[1:] != key[:-1])
    order = order[first]
    return {name: value[order] for name, value in eng.items()}, impressions


# --------------------------------------------------------------------------- public API


def generate_world(
    spec: WorldSpec,
    rng: np.random.Generator,
    now_ms: int,
    *,
    seed: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> World:
    """Generate a world from ``spec`` with ``rng`` (the only randomness) ending at ``now_ms``.

    ``seed`` is recorded in the world's meta only. ``progress(stage, n)`` is called as stages finish
    (``stage`` in users/graph/posts/engagements; ``n`` = rows produced), e.g. to drive a tqdm bar.
    """
    tick_stage = progress or (lambda stage, n: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    # Everything issue 17 added draws from a child generator, so the world's earlier draws (and rows) stay those
    # of the same seed before it: spawning does not advance ``rng``.
    extra_rng = rng.spawn(1)[0]
    people = _users(spec, rng, now_ms)
    n_users = spec.num_users
    tick_stage("users", n_users)
    lap("users")
    follow_src, follow_dst = _follow_graph(spec, rng, people)
    tick_stage("graph", len(follow_src))
    lap("graph")
    posts, internal = _posts(spec, rng, people, now_ms, extra_rng)
    tick_stage("posts", spec.num_posts)
    lap("posts")

    # Subscriptions: followers of subscription authors subscribe with probability 0.15.
    offers = internal["offers_subscription"]
    sub = offers[follow_dst] & (rng.random(len(follow_src)) < 0.15)
    sub_src, sub_dst = follow_src[sub], follow_dst[sub]
    sub_keys = np.sort(sub_src.astype(np.int64) * n_users + sub_dst)
    eng, impressions = _engagements(spec, rng, extra_rng, people, internal, follow_src, follow_dst, sub_keys, now_ms,
                       lambda n: tick_stage("engagements", n))
    lap("engagements")

    # Mute/block edges: a few users quietly mute or block a low-affinity author (the worse of 3 random ones),
    # plus the edges the follow/mute/block actions create.
    quiet = []
    for kind, share in (("mute", 0.05), ("block", 0.02)):
        who = np.flatnonzero(rng.random(n_users) < share)
        cands = rng.integers(0, n_users, size=(len(who), 3))
        aff = np.einsum("ik,ijk->ij", people["interests"][who], people["topics"][cands])
        target = cands[np.arange(len(who)), aff.argmin(axis=1)]
        ok = target != who
        quiet.append((kind, who[ok], target[ok]))
    span_start = now_ms - int(spec.span_days * DAY_MS)
    before = lambda m: span_start - (rng.random(m) * 365 * DAY_MS).astype(np.int64)  # noqa: E731
    parts = [("follow", follow_src, follow_dst, before(len(follow_src))),
             ("subscribe", sub_src, sub_dst, before(len(sub_src)))]
    parts += [(kind, s, d, before(len(s))) for kind, s, d in quiet]
    for kind, action in (("follow", Action.FOLLOW_AUTHOR), ("mute", Action.MUTE_AUTHOR),
                         ("block", Action.BLOCK_AUTHOR)):
        m = eng["action"] == ACTION_INDEX[action]
        parts.append((kind, eng["viewer"][m], internal["author"][eng["post"][m]], eng["timestamp_ms"][m]))
    edges = _dedupe_edges(parts, n_users)

    followers = np.bincount(edges["target_id"][edges["kind"] == "follow"] - 1, minlength=n_users)
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    users = {
        "user_id": user_ids,
        "screen_name": [f"{_TOPIC_WORDS[t % len(_TOPIC_WORDS)][0]}_fan{i}" for i, t in
                        zip(user_ids.tolist(), people["interests"].argmax(axis=1).tolist())],
        "followers_count": followers.astype(np.int64),
        "created_at_ms": people["created_at_ms"],
        **_user_context(spec, extra_rng, people),
    }
    post_ids = posts["post_id"]
    engagements = {
        "user_id": eng["viewer"].astype(np.int64) + 1,
        "post_id": post_ids[eng["post"]],
        "author_id": internal["author"][eng["post"]].astype(np.int64) + 1,
        "action": np.array([a.value for a in ACTIONS], dtype=object)[eng["action"]],
        "timestamp_ms": eng["timestamp_ms"],
        "dwell_ms": eng["dwell_ms"],
        "product_surface": eng["product_surface"],
        "post_created_at_ms": internal["created"][eng["post"]],
    }
    ground_truth = {
        "user_ids": user_ids,
        "user_interests": people["interests"],
        "author_topics": people["topics"],
        "author_quality": people["quality"],
        "author_popularity": people["popularity"],
        "user_propensity": people["propensity"],
        "post_ids": post_ids,
        "post_topic": internal["topic"],
        "post_content_author": internal["content_author"],
        "num_topics": np.array(spec.num_topics),
        # what the action model needs beyond the latents (xserve.synth.oracle scores any impression with them)
        "post_author": internal["author"],
        "post_created_at_ms": internal["created"],
        "post_labelled": internal["labelled"],
        "post_has_photo": internal["has_photo"],
        "post_has_video": internal["has_video"],
        "post_is_quote": internal["kind"] == _QUOTE,
        "post_has_link": internal["has_link"],
        "post_video_ms": internal["video_ms"],
        # the follow graph the impressions saw (sorted viewer_index * U + author_index)
        "follow_keys": np.sort(follow_src.astype(np.int64) * n_users + follow_dst),
        "action_weights": action_weights(),  # (6, A): rows IMPRESSION_FEATURES, columns ACTIONS
        "negative_actions": np.array([a in _NEGATIVES for a in ACTIONS]),  # a negative drops the positives
    }
    lap("assemble")
    return World(spec, seed, now_ms, users, posts, edges, engagements, ground_truth, impressions, timings)


def _user_context(spec: WorldSpec, rng: np.random.Generator, people: dict[str, np.ndarray]) -> dict[str, list]:
    """Each user's usual country, language and client app, and the declared interest topics (the names of the
    two strongest interests of ``_DECLARE_SHARE`` of the users): the users table's context columns. The action
    model does not read country, language or app; topics follow the interests it does read."""
    n, k = spec.num_users, spec.num_topics
    country = rng.integers(0, len(_COUNTRIES), size=n)
    app = rng.integers(0, len(_CLIENT_APPS), size=n)
    declares = rng.random(n) < _DECLARE_SHARE
    names = [(_TOPIC_WORDS[t][0] if t < len(_TOPIC_WORDS) else f"topic{t}") for t in range(k)]
    top = np.argsort(-people["interests"], axis=1)[:, :2]
    return {
        "country_code": [_COUNTRIES[c] for c in country.tolist()],
        "language_code": [_LANGUAGES[c] for c in country.tolist()],
        "client_app_id": np.array(_CLIENT_APPS, np.int64)[app],
        "topics": [[names[t] for t in row] if d else [] for row, d in zip(top.tolist(), declares.tolist())],
    }


def _dedupe_edges(parts, n_users: int) -> dict[str, np.ndarray]:
    """Concatenate (kind, src index, dst index, created) parts; keep the earliest edge per (src, dst, kind)."""
    code = np.concatenate([np.full(len(s), _EDGE_KINDS.index(kind), dtype=np.int64) for kind, s, _, _ in parts])
    src = np.concatenate([p[1] for p in parts]).astype(np.int64)
    dst = np.concatenate([p[2] for p in parts]).astype(np.int64)
    created = np.concatenate([p[3] for p in parts]).astype(np.int64)
    key = (src * n_users + dst) * len(_EDGE_KINDS) + code
    order = np.lexsort((created, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = order[first]
    keep = keep[src[keep] != dst[keep]]
    return {"user_id": src[keep] + 1, "target_id": dst[keep] + 1,
            "kind": np.array(_EDGE_KINDS, dtype=object)[code[keep]], "created_at_ms": created[keep]}


def affinity(ground_truth: dict[str, np.ndarray], user_ids: np.ndarray, post_ids: np.ndarray) -> np.ndarray:
    """Ground-truth affinity theta_u . tau_p in [0, 1] of each (user, post) pair (same length arrays)."""
    gt = ground_truth
    u = np.searchsorted(gt["user_ids"], user_ids)
    p = np.searchsorted(gt["post_ids"], post_ids)
    return _affinity(gt["user_interests"][u], gt["author_topics"][gt["post_content_author"][p]], gt["post_topic"][p])
