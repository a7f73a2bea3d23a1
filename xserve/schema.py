"""Every record that crosses a boundary in xserve, as msgspec Structs.

One module, shared by every layer (HTTP bodies, Ray calls, the event log, the
pipeline's candidates). Conventions:

* ids are ``int`` ``NewType``s (``UserId``, ``PostId``); 0 is never a valid id
  (hash embeddings reserve 0 for padding);
* times are integer milliseconds since the Unix epoch, named ``*_ms``;
* new fields get a default and go last, so old payloads still decode
  (msgspec schema evolution);
* records that enter from outside (requests, events) carry ``Meta`` bounds
  that msgspec checks on decode, so bad input fails at the edge with a
  message naming the field and the rule.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, NewType

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "Ad",
    "AdBody",
    "AdDeleted",
    "AdDelivered",
    "AdEvent",
    "AdPut",
    "AdRef",
    "AdSlate",
    "AdTargeting",
    "LastAdServed",
    "ACTIONS",
    "ACTION_INDEX",
    "DURATION_ACTIONS",
    "NEGATIVE_ACTIONS",
    "Action",
    "ActionScores",
    "ColdStartPick",
    "EdgeKind",
    "EdgeSet",
    "EdgeUnset",
    "Engagement",
    "EngagementRecorded",
    "EngagementsBody",
    "FeedRequest",
    "FeedSeen",
    "FeedResponse",
    "FeedSource",
    "FilteredOut",
    "HistoryItem",
    "ImpressionBloomFilter",
    "ImpressionRecord",
    "ImpressionsBody",
    "IngestRejection",
    "IngestResult",
    "InNetworkRequest",
    "InNetworkResponse",
    "LabelsBody",
    "LightPost",
    "Media",
    "MediaKind",
    "MutedKeywordsBody",
    "MutedKeywordsSet",
    "NegativeSignal",
    "NewPost",
    "Post",
    "PopularPost",
    "PopularRequest",
    "PostRef",
    "PostStats",
    "PostCandidate",
    "PostCreated",
    "PostDeleted",
    "PostEmbeddings",
    "PostEvent",
    "PostId",
    "PostLabelsSet",
    "ProductSurface",
    "QuotedPostDeleted",
    "RankCandidate",
    "RankRequest",
    "RankResponse",
    "RetrievalRequest",
    "RetrievedPost",
    "ScoreExplanation",
    "ScoredPost",
    "SeenImpressions",
    "Served",
    "ServedPostRef",
    "ServedType",
    "ShardHits",
    "StageReport",
    "UserBody",
    "UserContext",
    "UserEvent",
    "UserFeatures",
    "UserId",
    "UserProfile",
    "UserQueryData",
    "UserRecord",
    "UserUpserted",
    "VisibilityLabel",
    "json_encoder",
]

UserId = NewType("UserId", int)
PostId = NewType("PostId", int)

# Bounds enforced on decode. Ids are positive int64s.
PositiveId = Annotated[int, Meta(gt=0, le=2**63 - 1)]
TimestampMs = Annotated[int, Meta(ge=0, le=2**62)]
MAX_ID_LIST = 10_000  # seen/served/exclude lists accepted in one request
MAX_TEXT_CHARS = 25_000  # long posts are ~25k characters on X


# --------------------------------------------------------------------------- actions


class Action(enum.StrEnum):
    """The 20 discrete actions the ranker predicts: the reference's 18 in its head order, then the two
    the October release's value model reads (``docs/reference.md`` §3.1), appended so earlier indices keep
    their meaning.

    The model's output index for an action is ``ACTION_INDEX[action]``; the
    continuous heads are separate (``ActionScores.dwell_time`` and the three ``*_time`` durations).
    """

    FAVORITE = "favorite"
    REPLY = "reply"
    REPOST = "repost"
    PHOTO_EXPAND = "photo_expand"
    CLICK = "click"
    PROFILE_CLICK = "profile_click"
    VIDEO_QUALITY_VIEW = "video_quality_view"
    SHARE = "share"
    SHARE_VIA_DM = "share_via_dm"
    SHARE_VIA_COPY_LINK = "share_via_copy_link"
    DWELL = "dwell"
    QUOTE = "quote"
    QUOTED_CLICK = "quoted_click"
    FOLLOW_AUTHOR = "follow_author"
    NOT_INTERESTED = "not_interested"
    BLOCK_AUTHOR = "block_author"
    MUTE_AUTHOR = "mute_author"
    REPORT = "report"
    VIDEO_OPEN = "video_open"  # opened the post's video (video posts only); its watch time is a regression head
    LINK_OPEN = "link_open"  # opened the post's outbound link (posts with links only)


ACTIONS: tuple[Action, ...] = tuple(Action)
ACTION_INDEX: dict[Action, int] = {a: i for i, a in enumerate(ACTIONS)}
NEGATIVE_ACTIONS: frozenset[Action] = frozenset(
    {Action.NOT_INTERESTED, Action.BLOCK_AUTHOR, Action.MUTE_AUTHOR, Action.REPORT}
)
# The actions whose row in the engagement log carries a duration of its own in ``dwell_ms`` (the seconds a
# video was watched after opening it, spent on the profile after a profile click, on the post after a click),
# in the order of the ranker's duration head and ``ActionScores``' ``watch_time, profile_visit_time,
# click_dwell_time``. Every other action's ``dwell_ms`` is the dwell on the post (synthetic worlds: dwell rows).
DURATION_ACTIONS: tuple[Action, ...] = (Action.VIDEO_OPEN, Action.PROFILE_CLICK, Action.CLICK)


class ProductSurface(enum.IntEnum):
    """Where an engagement or impression happened; embedded by the ranker (vocab 16)."""

    UNKNOWN = 0
    HOME_FOR_YOU = 1
    HOME_FOLLOWING = 2
    CONVERSATION = 3
    PROFILE = 4
    SEARCH = 5
    NOTIFICATIONS = 6
    EXPLORE = 7


class ActionScores(Struct, frozen=True, forbid_unknown_fields=True):
    """Predicted probability of each action (0..1), expected dwell time in seconds, and the three
    conditional durations the value model multiplies by their action's probability (seconds, given
    the action happened: ``xserve/mixer/value_model.py``)."""

    favorite: float = 0.0
    reply: float = 0.0
    repost: float = 0.0
    photo_expand: float = 0.0
    click: float = 0.0
    profile_click: float = 0.0
    video_quality_view: float = 0.0
    share: float = 0.0
    share_via_dm: float = 0.0
    share_via_copy_link: float = 0.0
    dwell: float = 0.0
    quote: float = 0.0
    quoted_click: float = 0.0
    follow_author: float = 0.0
    not_interested: float = 0.0
    block_author: float = 0.0
    mute_author: float = 0.0
    report: float = 0.0
    video_open: float = 0.0
    link_open: float = 0.0
    dwell_time: float = 0.0  # continuous head, seconds
    watch_time: float = 0.0  # seconds of video watched, given a video_open
    profile_visit_time: float = 0.0  # seconds on the author's profile, given a profile_click
    click_dwell_time: float = 0.0  # seconds on the opened post, given a click

    @classmethod
    def from_sequence(cls, probs: "list[float] | tuple[float, ...]", dwell_time: float = 0.0,
                      durations: "tuple[float, float, float]" = (0.0, 0.0, 0.0)) -> "ActionScores":
        """Build from probabilities in ``ACTIONS`` order (the model's head order) and the continuous heads
        (``durations``: watch, profile visit, click dwell seconds, ``DURATION_ACTIONS`` order)."""
        if len(probs) != len(ACTIONS):
            raise ValueError(f"expected {len(ACTIONS)} action probabilities, got {len(probs)}")
        watch, visit, click = (float(d) for d in durations)
        return cls(*(float(p) for p in probs), dwell_time=float(dwell_time), watch_time=watch,
                   profile_visit_time=visit, click_dwell_time=click)

    def get(self, action: Action) -> float:
        return getattr(self, action.value)


# --------------------------------------------------------------------------- posts


class MediaKind(enum.StrEnum):
    PHOTO = "photo"
    VIDEO = "video"
    GIF = "gif"


class Media(Struct, frozen=True, forbid_unknown_fields=True):
    kind: MediaKind
    duration_ms: Annotated[int, Meta(ge=0)] = 0  # videos only


class VisibilityLabel(enum.StrEnum):
    """Safety labels; any label on a post removes it in the post-selection visibility filter."""

    DELETED = "deleted"
    SPAM = "spam"
    VIOLENCE = "violence"
    GORE = "gore"
    NSFW = "nsfw"
    HATE = "hate"
    ABUSE = "abuse"


class PostRef(Struct, frozen=True, forbid_unknown_fields=True):
    """What Thunder's rules read of a post that another post refers to (a reply's parent, a repost's source).

    Carried on the referring post, so a Thunder shard decides the reply rule and
    repost-of-video without a copy of other shards' posts (``docs/thunder.md``).
    """

    created_at_ms: TimestampMs
    in_reply_to_post_id: PositiveId | None = None
    in_reply_to_user_id: PositiveId | None = None
    repost_of_post_id: PositiveId | None = None
    video_ms: Annotated[int, Meta(ge=0)] | None = None  # its video's length when its media are exactly one video


class Post(Struct, frozen=True, forbid_unknown_fields=True):
    """A post as the write path accepts it and the posts table stores it."""

    post_id: PositiveId
    author_id: PositiveId
    created_at_ms: TimestampMs
    text: Annotated[str, Meta(max_length=MAX_TEXT_CHARS)] = ""
    in_reply_to_post_id: PositiveId | None = None
    in_reply_to_user_id: PositiveId | None = None  # the author of the parent post
    repost_of_post_id: PositiveId | None = None
    repost_of_user_id: PositiveId | None = None
    quote_of_post_id: PositiveId | None = None
    conversation_id: PositiveId | None = None  # root of the thread; None means the post is its own root
    media: Annotated[tuple[Media, ...], Meta(max_length=4)] = ()
    subscription_only: bool = False  # visible only to subscribers of the author
    labels: tuple[VisibilityLabel, ...] = ()
    reply_parent: PostRef | None = None  # the post in_reply_to_post_id names, as the write path found it; None = not known
    repost_source: PostRef | None = None  # the post repost_of_post_id names, as the write path found it; None = not known
    has_link: bool = False  # the post carries an outbound link (marked at creation; a link_open needs one)

    @property
    def is_reply(self) -> bool:
        return self.in_reply_to_post_id is not None

    @property
    def is_repost(self) -> bool:
        return self.repost_of_post_id is not None

    @property
    def root_id(self) -> int:
        return self.conversation_id if self.conversation_id is not None else self.post_id

    def video_duration_ms(self) -> int | None:
        """Duration of the post's first video, or None if it has none."""
        for m in self.media:
            if m.kind is MediaKind.VIDEO:
                return m.duration_ms
        return None


class LightPost(Struct, frozen=True, array_like=True):
    """Thunder's compact record of a recent post (what in-network queries return)."""

    post_id: int
    author_id: int
    created_at_ms: int
    in_reply_to_post_id: int | None = None
    in_reply_to_user_id: int | None = None
    repost_of_post_id: int | None = None
    repost_of_user_id: int | None = None
    conversation_id: int | None = None
    has_video: bool = False

    @property
    def is_reply(self) -> bool:
        return self.in_reply_to_post_id is not None

    @property
    def is_repost(self) -> bool:
        return self.repost_of_post_id is not None


# --------------------------------------------------------------------------- events


class PostCreated(Struct, frozen=True, tag="post_created", forbid_unknown_fields=True):
    post: Post


class PostDeleted(Struct, frozen=True, tag="post_deleted", forbid_unknown_fields=True):
    post_id: PositiveId
    deleted_at_ms: TimestampMs
    author_id: PositiveId | None = None  # routes the delete to its shard; None = every shard


class QuotedPostDeleted(Struct, frozen=True, tag="quoted_post_deleted", forbid_unknown_fields=True):
    """The quoted post was deleted, so the quoting post is deleted too (reference behaviour)."""

    quoting_post_id: PositiveId
    quoted_post_id: PositiveId
    deleted_at_ms: TimestampMs
    quoting_author_id: PositiveId | None = None


PostEvent = PostCreated | PostDeleted | QuotedPostDeleted


MAX_PREDICTION_ID_CHARS = 128  # an engagement's prediction_request_id (ours are 16 hex digits, a dash and the viewer id)


class Engagement(Struct, frozen=True, forbid_unknown_fields=True):
    """One user action on one post; the unit of the engagement log and of training data."""

    user_id: PositiveId
    post_id: PositiveId
    author_id: PositiveId
    action: Action
    timestamp_ms: TimestampMs
    dwell_ms: Annotated[int, Meta(ge=0)] = 0
    product_surface: ProductSurface = ProductSurface.HOME_FOR_YOU
    post_created_at_ms: TimestampMs | None = None
    # the served post's prediction_request_id: joins the engagement to the scores that led to it (not stored in tables)
    prediction_request_id: Annotated[str, Meta(max_length=MAX_PREDICTION_ID_CHARS)] | None = None


# --------------------------------------------------------------------------- users


class NegativeSignal(Struct, frozen=True, array_like=True):
    """The latest negative action (not-interested, mute, block, report) a user took on an author's post."""

    author_id: int
    action: Action  # one of NEGATIVE_ACTIONS
    timestamp_ms: int  # when; the negative-feedback multiplier fades with its age


class UserFeatures(Struct, frozen=True, forbid_unknown_fields=True):
    followed_user_ids: frozenset[int] = frozenset()
    blocked_user_ids: frozenset[int] = frozenset()
    muted_user_ids: frozenset[int] = frozenset()
    muted_keywords: tuple[str, ...] = ()
    subscribed_user_ids: frozenset[int] = frozenset()
    # the latest of each negative action per author, oldest first (bounded by serving.max_negative_signals)
    negative_feedback: tuple[NegativeSignal, ...] = ()
    mutual_follow_ids: frozenset[int] = frozenset()  # followed users who follow back (the value model's mutual-follow boost)
    topics: tuple[str, ...] = ()  # declared interest topics (PUT /v1/users/{id}), a ranker and user-tower input


MAX_TOPICS = 16  # declared interest topics per user
MAX_TOPIC_CHARS = 50


class UserContext(Struct, frozen=True, forbid_unknown_fields=True):
    """What the ranker and the user tower know of the user besides the history: the feed request's
    country, language and client app, and the user's declared interest topics (``features.context_ids``)."""

    country_code: str = ""
    language_code: str = ""
    client_app_id: int = 0
    topics: tuple[str, ...] = ()


class HistoryItem(Struct, frozen=True, array_like=True):
    """One aggregated entry of a user's engagement sequence (actions on one post in one window)."""

    post_id: int
    author_id: int
    actions: frozenset[Action]
    timestamp_ms: int  # the latest action in the window
    product_surface: ProductSurface = ProductSurface.HOME_FOR_YOU
    dwell_ms: int = 0
    text: str = ""  # the post's text for the ranker's content input, filled by the feed's query hydration; "" = none



# --------------------------------------------------------------------------- service calls


class InNetworkRequest(Struct, frozen=True):
    """Thunder query: recent posts of followed authors."""

    viewer_id: int
    followed_ids: tuple[int, ...]
    max_results: int
    exclude_ids: frozenset[int] = frozenset()
    video_only: bool = False


class InNetworkResponse(Struct, frozen=True):
    """Thunder's answer: the posts, newest first, and the shards it was built without."""

    posts: list[LightPost]
    left_out: tuple[str, ...] = ()  # shards whose query failed ("thunder_shard_<i>"): their authors' posts are missing


class RetrievalRequest(Struct, frozen=True):
    """Phoenix retrieval query: out-of-network candidates for a user's engagement history."""

    user_id: int
    history: tuple[HistoryItem, ...]
    max_results: int
    exclude_ids: frozenset[int] = frozenset()
    now_ms: int = 0  # posts older than the configured max age are not retrieved
    context: UserContext | None = None  # the user tower's context input; None = unknown


class RetrievedPost(Struct, frozen=True, array_like=True):
    post_id: int
    author_id: int
    score: float  # cosine similarity of user and candidate embeddings
    in_reply_to_post_id: int | None = None


class RankCandidate(Struct, frozen=True, array_like=True):
    post_id: int
    author_id: int
    created_at_ms: int | None = None  # for the post-age bucket; None = unknown
    product_surface: ProductSurface = ProductSurface.HOME_FOR_YOU
    text: str = ""  # the post's text (a repost's: the original's), the ranker's content input; "" = none


def _from_msgpack(type_: Any, data: bytes) -> Any:
    return msgspec.msgpack.decode(data, type=type_)


class RankRequest(Struct, frozen=True):
    """Ranker query: score each candidate for one user given the user's history."""

    user_id: int
    history: tuple[HistoryItem, ...]
    candidates: tuple[RankCandidate, ...]
    now_ms: int = 0
    context: UserContext | None = None  # the user token's context input; None = unknown

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles it to the Ranker once per feed: 1,400 candidates as one msgpack buffer took 2.9 ms
        # there and back, pickled Struct by Struct 8.2 ms (docs/measurements.md, "Feed latency")
        return _from_msgpack, (RankRequest, msgspec.msgpack.encode(self))


class RankResponse(Struct, frozen=True):
    scores: tuple[ActionScores, ...]  # same length and order as the request's candidates
    model_version: str = ""
    context_tokens: int = 0  # positions of the user context (user + history) the candidates attended to
    cached_context_tokens: int = 0  # of them, read from the replica's KV cache (all: a hit; some: a partial hit)
    replica: str = ""  # the Ranker replica that scored it (its KV cache holds the context now)

    def __reduce__(self) -> tuple[Any, ...]:
        # as RankRequest: one msgpack buffer, each ActionScores as a row of floats (its field names are not
        # repeated per candidate): ~1.5x faster than pickling the Structs (measured)
        rows = msgspec.msgpack.encode([msgspec.structs.astuple(a) for a in self.scores])
        return _rank_response_from_rows, (rows, self.model_version, self.context_tokens, self.cached_context_tokens,
                                          self.replica)


def _rank_response_from_rows(rows: bytes, model_version: str, context_tokens: int = 0, cached_context_tokens: int = 0,
                             replica: str = "") -> RankResponse:
    return RankResponse(tuple(ActionScores(*row) for row in msgspec.msgpack.decode(rows)), model_version,
                        context_tokens, cached_context_tokens, replica)


# --------------------------------------------------------------------------- ads (issue 17 item 5)

MAX_AD_TARGETS = 100  # entries per targeting list (topics, accounts, countries)


class AdTargeting(Struct, frozen=True, forbid_unknown_fields=True):
    """Who an ad may be shown to; each non-empty list must match, an empty one matches everyone."""

    topics: Annotated[tuple[Annotated[str, Meta(min_length=1, max_length=50)], ...], Meta(max_length=MAX_AD_TARGETS)] = ()  # one of the viewer's declared interest topics
    followers_of: Annotated[tuple[PositiveId, ...], Meta(max_length=MAX_AD_TARGETS)] = ()  # the viewer follows one of these accounts
    countries: Annotated[tuple[Annotated[str, Meta(min_length=1, max_length=8)], ...], Meta(max_length=MAX_AD_TARGETS)] = ()  # the request's country_code is one of these


class AdBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``PUT /v1/ads/{ad_id}``: creates the ad, or replaces its terms (its counters are kept)."""

    advertiser_id: PositiveId  # the user paying for it: viewers who block or mute this user never see the ad
    creative_post_id: PositiveId  # the post shown as the ad (an existing post)
    bid_micros: Annotated[int, Meta(gt=0, le=10**12)]  # price per served impression, millionths of the currency unit
    budget_micros: Annotated[int, Meta(gt=0, le=10**15)]  # total spend; delivery stops when the next impression would exceed it
    targeting: AdTargeting = AdTargeting()


class Ad(Struct, frozen=True):
    """A stored ad (``GET /v1/ads/{ad_id}``): its terms and its pacing counters."""

    ad_id: int
    advertiser_id: int
    creative_post_id: int
    creative_author_id: int  # the creative post's author, read when the ad was put (the feed's candidate needs it)
    bid_micros: int
    budget_micros: int
    targeting: AdTargeting = AdTargeting()
    spent_micros: int = 0  # charged so far: bid_micros per served impression
    impressions: int = 0  # served impressions so far
    updated_at_ms: int = 0  # the last PUT

    @property
    def exhausted(self) -> bool:
        """The budget cannot pay one more impression: the ad is no longer delivered."""
        return self.spent_micros + self.bid_micros > self.budget_micros


class AdRef(Struct, frozen=True, array_like=True):
    """What a feed candidate carries of the ad that brought it."""

    ad_id: int
    advertiser_id: int
    bid_micros: int


class LastAdServed(Struct, frozen=True, array_like=True):
    """The newest ad a viewer was served: the blender's spacing across pages."""

    creative_post_id: int
    served_at_ms: int


class AdSlate(Struct, frozen=True):
    """The ads store's answer for one feed: the ads with budget left, and the viewer's last served ad."""

    ads: tuple[Ad, ...] = ()  # best bid first
    last_ad: LastAdServed | None = None


class AdPut(Struct, frozen=True, tag="ad_put", forbid_unknown_fields=True):
    ad: Ad  # counters as they stood when it was put (a replacement keeps them)


class AdDeleted(Struct, frozen=True, tag="ad_deleted", forbid_unknown_fields=True):
    ad_id: int
    at_ms: int


class AdDelivered(Struct, frozen=True, tag="ad_delivered", forbid_unknown_fields=True):
    """Ads served in one feed: each is charged its bid once; the viewer's last served ad moves to the last of them."""

    viewer_id: int
    ad_ids: tuple[int, ...]  # in feed order
    creative_post_ids: tuple[int, ...]  # same order
    at_ms: int


AdEvent = AdPut | AdDeleted | AdDelivered


# --------------------------------------------------------------------------- the feed


class ServedType(enum.StrEnum):
    IN_NETWORK = "for_you_in_network"  # Thunder
    RETRIEVAL = "for_you_phoenix_retrieval"  # Phoenix retrieval (out-of-network)
    POPULAR = "for_you_popular"  # the popular-posts source
    AD = "for_you_ad"  # an ad's creative post, from the ads inventory (``xserve/ads``)


class FeedSource(enum.StrEnum):
    """Why a post is in the feed: the source that brought it, or the cold-start slot that lifted it."""

    THUNDER = "thunder"  # in-network: recent posts of followed authors
    RETRIEVAL = "retrieval"  # out-of-network: nearest the viewer's embedding
    POPULAR = "popular"  # recent posts with the most engaged viewers
    COLD_START = "cold_start"  # a small author's new post lifted into the cold-start slot
    AD = "ad"  # an ad's creative post, placed by the ads blender (``ScoredPost.ad_id`` names the ad)

    @classmethod
    def of(cls, served_type: ServedType) -> "FeedSource":
        return _SOURCE_OF[served_type]


_SOURCE_OF = {
    ServedType.IN_NETWORK: FeedSource.THUNDER,
    ServedType.RETRIEVAL: FeedSource.RETRIEVAL,
    ServedType.POPULAR: FeedSource.POPULAR,
    ServedType.AD: FeedSource.AD,
}


class PopularRequest(Struct, frozen=True):
    """The popular source's query: recent posts by engaged viewers, counted as of ``now_ms`` (causally)."""

    now_ms: int
    max_age_ms: int  # posts created within this before now_ms
    max_results: int
    min_engaged_users: int = 1


class PopularPost(Struct, frozen=True, array_like=True):
    post_id: int
    author_id: int
    created_at_ms: int
    engaged_users: int  # viewers with a counted action on it at or before the request's now_ms


class PostStats(Struct, frozen=True, array_like=True):
    """A post's counters as of a time (the cold-start sampler reads them)."""

    engaged_users: int = 0  # viewers with a counted (positive) action
    favorites: int = 0  # viewers who favorited it


class ServedPostRef(Struct, frozen=True, array_like=True):
    """A served post as the impression counters record it."""

    post_id: int
    author_id: int
    created_at_ms: int


class ColdStartPick(Struct, frozen=True):
    """Why a post holds the cold-start slot (explain)."""

    impressions: int  # viewers it was shown to before this request
    favorites: int  # viewers who favorited it
    sampled: float  # its Thompson draw from Beta(alpha0 + favorites, beta0 + impressions - favorites); -1 = not sampled
    target_score: float  # the score of the slot it was lifted to
    score_before: float  # its score before the lift


class ImpressionBloomFilter(Struct, frozen=True, forbid_unknown_fields=True):
    """A client-kept Bloom filter of impressed post ids (see ``xserve.mixer.bloom``)."""

    bits: Annotated[bytes, Meta(max_length=1 << 20)]  # base64 in JSON
    num_hashes: Annotated[int, Meta(ge=1, le=32)]


class FeedRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/feed/for_you``."""

    viewer_id: PositiveId
    limit: Annotated[int, Meta(ge=1, le=MAX_ID_LIST)] | None = None  # None = config result_size; at most serving.max_feed_limit
    seen_ids: Annotated[tuple[PositiveId, ...], Meta(max_length=MAX_ID_LIST)] = ()
    served_ids: Annotated[tuple[PositiveId, ...], Meta(max_length=MAX_ID_LIST)] = ()
    in_network_only: bool = False
    is_bottom_request: bool = False  # a "load more" page: previously served posts are excluded
    country_code: Annotated[str, Meta(max_length=8)] = ""
    language_code: Annotated[str, Meta(max_length=16)] = ""
    client_app_id: Annotated[int, Meta(ge=0)] = 0
    explain: bool = False  # add per-post score breakdown and per-filter removals
    bloom_filters: Annotated[tuple[ImpressionBloomFilter, ...], Meta(max_length=8)] = ()


class PostCandidate(Struct):
    """A candidate as it moves through the For You pipeline; stages fill their own fields."""

    post_id: int
    author_id: int
    served_type: ServedType
    # core data (hydrated)
    created_at_ms: int | None = None
    text: str | None = None  # None = core data not hydrated
    in_reply_to_post_id: int | None = None
    repost_of_post_id: int | None = None
    repost_of_user_id: int | None = None
    ancestors: tuple[int, ...] = ()  # parent and conversation root, for conversation dedup
    retrieval_score: float | None = None
    # other hydrators
    in_network: bool | None = None
    video_duration_ms: int | None = None
    subscription_author_id: int | None = None  # set when the post is subscriber-only
    author_screen_name: str | None = None
    author_followers_count: int | None = None
    repost_screen_name: str | None = None
    visibility_labels: tuple[VisibilityLabel, ...] | None = None  # None = not yet checked
    # scorers
    action_scores: ActionScores | None = None
    weighted_score: float | None = None
    diversity_multiplier: float | None = None
    oon_multiplier: float | None = None
    score: float | None = None
    # visibility hydrator, with visibility_labels: why the post's level drops it ("spam", "deleted,gore"); None = allowed
    visibility_reason: str | None = None
    # PhoenixScorer: the request whose ranker call scored it, and the time it was scored as of (None = not ranked)
    prediction_request_id: str | None = None
    last_scored_at_ms: int | None = None
    model_version: str | None = None  # PhoenixScorer: the ranker version that scored it (one per request)
    popular_engaged_users: int | None = None  # PopularSource: engaged viewers it was chosen by
    negative_feedback_multiplier: float | None = None  # NegativeFeedbackScorer: the viewer's faded negatives on its author
    cold_start: ColdStartPick | None = None  # ColdStartScorer: set on the post lifted into the cold-start slot
    ad: AdRef | None = None  # AdSource: set on an ad's creative post (organic posts: None)
    ad_value: float | None = None  # AdValueScorer: the Phoenix weighted score times the bid (None = not ranked)

    @property
    def source(self) -> FeedSource:
        """What the feed response says brought it (``ScoredPost.source``)."""
        return FeedSource.COLD_START if self.cold_start is not None else FeedSource.of(self.served_type)
    has_link: bool = False  # core data: the post has an outbound link (gates the link_open term)
    score_terms: dict[str, float] | None = None  # value model: every term of the weighted score (explain)

    def related_post_ids(self) -> tuple[int, ...]:
        """The post, the original it reposts and the post it replies to (seen-filtering keys)."""
        ids = [self.post_id]
        if self.repost_of_post_id is not None:
            ids.append(self.repost_of_post_id)
        if self.in_reply_to_post_id is not None:
            ids.append(self.in_reply_to_post_id)
        return tuple(ids)


class ScoreExplanation(Struct, frozen=True):
    """Why a post got its score: every factor of the final score, for audits."""

    action_scores: ActionScores | None
    weighted_score: float | None  # Σ weight·P(action), after the negative-score squeeze
    diversity_multiplier: float | None
    oon_multiplier: float | None
    source: ServedType
    retrieval_score: float | None = None
    negative_feedback_multiplier: float | None = None  # the viewer's faded negative feedback on the author (1 = none)
    popular_engaged_users: int | None = None  # the popular source's count, for a post it brought
    cold_start: ColdStartPick | None = None  # the cold-start lift, on the post in the cold-start slot
    # every term of weighted_score before the squeeze, by name (value model: "<head>" = weight·P, product terms,
    # "mutual_follow_*_boost", "author_exploration_bonus", and "perturbation.<head>" multipliers); {} = weighted scorer
    terms: dict[str, float] = {}
    scorer: str = ""  # which scorer made weighted_score: "value_model" or "weighted"
    model_version: str | None = None  # the ranker version that scored it (None = not ranked)
    ad_bid_micros: int | None = None  # an ad: its bid per impression, in millionths of the currency unit
    ad_value: float | None = None  # an ad: the predicted value it was ranked by (weighted score x bid in units)


class ScoredPost(Struct, frozen=True):
    post_id: int
    author_id: int
    score: float | None
    served_type: ServedType
    in_network: bool | None
    repost_of_post_id: int | None = None
    repost_of_user_id: int | None = None
    in_reply_to_post_id: int | None = None
    ancestors: tuple[int, ...] = ()
    screen_names: dict[int, str] = {}
    explain: ScoreExplanation | None = None
    # labels its visibility level allows (a followed author's nsfw post): a client shows the post behind a warning
    visibility_labels: tuple[VisibilityLabel, ...] = ()
    # the ranker call that scored it (None: not ranked, e.g. the recency fallback): send it back on engagements
    prediction_request_id: str | None = None
    last_scored_at_ms: int | None = None  # the time its scores were computed as of (the ranker's now_ms)
    source: FeedSource | None = None  # thunder | retrieval | popular | cold_start | ad (None only in payloads from before it)
    model_version: str | None = None  # the ranker version that scored it: one version for every post of a response
    ad_id: int | None = None  # source "ad": the ad that placed this post (the creative's post id is post_id)


class FilteredOut(Struct, frozen=True):
    """Candidates one filter removed (returned when ``explain`` is set)."""

    filter: str
    post_ids: tuple[int, ...]
    # one per post id where the filter says why (VisibilityFilter: the labels that dropped it at its level,
    # "deleted", or "unchecked" when its labels could not be fetched); empty for the other filters
    reasons: tuple[str, ...] = ()


class StageReport(Struct, frozen=True):
    """Timing and counts of one pipeline component for one request."""

    stage: str
    component: str
    status: str  # ok | error | timeout | length_mismatch | disabled
    duration_ms: float
    count_in: int
    count_out: int
    error: str = ""


class FeedResponse(Struct, frozen=True):
    request_id: str
    posts: tuple[ScoredPost, ...]
    degraded: tuple[str, ...] = ()  # components that failed or timed out, and shards left out; the feed was built without them
    filtered: tuple[FilteredOut, ...] = ()  # explain only
    trace: tuple[StageReport, ...] = ()  # explain only


json_encoder = msgspec.json.Encoder()


# --------------------------------------------------------------------------- added by the mixer


class UserProfile(Struct, frozen=True):
    """What the feed shows about an author (the reference's Gizmoduck user)."""

    user_id: int
    screen_name: str
    followers_count: int = 0


# --------------------------------------------------------------------------- ingest (Thunder write path)


class IngestRejection(Struct, frozen=True):
    """One event the ingest API refused; nothing about it was logged or applied."""

    index: int  # position in the submitted batch
    reason: str  # "<kind>: <detail>", kind one of invalid | future | stale


class IngestResult(Struct, frozen=True):
    """The acknowledgement of one ingest call: accepted events are durable in the event log."""

    accepted: int
    rejected: tuple[IngestRejection, ...] = ()
    first_offset: int = 0  # log offsets of the accepted events: [first_offset, next_offset)
    next_offset: int = 0
    lagging_shards: tuple[str, ...] = ()  # sinks that failed to apply; they catch up from the log


# --------------------------------------------------------------------------- retrieval shards


class PostEmbeddings(Struct, frozen=True):
    """A batch of post embeddings on its way into a retrieval shard (live upserts, backfill).

    Columns are NumPy arrays of one length N (Ray ships them without copying
    element by element); ``vectors`` is (N, D) float32, unit-norm.
    """

    post_ids: Any  # (N,) int64
    author_ids: Any  # (N,) int64
    created_at_ms: Any  # (N,) int64
    vectors: Any  # (N, D) float32
    model_version: str = ""
    in_reply_to_post_ids: Any = None  # (N,) int64, 0 = not a reply; None = no replies in the batch

    def __len__(self) -> int:
        return len(self.post_ids)


class ShardHits(Struct, frozen=True):
    """One retrieval shard's (or the merged) top-k: parallel NumPy arrays, best first."""

    post_ids: Any  # (K,) int64
    author_ids: Any  # (K,) int64
    created_at_ms: Any  # (K,) int64
    scores: Any  # (K,) float32 cosine similarity
    version: str = ""  # the embedding version searched ("" = none yet)
    in_reply_to_post_ids: Any = None  # (K,) int64, 0 = not a reply; None = unknown (all 0)

    def __len__(self) -> int:
        return len(self.post_ids)


# --------------------------------------------------------------------------- added by serving: user events
# The write API turns each accepted request into one of these events; the user
# store applies them idempotently (applying an event twice equals applying it
# once) and persists them in its append-only log, so a restart replays them.

MAX_SCREEN_NAME_CHARS = 50
MAX_MUTED_KEYWORDS = 200  # per user
MAX_KEYWORD_CHARS = 100
MAX_BATCH = 1_000  # engagements (or other items) accepted in one request


class EdgeKind(enum.StrEnum):
    """A directed relation from one user to another (``storage.EDGE_KINDS`` spells the same values)."""

    FOLLOW = "follow"
    BLOCK = "block"
    MUTE = "mute"
    SUBSCRIBE = "subscribe"


Topic = Annotated[str, Meta(min_length=1, max_length=MAX_TOPIC_CHARS)]


class UserUpserted(Struct, frozen=True, tag="user_upserted", forbid_unknown_fields=True):
    """Create a user or change its profile; the follower count is derived from follow edges."""

    user_id: PositiveId
    screen_name: Annotated[str, Meta(max_length=MAX_SCREEN_NAME_CHARS)] = ""
    at_ms: TimestampMs = 0
    topics: Annotated[tuple[Topic, ...], Meta(max_length=MAX_TOPICS)] | None = None  # None = keep the user's topics


class EdgeSet(Struct, frozen=True, tag="edge_set", forbid_unknown_fields=True):
    """``user_id`` follows / blocks / mutes / subscribes to ``target_id`` (no-op when already so)."""

    user_id: PositiveId
    target_id: PositiveId
    kind: EdgeKind
    at_ms: TimestampMs = 0


class EdgeUnset(Struct, frozen=True, tag="edge_unset", forbid_unknown_fields=True):
    """Removes the edge (no-op when absent)."""

    user_id: PositiveId
    target_id: PositiveId
    kind: EdgeKind
    at_ms: TimestampMs = 0


class MutedKeywordsSet(Struct, frozen=True, tag="muted_keywords_set", forbid_unknown_fields=True):
    """Replaces the user's muted keywords."""

    user_id: PositiveId
    keywords: tuple[str, ...] = ()
    at_ms: TimestampMs = 0


class EngagementRecorded(Struct, frozen=True, tag="engagement_recorded", forbid_unknown_fields=True):
    engagement: Engagement


class Served(Struct, frozen=True, tag="served", forbid_unknown_fields=True):
    """Posts the feed returned to the user (the served-history side effect)."""

    user_id: PositiveId
    post_ids: tuple[int, ...]
    at_ms: TimestampMs = 0


UserEvent = UserUpserted | EdgeSet | EdgeUnset | MutedKeywordsSet | EngagementRecorded | Served


class Impression(Struct, frozen=True, array_like=True):
    """One post of a served feed, as the impression log keeps it."""

    post_id: int
    author_id: int
    position: int  # 0 = the first post of the page
    served_type: ServedType  # the source: in-network (Thunder) or out-of-network (retrieval)
    scores: ActionScores | None = None  # the ranker's per-action predictions; None = not ranked (recency fallback)
    score: float | None = None  # the final score it was ordered by
    source: FeedSource | None = None  # what brought it: thunder | retrieval | popular | cold_start | ad


class FeedImpressions(Struct, frozen=True, tag="feed_impressions"):
    """One served feed: the record of the impression log (``DIR/impressions/``), written after the response."""

    request_id: str  # the feed's request id: engagements carry it back as prediction_request_id
    viewer_id: int
    served_at_ms: int
    model_version: str  # the ranker version that scored every ranked post of the feed ("" = none ranked)
    impressions: tuple[Impression, ...]


MAX_SEEN_POSTS = 200  # posts one seen report names: a feed's most at the default serving.max_feed_limit


class FeedSeen(Struct, frozen=True, tag="feed_seen"):
    """What the client showed of one served feed (``POST /v1/impressions``): the impression log's record beside
    the feed's ``FeedImpressions``, joined to it by ``request_id`` (``xserve.loop.impressions.seen_feeds``)."""

    request_id: str  # the served feed's request id
    viewer_id: int
    seen_at_ms: int  # when the server logged the report (its clock)
    post_ids: tuple[int, ...]  # the posts on screen, in screen order (top first)
    first_position: int = 0  # the screen position of post_ids[0] (a later chunk of a long feed starts past 0)


ImpressionRecord = FeedImpressions | FeedSeen  # the impression log's records


class PostLabelsSet(Struct, frozen=True, tag="post_labels_set", forbid_unknown_fields=True):
    """Replaces a post's visibility labels (``PUT /v1/posts/{id}/labels``)."""

    post_id: PositiveId
    labels: tuple[VisibilityLabel, ...]
    at_ms: TimestampMs = 0


class UserQueryData(Struct, frozen=True):
    """Everything the feed needs about its viewer, fetched in one call to the viewer's user shard."""

    user_id: int
    features: UserFeatures
    history: tuple[HistoryItem, ...]  # newest last
    served_ids: tuple[int, ...] = ()  # recently served post ids, newest last


# --------------------------------------------------------------------------- added by serving: HTTP bodies


class UserBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``PUT /v1/users/{id}``."""

    screen_name: Annotated[str, Meta(max_length=MAX_SCREEN_NAME_CHARS)] = ""
    # declared interest topics (replace the user's; absent = keep them): inputs of the ranker and the user tower
    topics: Annotated[tuple[Topic, ...], Meta(max_length=MAX_TOPICS)] | None = None


class MutedKeywordsBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``PUT /v1/users/{id}/muted_keywords``."""

    keywords: Annotated[
        tuple[Annotated[str, Meta(min_length=1, max_length=MAX_KEYWORD_CHARS)], ...],
        Meta(max_length=MAX_MUTED_KEYWORDS),
    ]


class LabelsBody(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``PUT /v1/posts/{id}/labels``."""

    labels: Annotated[tuple[VisibilityLabel, ...], Meta(max_length=len(VisibilityLabel))]


class NewPost(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/posts``: a ``Post`` whose id and time the server may assign."""

    author_id: PositiveId
    text: Annotated[str, Meta(max_length=MAX_TEXT_CHARS)] = ""
    post_id: PositiveId | None = None  # None = the server assigns one
    created_at_ms: TimestampMs | None = None  # None = now
    in_reply_to_post_id: PositiveId | None = None
    in_reply_to_user_id: PositiveId | None = None
    repost_of_post_id: PositiveId | None = None
    repost_of_user_id: PositiveId | None = None
    quote_of_post_id: PositiveId | None = None
    conversation_id: PositiveId | None = None
    media: Annotated[tuple[Media, ...], Meta(max_length=4)] = ()
    subscription_only: bool = False
    has_link: bool | None = None  # the post carries an outbound link; None = an http(s) URL in the text decides


EngagementsBody = Engagement | Annotated[list[Engagement], Meta(min_length=1, max_length=MAX_BATCH)]


# --------------------------------------------------------------------------- added by durability: read endpoints


class UserRecord(Struct, frozen=True):
    """``GET /v1/users/{id}``: what the user store holds about one user."""

    user_id: int
    screen_name: str
    followers_count: int
    features: UserFeatures  # follows, blocks, mutes, subscriptions, muted keywords
    history: tuple[HistoryItem, ...] = ()  # engagement sequence, newest last (at most mixer.history_length)


# --------------------------------------------------------------------------- seen impressions (issue 15)


class SeenImpressions(Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/impressions``: the posts of one served feed the client actually had on screen."""

    viewer_id: PositiveId  # the viewer the feed was served to
    request_id: Annotated[str, Meta(min_length=1, max_length=MAX_PREDICTION_ID_CHARS)]  # the feed's request_id
    post_ids: Annotated[tuple[PositiveId, ...], Meta(min_length=1, max_length=MAX_SEEN_POSTS)]  # screen order, top first
    first_position: Annotated[int, Meta(ge=0, le=10_000)] = 0  # screen position of post_ids[0] (a later chunk of one feed)


ImpressionsBody = SeenImpressions | Annotated[list[SeenImpressions], Meta(min_length=1, max_length=MAX_BATCH)]
