"""Visibility hydrator and filter, conversation dedup."""

from __future__ import annotations

import asyncio

from tests.mixer.fakes import NOW_MS, InMemoryPostData, cand, query
from xserve.mixer.post_selection import DedupConversationFilter, VisibilityFilter, VisibilityHydrator
from xserve.schema import Post, VisibilityLabel


ALL = tuple(VisibilityLabel)
NOT_NSFW = tuple(label for label in VisibilityLabel if label is not VisibilityLabel.NSFW)


def hydrate(hydrator: VisibilityHydrator, cands) -> None:
    values, report = asyncio.run(hydrator.run(query(), cands))
    assert report.status == "ok", report
    hydrator.update_all(cands, values)


def test_visibility_hydrator_labels_deleted_posts_and_reposted_originals():
    posts = {
        1: Post(post_id=1, author_id=9, created_at_ms=NOW_MS),
        2: Post(post_id=2, author_id=9, created_at_ms=NOW_MS, labels=(VisibilityLabel.GORE,)),
    }
    posts[4] = Post(post_id=4, author_id=8, created_at_ms=NOW_MS, repost_of_post_id=2, labels=(VisibilityLabel.GORE,))
    cands = [cand(1), cand(2), cand(3), cand(4, repost_of_post_id=2), cand(1, repost_of_post_id=3)]
    hydrate(VisibilityHydrator(InMemoryPostData(posts), ALL, ALL), cands)
    assert [c.visibility_labels for c in cands] == [
        (),
        (VisibilityLabel.GORE,),
        (VisibilityLabel.DELETED,),  # gone
        (VisibilityLabel.GORE,),  # labelled like its original, once
        (VisibilityLabel.DELETED,),  # a repost of a deleted post
    ]
    assert [c.visibility_reason for c in cands] == [None, "gore", "deleted", "gore", "deleted"]


def test_a_quote_is_labelled_like_its_quoted_post_and_deleted_with_it():
    """As the reference drops a post whose quoted post is dropped (issue 13)."""
    posts = {
        1: Post(post_id=1, author_id=9, created_at_ms=NOW_MS, labels=(VisibilityLabel.HATE,)),
        2: Post(post_id=2, author_id=8, created_at_ms=NOW_MS, quote_of_post_id=1),
        3: Post(post_id=3, author_id=8, created_at_ms=NOW_MS, quote_of_post_id=99),  # 99 was deleted
        4: Post(post_id=4, author_id=8, created_at_ms=NOW_MS, repost_of_post_id=3),  # a repost of that quote
        5: Post(post_id=5, author_id=8, created_at_ms=NOW_MS, quote_of_post_id=6),
        6: Post(post_id=6, author_id=9, created_at_ms=NOW_MS),
        7: Post(post_id=7, author_id=8, created_at_ms=NOW_MS, quote_of_post_id=5),  # a quote of a quote
    }
    cands = [cand(2), cand(3), cand(4, repost_of_post_id=3), cand(7)]
    hydrate(VisibilityHydrator(InMemoryPostData(posts), ALL, ALL), cands)
    # one level of quotes, as the reference: 7 is judged by 5's labels, not by 6 (which was not fetched)
    assert [c.visibility_reason for c in cands] == ["hate", "deleted", "deleted", None]


def test_a_post_is_dropped_with_its_parent_quoted_or_reposted_post():
    """Issue 17 item 4: propagation. A reply, a quote and a repost each inherit the verdict of the post they
    answer, show or repeat, at their own level; a clean relation keeps them; a deleted parent drops a reply."""
    spam, nsfw, gore = (VisibilityLabel.SPAM,), (VisibilityLabel.NSFW,), (VisibilityLabel.GORE,)
    p = lambda pid, **kw: Post(post_id=pid, author_id=9, created_at_ms=NOW_MS, **kw)  # noqa: E731
    posts = {
        1: p(1, labels=spam),
        2: p(2, in_reply_to_post_id=1),  # a reply to spam
        3: p(3, quote_of_post_id=1),  # a quote of spam
        4: p(4, repost_of_post_id=1),  # a repost of spam
        5: p(5),
        6: p(6, in_reply_to_post_id=5),  # a reply to a clean post
        7: p(7, in_reply_to_post_id=99),  # its parent was deleted
        8: p(8, labels=nsfw),
        9: p(9, in_reply_to_post_id=8),  # a reply to an nsfw post: allowed in-network, dropped out-of-network
        10: p(10, in_reply_to_post_id=2),  # one level only: its parent 2 is clean by its own labels
        11: p(11, labels=gore),
        12: p(12, quote_of_post_id=11),
        13: p(13, repost_of_post_id=12),  # a repost of a quote of gore: the original's quoted post counts
        14: p(14, in_reply_to_post_id=11),
        15: p(15, repost_of_post_id=14),  # a repost of a reply to gore: the original's parent counts
    }
    cands = [cand(2), cand(3), cand(4, repost_of_post_id=1), cand(6), cand(7), cand(9, in_network=True),
             cand(9, in_network=False), cand(10), cand(13, repost_of_post_id=12), cand(15, repost_of_post_id=14)]
    hydrate(VisibilityHydrator(InMemoryPostData(posts), NOT_NSFW, ALL), cands)
    assert [c.visibility_reason for c in cands] == [
        "spam", "spam", "spam", None, "deleted", None, "nsfw", None, "gore", "gore"
    ]
    result = VisibilityFilter().filter(query(), cands)
    assert [c.post_id for c in result.kept] == [6, 9, 10]
    assert cands[5].visibility_labels == nsfw  # served in-network, marked for a warning like its parent


def test_out_of_network_posts_are_checked_at_the_stricter_level():
    """In-network (followed) content at one label set, recommendations at a stricter one (reference safety
    levels TimelineHome and TimelineHomeRecommendations); an unknown in-network flag gets the stricter one."""
    nsfw, spam = (VisibilityLabel.NSFW,), (VisibilityLabel.SPAM,)
    posts = {i: Post(post_id=i, author_id=9, created_at_ms=NOW_MS, labels=nsfw) for i in (1, 2, 3)}
    posts[4] = Post(post_id=4, author_id=9, created_at_ms=NOW_MS, labels=spam)
    posts[5] = Post(post_id=5, author_id=9, created_at_ms=NOW_MS)
    cands = [cand(1, in_network=True), cand(2, in_network=False), cand(3), cand(4, in_network=True),
             cand(5, in_network=False)]
    hydrate(VisibilityHydrator(InMemoryPostData(posts), NOT_NSFW, ALL), cands)
    assert [c.visibility_reason for c in cands] == [None, "nsfw", "nsfw", "spam", None]
    result = VisibilityFilter().filter(query(), cands)
    assert [c.post_id for c in result.kept] == [1, 5] and [c.post_id for c in result.removed] == [2, 3, 4]
    assert cands[0].visibility_labels == nsfw  # served, and the response says why a client may blur it

    # the sets are configuration: an operator may drop nothing but deleted posts in-network
    cands = [cand(4, in_network=True), cand(4, in_network=False)]
    hydrate(VisibilityHydrator(InMemoryPostData(posts), (VisibilityLabel.DELETED,), ALL), cands)
    assert [c.visibility_reason for c in cands] == [None, "spam"]


def test_visibility_filter_removes_a_dropping_verdict_and_unknown_visibility():
    """A post whose labels were never fetched (None) is not served: visibility fails closed (issue 13)."""
    cands = [cand(1, visibility_labels=()), cand(2, visibility_labels=(VisibilityLabel.SPAM,), visibility_reason="spam"),
             cand(3), cand(4, visibility_labels=(VisibilityLabel.NSFW,))]
    result = VisibilityFilter().filter(query(), cands)
    assert [c.post_id for c in result.kept] == [1, 4] and [c.post_id for c in result.removed] == [2, 3]


def test_dedup_conversation_keeps_the_best_scored_per_conversation():
    cands = [
        cand(10, score=0.5),  # root of conversation 10
        cand(11, ancestors=(10,), score=0.9),  # reply to the root
        cand(12, ancestors=(11, 10), score=0.7),  # reply to the reply
        cand(20, score=None),  # its own conversation
        cand(21, ancestors=(20,), score=None),  # tie on unknown scores: the earlier wins
        cand(30, ancestors=(31, 29), score=1.0),  # conversation 29
    ]
    result = DedupConversationFilter().filter(query(), cands)
    assert [c.post_id for c in result.kept] == [11, 20, 30]
    assert [c.post_id for c in result.removed] == [10, 12, 21]
