"""Train/serve parity of the history: what the ranker sees for a user at time t is the same in both paths.

Serving: the user store folds the user's engagements before t (live, one event at a time, and from a
table load after a restart), the mixer sends its newest entries in a ``RankRequest``, and the ranker
featurizes it (``Featurizer.from_requests``). Training: the whole log (including what came after t) is
aggregated and the example cut at t (``RankerExamples`` with the split at t) is featurized. The two
contexts must hold the same tokens at the same positions.

The log is built to catch each way the two paths could differ: actions on one post a short gap apart
on both sides of a window boundary (one entry per window, not one per burst of activity), a different
product surface on each action of an entry (the first action's), and more entries than the model's
history (the newest kept).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from tests.phoenix.factories import tiny_phoenix
from xserve.config import MixerConfig, ServingConfig
from xserve.phoenix.model.embeddings import PhoenixHasher
from xserve.phoenix.model.features import Featurizer
from xserve.phoenix.training.data import PostCorpus, RankerExamples, aggregate, user_context_ids
from xserve.schema import (
    ACTION_INDEX,
    ACTIONS,
    Action,
    Engagement,
    EngagementRecorded,
    ProductSurface,
    RankCandidate,
    RankRequest,
    UserContext,
    UserUpserted,
)
from xserve.users.store import UserStore

W = MixerConfig().history_window_ms
T0 = 1_700_000_000_000 // W * W  # a window boundary
USER = 7
HISTORY_LEN = 16


def _log(rng: np.random.Generator) -> list[Engagement]:
    """Two users' engagements over 40 windows; each visit to a post is 1-4 actions a few seconds to two minutes
    apart (often across a window boundary), each action on its own surface."""
    out = []
    for user in (USER, USER + 1):
        for k in range(60):
            post = int(rng.integers(1, 30))
            t = T0 + int(rng.integers(0, 40 * W))
            for action in rng.choice(len(ACTIONS), int(rng.integers(1, 5)), replace=False):
                out.append(Engagement(user, post, 100 + post, ACTIONS[action], t,
                                      dwell_ms=int(rng.integers(0, 5_000)),
                                      product_surface=ProductSurface(int(rng.integers(1, 8))),
                                      post_created_at_ms=T0 - 3_600_000))
                t += int(rng.integers(1_000, 120_000))
    return out


def _table(events: list[Engagement]) -> pa.Table:
    cols = ("user_id", "post_id", "author_id", "timestamp_ms", "dwell_ms", "post_created_at_ms")
    table = {c: pa.array([getattr(e, c) for e in events], pa.int64()) for c in cols}
    table["action"] = pa.array([e.action.value for e in events])
    table["product_surface"] = pa.array([int(e.product_surface) for e in events], pa.int32())
    return pa.table(table)


def _served_context(events: list[Engagement], t: int, featurizer: Featurizer, *, bulk: bool,
                    mixer: MixerConfig | None = None, serving: ServingConfig | None = None):
    """The context the ranker sees for USER at ``t``; with ``mixer``, the feed's window (``query_data`` trimmed in
    blocks of ``mixer.history_trim_block``), else the newest ``history_length`` entries."""
    block = mixer is not None
    mixer = mixer or MixerConfig()
    store = UserStore(serving or ServingConfig(), mixer)
    before = [e for e in events if e.timestamp_ms < t]
    if bulk:  # a restarted shard loads the engagements table
        store.load_engagement_arrays({
            "user_id": np.array([e.user_id for e in before]), "post_id": np.array([e.post_id for e in before]),
            "author_id": np.array([e.author_id for e in before]),
            "action": np.array([ACTION_INDEX[e.action] for e in before], np.int8),
            "timestamp_ms": np.array([e.timestamp_ms for e in before]),
            "dwell_ms": np.array([e.dwell_ms for e in before]),
            "product_surface": np.array([int(e.product_surface) for e in before]),
        })
    else:
        for e in before:
            store.apply(EngagementRecorded(e))
    if block:
        store.apply(UserUpserted(USER))  # query_data answers for users that exist
        history = store.query_data(USER, mixer.history_length, t, mixer.history_trim_block).history
    else:
        history = store.history(USER, mixer.history_length)
    request = RankRequest(USER, history, (RankCandidate(1, 101, T0),), now_ms=t)
    context, _ = featurizer.from_requests([request])
    return context


def _training_context(events: list[Engagement], t: int, featurizer: Featurizer, trim_block: int = 1):
    entries = aggregate(_table(events), W)
    examples = RankerExamples.build(entries, PostCorpus.build(entries), split_ms=t, validation=True, num_pos=4,
                                    num_neg=2, history_len=featurizer.config.history_len, max_age_ms=48 * 3_600_000,
                                    rng=np.random.default_rng(0), trim_block=trim_block)
    (row,) = np.flatnonzero(entries.user[examples.pos_start] == USER)[:1]  # the user's example cut at t
    assert entries.ts[examples.pos_start[row]] >= t > entries.ts[examples.pos_start[row] - 1]
    return examples.context(np.array([row]), featurizer)


def test_the_served_context_equals_the_training_context_cut_at_the_same_time():
    events = _log(np.random.default_rng(0))
    featurizer = Featurizer(tiny_phoenix(history_len=HISTORY_LEN), PhoenixHasher(tiny_phoenix(history_len=HISTORY_LEN)))
    for t in (T0 + 20 * W, T0 + 31 * W):  # cuts at window boundaries
        trained = _training_context(events, t, featurizer)
        assert int(trained.lengths[0]) == HISTORY_LEN  # the user has more entries than the model's history
        for bulk in (False, True):
            served = _served_context(events, t, featurizer, bulk=bulk)
            for name in ("user_hashes", "post_hashes", "author_hashes", "actions", "surface", "history_age", "context"):
                assert torch.equal(getattr(served, name), getattr(trained, name)), (name, t, bulk)


def test_negative_entries_ages_and_the_user_context_are_the_same_in_training_and_serving():
    """Issue 17: a not-interested 60 days old and one a day old enter the history with their ages (different
    buckets), and the user's country, language, app and topics reach the user token; training builds both
    from the log and the users table exactly as serving builds them from the request."""
    day = 86_400_000
    now = T0 + 90 * day
    old_ni = Engagement(USER, 3, 103, ACTIONS[ACTION_INDEX[Action.NOT_INTERESTED]], now - 60 * day)
    new_ni = Engagement(USER, 4, 104, ACTIONS[ACTION_INDEX[Action.NOT_INTERESTED]], now - day - 1000)
    fav = Engagement(USER, 5, 105, Action.FAVORITE, now - 2 * day)
    nxt = Engagement(USER, 6, 106, Action.FAVORITE, now)  # the example's first positive: its time is "now"
    events = [old_ni, new_ni, fav, nxt]
    cfg = tiny_phoenix(history_len=HISTORY_LEN)
    featurizer = Featurizer(cfg, PhoenixHasher(cfg))
    context = UserContext(country_code="BR", language_code="pt", client_app_id=2, topics=("music", "sports"))
    users = pa.table({"user_id": [USER], "country_code": ["br"], "language_code": ["PT"], "client_app_id": [2],
                      "topics": [["music", "sports"]]})
    entries = aggregate(_table(events), W)
    entries.user_context = user_context_ids(entries, users, featurizer)
    examples = RankerExamples.build(entries, PostCorpus.build(entries), split_ms=now, validation=True, num_pos=4,
                                    num_neg=2, history_len=HISTORY_LEN, max_age_ms=48 * 3_600_000,
                                    rng=np.random.default_rng(0))
    trained = examples.context(np.array([0]), featurizer)
    store = UserStore(ServingConfig(), MixerConfig())
    for e in events[:3]:
        store.apply(EngagementRecorded(e))
    request = RankRequest(USER, store.history(USER, 128), (RankCandidate(1, 101, now),), now_ms=now, context=context)
    served, _ = featurizer.from_requests([request])
    for name in ("user_hashes", "post_hashes", "actions", "history_age", "context"):
        assert torch.equal(getattr(served, name), getattr(trained, name)), name
    ages = served.history_age[0, :3].tolist()  # oldest first: the 60-day, the favorite, the 1-day entry
    assert ages[1] == 0 and ages[0] > ages[2] > 0  # only negatives carry an age; the old one a later bucket
    assert (served.context[0, :5] != 0).all() and (served.context[0, 5:] == 0).all()  # 3 fields + 2 topics


def test_the_block_trimmed_window_is_the_same_in_serving_and_training():
    """The feed's window (trimmed in blocks) equals training's at every cut, live and after a table load that
    kept fewer entries than the user has (the ones left out still count), and it grows by appending between
    trims: the next cut's context starts with this one's unless a block was dropped."""
    # in time order, as engagements arrive: an entry evicted while its window is still open, or an engagement
    # older than the evicted ones arriving late, would make the live count differ from the log's
    events = sorted(_log(np.random.default_rng(1)), key=lambda e: e.timestamp_ms)
    block = 5
    mixer = MixerConfig(history_length=HISTORY_LEN, history_trim_block=block)
    serving = ServingConfig(max_history_items=HISTORY_LEN + 4)  # evicts live, and leaves entries out of a load
    featurizer = Featurizer(tiny_phoenix(history_len=HISTORY_LEN), PhoenixHasher(tiny_phoenix(history_len=HISTORY_LEN)))
    lengths, previous = set(), None
    for t in range(T0 + 14 * W, T0 + 40 * W, W):  # every window boundary once the user has > HISTORY_LEN entries
        trained = _training_context(events, t, featurizer, trim_block=block)
        n = int(trained.lengths[0])
        lengths.add(n)
        assert HISTORY_LEN - block < n <= HISTORY_LEN
        for bulk in (False, True):
            served = _served_context(events, t, featurizer, bulk=bulk, mixer=mixer, serving=serving)
            for name in ("user_hashes", "post_hashes", "author_hashes", "actions", "surface"):
                assert torch.equal(getattr(served, name), getattr(trained, name)), (name, t, bulk)
        if previous is not None and n >= int(previous.lengths[0]):  # no trim since the previous cut: an append
            m = int(previous.lengths[0])
            assert torch.equal(trained.post_hashes[0, :m], previous.post_hashes[0, :m]), t
        previous = trained
    assert len(lengths) > 2  # the window grew and was trimmed more than once


def test_post_texts_reach_the_model_alike_in_training_and_serving():
    """Issue 15: training reads each post's text from the posts table; serving gets it from the feed's query
    hydration (the history) and the candidates' core data. The content ids of every history slot and of a
    candidate are the same in both paths, a post without text included (no content ids in either)."""
    import asyncio

    from tests.mixer.fakes import InMemoryPostData, InMemoryUserData, query
    from xserve.mixer.query_hydrators import UserActionSeqQueryHydrator
    from xserve.phoenix.training.data import PostContent
    from xserve.schema import Post

    events = _log(np.random.default_rng(0))
    words = ("Rust", "goal", "#Vote", "jazz", "rain")
    texts = {p: "" if p % 7 == 0 else f"{words[p % 5]} {words[p % 3]} about #{words[p % 4]}" for p in range(1, 30)}
    cfg = tiny_phoenix(history_len=HISTORY_LEN)
    featurizer = Featurizer(cfg, PhoenixHasher(cfg))
    t = T0 + 20 * W
    entries = aggregate(_table(events), W)
    content = PostContent.build(pa.table({"post_id": list(texts), "text": list(texts.values())}), cfg.max_content_tokens)
    entries.content = content.of(entries.post)
    corpus = PostCorpus.build(entries)
    corpus.content = content.of(corpus.post)
    examples = RankerExamples.build(entries, corpus, split_ms=t, validation=True, num_pos=4, num_neg=2,
                                    history_len=HISTORY_LEN, max_age_ms=48 * 3_600_000, rng=np.random.default_rng(0))
    (row,) = np.flatnonzero(entries.user[examples.pos_start] == USER)[:1]
    trained, trained_cand, _, _ = examples.batch(np.array([row]), featurizer)

    store = UserStore(ServingConfig(), MixerConfig())
    for e in events:
        if e.timestamp_ms < t:
            store.apply(EngagementRecorded(e))
    posts = InMemoryPostData(posts={p: Post(p, 100 + p, T0, text=s) for p, s in texts.items()})
    hydrator = UserActionSeqQueryHydrator(InMemoryUserData(history={USER: store.history(USER, HISTORY_LEN)}),
                                          HISTORY_LEN, posts)
    history = asyncio.run(hydrator.hydrate(query(USER)))
    first = int(entries.post[examples.pos_start[row]])  # the example's first positive, as a served candidate
    served, served_cand = featurizer.from_requests(
        [RankRequest(USER, history, (RankCandidate(first, 100 + first, T0, text=texts[first]),), now_ms=t)])
    assert torch.equal(served.post_hashes, trained.post_hashes)
    assert torch.equal(served.content, trained.content)
    assert torch.equal(served_cand.content[0, 0], trained_cand.content[0, 0])
    no_text = (served.post_hashes[..., 0] != 0) & (served.content == 0).all(-1)
    assert no_text.any() and (served.content != 0).any()  # both kinds of post are in the history
