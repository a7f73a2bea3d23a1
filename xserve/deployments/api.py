"""``FeedAPI``: what every HTTP endpoint does, apart from HTTP itself (the ingress is a thin shell over it).

Each method takes decoded path values and the raw body, validates at the
edge, and either raises :class:`ApiError` (status + one-line reason, nothing
applied) or performs the request. Writes return once they are durable: the
user store and the post catalog log events (fsync) before they acknowledge.
The catalog's logs are the source of truth for posts: Thunder and retrieval
consume them (:class:`PostSink`), and a post write returns once both have read
it, so the writer sees its post in-network at once; if the process dies before
that, they read it after the restart (``docs/reliability.md``, "Durability").

Bodies are decoded with msgspec decoders built once; the reason of a decode
error names the field and the rule (``Expected `int` >= 1 - at `$.limit```).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from xserve.deployments.clients import AdsHandleClient, PostCatalogClient, UserStoreClient, UserStoreUnavailable
from xserve.schema import (
    Ad,
    AdBody,
    EdgeKind,
    EdgeSet,
    EdgeUnset,
    Engagement,
    EngagementRecorded,
    EngagementsBody,
    FeedRequest,
    FeedResponse,
    FeedSeen,
    ImpressionsBody,
    LabelsBody,
    MutedKeywordsBody,
    MutedKeywordsSet,
    NewPost,
    Post,
    PostCreated,
    PostDeleted,
    PostLabelsSet,
    QuotedPostDeleted,
    SeenImpressions,
    UserBody,
    UserEvent,
    UserQueryData,
    UserRecord,
    UserUpserted,
    json_encoder,
)
from xserve.thunder.refs import post_ref
from xserve.users.writes import WriteRefused

__all__ = ["EDGE_PATHS", "USER_STORE_STALE", "ApiError", "FeedAPI", "PostSink"]

log = logging.getLogger("xserve.api")

MAX_ID = 2**63 - 1
USER_STORE_STALE = "user_store_stale"  # in a feed's ``degraded``: built from the viewer's last known data
# URL segment -> edge kind: /v1/users/{id}/<segment>/{target}
EDGE_PATHS: dict[str, EdgeKind] = {
    "follows": EdgeKind.FOLLOW,
    "blocks": EdgeKind.BLOCK,
    "mutes": EdgeKind.MUTE,
    "subscriptions": EdgeKind.SUBSCRIBE,
}


class ApiError(Exception):
    """A request refused at the edge: HTTP ``status``, a one-line ``reason``, and for a 503 when to retry."""

    def __init__(self, status: int, reason: str, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s  # the Retry-After header, seconds


class PostSink(Protocol):
    """A service that keeps its own view of posts (Thunder, retrieval) by consuming the post catalog's logs."""

    async def catch_up(self) -> Any:
        """Return once the sink has read (durably or recoverably) everything the catalog logged so far."""


_DECODERS: dict[Any, msgspec.json.Decoder] = {  # built once
    t: msgspec.json.Decoder(t)
    for t in (FeedRequest, NewPost, UserBody, MutedKeywordsBody, LabelsBody, EngagementsBody, AdBody, ImpressionsBody)
}


def decode(type_: Any, body: bytes) -> Any:
    """Decode a request body; raises ``ApiError`` 400 (not JSON) or 422 (wrong shape) with msgspec's reason."""
    try:
        return _DECODERS[type_].decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


def new_request_id(viewer_id: int) -> str:
    """A feed's request id: 16 random hex digits, a dash, the viewer (so a report names whose feed it was)."""
    return f"{uuid.uuid4().hex[:16]}-{viewer_id}"


def served_to(request_id: str, viewer_id: int) -> bool:
    """Whether ``request_id`` can be a feed served to ``viewer_id`` (its :func:`new_request_id` suffix)."""
    return request_id.endswith(f"-{viewer_id}")


def check_id(name: str, value: int) -> int:
    if not 0 < value <= MAX_ID:
        raise ApiError(422, f"{name} must be a positive 64-bit integer, got {value}")
    return value


class FeedAPI:
    """The HTTP API's logic over the service clients; ``now_ms`` is the clock (injected).

    ``viewer_wait_s = (stale_after, give_up_after)`` bounds the feed's user-store call: past the first,
    a viewer whose earlier answer is kept gets a feed from it (``degraded`` names ``user_store_stale``);
    past the second, one without gets 503 with Retry-After.

    ``viewers`` is the feed's user-store client (default ``users``): the history it returns is the ranker's
    context window, trimmed in blocks (``mixer.history_trim_block``), not the API's newest ``history_length``.
    With the newest entries, a full history slides by one on every engagement and the Ranker re-encodes the
    whole context each time (issue 16: 37 % of repeat feeds missed the KV cache on the medium world).
    """

    def __init__(
        self,
        users: UserStoreClient,
        posts: PostCatalogClient,
        sinks: Sequence[PostSink],
        pipeline: Callable[[FeedRequest, str, int, UserQueryData], Any],
        now_ms: Callable[[], int],
        rng: random.Random | None = None,
        viewer_wait_s: tuple[float, float] = (0.2, 1.5),
        ads: AdsHandleClient | None = None,
        viewers: UserStoreClient | None = None,
        max_feed_limit: int = 200,
    ) -> None:
        self._users = users
        self._max_feed_limit = max_feed_limit
        self._viewers = viewers if viewers is not None else users
        self._ads = ads  # the ads inventory; None: the /v1/ads routes answer 404
        self._viewer_wait_s = viewer_wait_s
        self._posts = posts
        self._sinks = list(sinks)
        self._pipeline = pipeline  # async (request, request_id, now_ms, viewer_data) -> FeedResponse
        self._now_ms = now_ms
        self._rng = rng or random.Random()

    # ---------------------------------------------------------------- feed

    async def feed(self, body: bytes) -> bytes:
        req: FeedRequest = decode(FeedRequest, body)
        if req.limit is not None and req.limit > self._max_feed_limit:
            raise ApiError(422, f"limit {req.limit} is more than serving.max_feed_limit = {self._max_feed_limit}: "
                                "ask for fewer posts, or page with seen_ids")
        try:
            data, stale = await self._viewers.viewer_data(req.viewer_id, *self._viewer_wait_s)
        except UserStoreUnavailable as exc:
            raise ApiError(503, str(exc), retry_after_s=1) from None
        if data is None:
            raise ApiError(404, f"unknown user {req.viewer_id} (viewer_id)")
        request_id = new_request_id(req.viewer_id)
        # the viewer's data rides in the query: its hydrators read it, so one user-store call per feed
        response: FeedResponse = await self._pipeline(req, request_id, self._now_ms(), data)
        if stale:
            response = msgspec.structs.replace(response, degraded=(USER_STORE_STALE, *response.degraded))
        return json_encoder.encode(response)

    # ---------------------------------------------------------------- posts

    def _new_post_id(self, now_ms: int) -> int:
        # time-ordered like a Snowflake id: 41+ bits of ms, 20 random bits (collision-free in practice)
        return (now_ms << 20) | self._rng.getrandbits(20)

    async def create_post(self, body: bytes) -> dict[str, int]:
        new: NewPost = decode(NewPost, body)
        now = self._now_ms()
        if new.created_at_ms is not None and new.created_at_ms > now:
            raise ApiError(422, f"created_at_ms {new.created_at_ms} is in the future (now is {now})")
        await self._require_users([new.author_id], "author_id")
        parents = [p for p in (new.in_reply_to_post_id, new.repost_of_post_id, new.quote_of_post_id) if p is not None]
        found = await self._posts.get_posts(parents) if parents else {}
        for field in ("in_reply_to_post_id", "repost_of_post_id", "quote_of_post_id"):
            pid = getattr(new, field)
            if pid is not None and pid not in found:
                raise ApiError(404, f"unknown post {pid} ({field})")
        if new.post_id is not None and await self._posts.get_posts([new.post_id]):
            raise ApiError(409, f"post {new.post_id} already exists (post_id)")
        post = _complete(new, new.post_id or self._new_post_id(now), now, found)
        event = PostCreated(post)
        await self._posts.write([event])  # durable here: the catalog's event log is fsynced
        await self._catch_up()
        return {"post_id": post.post_id}

    async def get_post(self, post_id: int) -> bytes:
        """The stored post (labels as currently set); 404 when unknown or deleted."""
        check_id("post_id", post_id)
        post = (await self._require_posts([post_id]))[post_id]
        return json_encoder.encode(post)

    async def delete_post(self, post_id: int) -> dict[str, int]:
        """Delete the post and its recent quotes (``QuotedPostDeleted``, as the reference does).

        The quotes go first: if the call fails half-way the post still exists, so a retry finds the quotes
        left. A quote written while this runs is still kept out of feeds: the visibility check drops a
        quote whose quoted post is gone.
        """
        check_id("post_id", post_id)
        post = (await self._require_posts([post_id]))[post_id]
        now = self._now_ms()
        quotes = await self._posts.quotes_of(post_id)
        if quotes:
            await self._posts.write([QuotedPostDeleted(q, post_id, now, quoting_author_id=a) for q, a in quotes])
        await self._posts.write([PostDeleted(post_id, now, author_id=post.author_id)])
        await self._catch_up()
        return {"post_id": post_id}

    async def set_labels(self, post_id: int, body: bytes) -> dict[str, int]:
        check_id("post_id", post_id)
        labels: LabelsBody = decode(LabelsBody, body)
        await self._require_posts([post_id])
        await self._posts.write([PostLabelsSet(post_id, labels.labels, self._now_ms())])
        return {"post_id": post_id}

    async def _catch_up(self) -> None:
        # the write is durable in the catalog already: a sink that fails now reads it on its next catch-up
        # (its own timer, or after a restart), so the write is still acknowledged
        results = await asyncio.gather(*(sink.catch_up() for sink in self._sinks), return_exceptions=True)
        for sink, result in zip(self._sinks, results):
            if isinstance(result, Exception):
                log.warning("post sink %r did not catch up now (it will later): %s", sink, result)
            elif isinstance(result, BaseException):
                raise result

    async def _require_posts(self, post_ids: Sequence[int]) -> dict[int, Post]:
        found = await self._posts.get_posts(post_ids)
        for pid in post_ids:
            if pid not in found:
                raise ApiError(404, f"unknown post {pid}")
        return found

    async def _require_users(self, user_ids: Sequence[int], field: str) -> None:
        profiles = await self._users.profiles(user_ids)
        for u in user_ids:
            if u not in profiles:
                raise ApiError(404, f"unknown user {u} ({field})")

    # ---------------------------------------------------------------- ads

    def _ad_store(self) -> AdsHandleClient:
        if self._ads is None:
            raise ApiError(404, "this server has no ads inventory")
        return self._ads

    async def put_ad(self, ad_id: int, body: bytes) -> dict[str, int]:
        """Create or replace an ad (its spend and impressions are kept); the advertiser and the creative post
        must exist. Returns once durable."""
        check_id("ad_id", ad_id)
        spec: AdBody = decode(AdBody, body)
        store = self._ad_store()
        await self._require_users([spec.advertiser_id], "advertiser_id")
        creative = (await self._require_posts([spec.creative_post_id]))[spec.creative_post_id]
        await store.put(Ad(
            ad_id=ad_id, advertiser_id=spec.advertiser_id, creative_post_id=spec.creative_post_id,
            creative_author_id=creative.author_id, bid_micros=spec.bid_micros, budget_micros=spec.budget_micros,
            targeting=spec.targeting, updated_at_ms=self._now_ms(),
        ))
        return {"ad_id": ad_id}

    async def get_ad(self, ad_id: int) -> bytes:
        """The stored ad with its counters (``spent_micros``, ``impressions``); 404 when unknown."""
        check_id("ad_id", ad_id)
        ad = await self._ad_store().get(ad_id)
        if ad is None:
            raise ApiError(404, f"unknown ad {ad_id}")
        return json_encoder.encode(ad)

    async def delete_ad(self, ad_id: int) -> dict[str, int]:
        check_id("ad_id", ad_id)
        refused = await self._ad_store().delete(ad_id)
        if refused is not None:
            raise ApiError(*refused)
        return {"ad_id": ad_id}

    # ---------------------------------------------------------------- engagements

    async def engagements(self, body: bytes) -> dict[str, int]:
        decoded = decode(EngagementsBody, body)
        batch: list[Engagement] = [decoded] if isinstance(decoded, Engagement) else decoded
        found = await self._require_posts(sorted({e.post_id for e in batch}))
        for i, e in enumerate(batch):
            if found[e.post_id].author_id != e.author_id:
                raise ApiError(422, f"engagement {i}: author_id {e.author_id} is not the author of post {e.post_id}")
        await self._write_users([EngagementRecorded(e) for e in batch])
        await self._count_engagements(batch, found)
        return {"accepted": len(batch)}

    # ---------------------------------------------------------------- seen impressions

    async def impressions(self, body: bytes) -> dict[str, int]:
        """Log what the client showed of served feeds (``SeenImpressions``: the feed's request id and the posts on
        screen, top first) beside the feeds' impressions; they then count as the feed's impressions in training
        (``xserve.loop.impressions.seen_feeds``). Logged as the feeds are (fsynced at most every
        ``loop.impression_sync_interval_s``) before the answer."""
        decoded = decode(ImpressionsBody, body)
        batch: list[SeenImpressions] = [decoded] if isinstance(decoded, SeenImpressions) else decoded
        for i, r in enumerate(batch):
            if not served_to(r.request_id, r.viewer_id):
                raise ApiError(422, f"report {i}: request_id {r.request_id!r} is not a feed served to viewer_id "
                                    f"{r.viewer_id} (a feed's request_id ends with -<viewer_id>)")
            if len(set(r.post_ids)) != len(r.post_ids):
                repeated = next(p for p in r.post_ids if r.post_ids.count(p) > 1)
                raise ApiError(422, f"report {i}: post_ids name post {repeated} more than once")
        await self._require_users(sorted({r.viewer_id for r in batch}), "viewer_id")
        now = self._now_ms()
        logged = await self._users.record_seen(
            [FeedSeen(r.request_id, r.viewer_id, now, r.post_ids, r.first_position) for r in batch])
        if not logged:
            raise ApiError(409, "this server logs no impressions (loop.log_impressions is false)")
        return {"accepted": len(batch)}

    async def _count_engagements(self, batch: Sequence[Engagement], posts: dict[int, Post]) -> None:
        """Count the engagements on their posts (the popular source, cold start). The engagements are durable in
        the user store already and the counters are soft state, so a failure here is logged, not refused."""
        dated = [msgspec.structs.replace(e, post_created_at_ms=posts[e.post_id].created_at_ms) for e in batch]
        try:
            await self._posts.record_engagements(dated)
        except Exception as exc:  # noqa: BLE001 - statistics; the write itself succeeded
            log.warning("counting %d engagements failed (the popular source misses them): %s", len(dated), exc)

    # ---------------------------------------------------------------- users

    async def get_user(self, user_id: int) -> bytes:
        """The stored user: profile, relations, muted keywords and engagement history; 404 when unknown."""
        check_id("user_id", user_id)
        data = await self._users.query_data(user_id)
        profile = (await self._users.profiles([user_id])).get(user_id)
        if data is None or profile is None:
            raise ApiError(404, f"unknown user {user_id}")
        return json_encoder.encode(
            UserRecord(user_id, profile.screen_name, profile.followers_count, data.features, data.history)
        )

    async def put_user(self, user_id: int, body: bytes) -> dict[str, int]:
        check_id("user_id", user_id)
        user: UserBody = decode(UserBody, body or b"{}")
        await self._write_users([UserUpserted(user_id, user.screen_name, self._now_ms(), topics=user.topics)])
        return {"user_id": user_id}

    async def edge(self, user_id: int, segment: str, target_id: int, present: bool) -> dict[str, int]:
        check_id("user_id", user_id)
        check_id("target_id", target_id)
        kind = EDGE_PATHS.get(segment)
        if kind is None:
            raise ApiError(404, f"unknown relation {segment!r}; use one of {sorted(EDGE_PATHS)}")
        event = (EdgeSet if present else EdgeUnset)(user_id, target_id, kind, self._now_ms())
        await self._write_users([event])
        return {"user_id": user_id, "target_id": target_id}

    async def muted_keywords(self, user_id: int, body: bytes) -> dict[str, int]:
        check_id("user_id", user_id)
        kw: MutedKeywordsBody = decode(MutedKeywordsBody, body)
        await self._write_users([MutedKeywordsSet(user_id, kw.keywords, self._now_ms())])
        return {"user_id": user_id}

    async def _write_users(self, events: Sequence[UserEvent]) -> None:
        try:
            await self._users.write(events)
        except WriteRefused as exc:
            raise ApiError(exc.status, str(exc)) from None


_URL = re.compile(r"https?://\S", re.IGNORECASE)


def has_outbound_link(text: str) -> bool:
    """Whether a post's text carries an outbound link (an http or https URL): marks the post at creation."""
    return _URL.search(text) is not None


def _complete(new: NewPost, post_id: int, now_ms: int, parents: dict[int, Post]) -> Post:
    """The stored ``Post``: links to the parent's author and conversation filled in from the parents, and the
    refs Thunder's rules read of the posts it replies to or reposts (:mod:`xserve.thunder.refs`)."""
    reply_to = parents.get(new.in_reply_to_post_id) if new.in_reply_to_post_id else None
    repost_of = parents.get(new.repost_of_post_id) if new.repost_of_post_id else None
    conversation = new.conversation_id
    if conversation is None and reply_to is not None:
        conversation = reply_to.root_id
    return Post(
        post_id=post_id,
        author_id=new.author_id,
        created_at_ms=new.created_at_ms if new.created_at_ms is not None else now_ms,
        text=new.text,
        in_reply_to_post_id=new.in_reply_to_post_id,
        in_reply_to_user_id=new.in_reply_to_user_id or (reply_to.author_id if reply_to else None),
        repost_of_post_id=new.repost_of_post_id,
        repost_of_user_id=new.repost_of_user_id or (repost_of.author_id if repost_of else None),
        quote_of_post_id=new.quote_of_post_id,
        conversation_id=conversation,
        media=new.media,
        subscription_only=new.subscription_only,
        has_link=new.has_link if new.has_link is not None else has_outbound_link(new.text),
        reply_parent=post_ref(reply_to) if reply_to else None,
        repost_source=post_ref(repost_of) if repost_of else None,
    )
