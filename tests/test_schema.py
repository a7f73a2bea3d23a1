import msgspec
import pytest

from xserve.schema import (
    ACTIONS,
    Action,
    ActionScores,
    FeedRequest,
    Media,
    MediaKind,
    Post,
    PostCandidate,
    PostCreated,
    PostDeleted,
    PostEvent,
    QuotedPostDeleted,
    ServedType,
)


def test_reference_eighteen_actions_in_head_order_then_the_value_models_two():
    # issue 17: video_open and link_open join the reference's 18 heads, appended so the 18 keep their indices
    assert len(ACTIONS) == 20
    assert ACTIONS[0] is Action.FAVORITE and ACTIONS[17] is Action.REPORT
    assert ACTIONS[18:] == (Action.VIDEO_OPEN, Action.LINK_OPEN)
    continuous = ("dwell_time", "watch_time", "profile_visit_time", "click_dwell_time")
    fields = [f for f in ActionScores.__struct_fields__ if f not in continuous]
    assert fields == [a.value for a in ACTIONS]


def test_action_scores_from_sequence_round_trip():
    probs = [i / 100 for i in range(20)]
    s = ActionScores.from_sequence(probs, dwell_time=3.5, durations=(1.0, 2.0, 3.0))
    assert [s.get(a) for a in ACTIONS] == probs
    assert s.dwell_time == 3.5
    assert (s.watch_time, s.profile_visit_time, s.click_dwell_time) == (1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="expected 20"):
        ActionScores.from_sequence([0.1])


def test_post_events_are_a_tagged_union():
    post = Post(post_id=7, author_id=3, created_at_ms=1000, media=(Media(MediaKind.VIDEO, 12_000),))
    events = [PostCreated(post), PostDeleted(post_id=7, deleted_at_ms=2000), QuotedPostDeleted(8, 7, 3000)]
    raw = msgspec.json.encode(events)
    assert b'"type":"post_created"' in raw
    assert msgspec.json.decode(raw, type=list[PostEvent]) == events
    assert post.video_duration_ms() == 12_000 and post.root_id == 7


def test_feed_request_validates_at_the_edge():
    dec = msgspec.json.Decoder(FeedRequest)
    assert dec.decode(b'{"viewer_id": 1}').limit is None
    for bad, needle in [
        (b'{"viewer_id": 0}', "viewer_id"),
        (b'{"viewer_id": 1, "limit": -1}', "limit"),
        (b'{"viewer_id": 1, "bogus": true}', "bogus"),
        (b'{"viewer_id": "x"}', "viewer_id"),
        (b"{}", "viewer_id"),
    ]:
        with pytest.raises(msgspec.ValidationError, match=needle):
            dec.decode(bad)


def test_related_post_ids():
    c = PostCandidate(post_id=5, author_id=1, served_type=ServedType.IN_NETWORK, repost_of_post_id=3, in_reply_to_post_id=2)
    assert c.related_post_ids() == (5, 3, 2)


def test_an_engagement_may_name_the_prediction_it_followed():
    """The response's prediction_request_id comes back on the engagement, joining it to its scores (issue 13)."""
    from xserve.schema import Engagement

    dec = msgspec.json.Decoder(Engagement)
    base = b'"user_id": 1, "post_id": 2, "author_id": 3, "action": "favorite", "timestamp_ms": 5'
    assert dec.decode(b"{" + base + b"}").prediction_request_id is None
    assert dec.decode(b"{" + base + b', "prediction_request_id": "abc-1"}').prediction_request_id == "abc-1"
    with pytest.raises(msgspec.ValidationError, match="prediction_request_id"):
        dec.decode(b"{" + base + b', "prediction_request_id": "' + b"x" * 129 + b'"}')


def test_rank_request_and_response_cross_ray_as_one_buffer_and_come_back_equal():
    """Their ``__reduce__`` (msgpack, one buffer) is an optimisation of pickling: the oracle is equality."""
    import pickle

    from xserve.schema import ActionScores, HistoryItem, ProductSurface, RankCandidate, RankRequest, RankResponse

    history = (HistoryItem(7, 8, frozenset({"favorite", "reply"}), 1_000, ProductSurface(3), dwell_ms=40),)
    candidates = (RankCandidate(1, 2, 900), RankCandidate(2**62, 3, None, ProductSurface(5)))
    req = RankRequest(user_id=11, history=history, candidates=candidates, now_ms=2_000)
    resp = RankResponse((ActionScores(favorite=0.25, report=1e-9, dwell_time=3.5), ActionScores()), "v1")
    reused = RankResponse((ActionScores(),), "v1", context_tokens=130, cached_context_tokens=112, replica="r1")
    for value in (req, resp, RankRequest(1, (), ()), reused):
        back = pickle.loads(pickle.dumps(value))
        assert back == value and type(back) is type(value)
