"""``FeedIngress``: the HTTP API (FastAPI inside a Serve deployment) running the For You pipeline in-process.

Endpoints (bodies are msgspec Structs of ``xserve.schema``; errors are
``{"error": "<one line>"}`` with a 4xx status and nothing applied):

=========================================  =========================================================
``POST /v1/feed/for_you``                  ``FeedRequest`` -> ``FeedResponse`` (``explain`` adds the audit trail)
``POST /v1/posts``                         ``NewPost`` -> ``{"post_id"}`` once durable (id assigned when absent)
``GET /v1/posts/{post_id}``                -> the stored ``Post`` (404 when unknown or deleted)
``DELETE /v1/posts/{post_id}``             -> ``{"post_id"}``
``PUT /v1/posts/{post_id}/labels``         ``LabelsBody`` -> ``{"post_id"}``
``POST /v1/engagements``                   an ``Engagement`` or a list of them -> ``{"accepted"}``
``POST /v1/impressions``                   a ``SeenImpressions`` or a list: what the client showed -> ``{"accepted"}``
``PUT /v1/users/{user_id}``                ``UserBody`` -> ``{"user_id"}`` (creates or updates)
``GET /v1/users/{user_id}``                -> ``UserRecord`` (profile, relations, muted keywords, history)
``PUT|DELETE /v1/users/{id}/{rel}/{t}``    rel = follows | blocks | mutes | subscriptions
``PUT /v1/users/{id}/muted_keywords``      ``MutedKeywordsBody``
``PUT /v1/ads/{ad_id}``                    ``AdBody`` -> ``{"ad_id"}`` once durable (creates or replaces; counters kept)
``GET /v1/ads/{ad_id}``                    -> the stored ``Ad`` with its pacing counters
``DELETE /v1/ads/{ad_id}``                 -> ``{"ad_id"}``; the ad is no longer delivered
``GET /v1/admin/stats``                    admission counters and the stores' stats (an admin route)
``GET /healthz``                           200 when every part answers, else 503
``GET /openapi.json``                      the OpenAPI document (request bodies from msgspec schemas)
=========================================  =========================================================

Before any routing, :class:`EdgeMiddleware` checks the API key of write and
admin requests (``serving.api_key``; 401 without it) and admits each request
against its class's in-flight limit (``serving.max_inflight_feeds`` /
``max_inflight_writes``; 503 with ``Retry-After`` beyond it), so an
unauthorised or surplus request costs no body read and no service call.

The deployment holds no state of its own: users, posts and in-network posts
live in named actors (``names``, created once, shared by every replica); retrieval and
the ranker are Serve deployments reached through handles. ``reconfigure``
applies the Serve config's ``user_config`` (scoring weights, mixer limits)
live by rebuilding the pipeline.
"""

# no `from __future__ import annotations`: FastAPI must see the real Request annotations through @serve.ingress

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from xserve.actors.naming import ActorNames
from xserve.config import ServingConfig, XServeConfig, merge_config
from xserve.deployments.admission import AdmissionController, RequestClass, classify
from xserve.deployments.api import ApiError, FeedAPI
from xserve.deployments.api_key import ApiKeyGuard
from xserve.deployments.clients import StoreUnavailable
from xserve.deployments.services import ServiceGraph
from xserve.pipeline import stray_cancellation
from xserve.schema import (
    Ad,
    AdBody,
    Engagement,
    FeedRequest,
    FeedResponse,
    LabelsBody,
    MutedKeywordsBody,
    NewPost,
    Post,
    SeenImpressions,
    UserBody,
    UserRecord,
)

__all__ = ["EdgeMiddleware", "FeedIngress", "api_app"]

log = logging.getLogger("xserve.ingress")

api_app = FastAPI(
    title="xserve",
    version="0.1.0",
    description="The For You feed: a re-implementation of X's recommender (Home Mixer, Thunder, Phoenix) on Ray Serve.",
)

_JSON = "application/json"


def _body_schema(type_: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": msgspec.json.schema(type_)}}}}


def _response_schema(type_: Any) -> dict[str, Any]:
    return {"responses": {"200": {"description": "OK", "content": {_JSON: {"schema": msgspec.json.schema(type_)}}}}}


_ENGAGEMENTS_SCHEMA = {"oneOf": [msgspec.json.schema(Engagement), msgspec.json.schema(list[Engagement])]}
_IMPRESSIONS_SCHEMA = {"oneOf": [msgspec.json.schema(SeenImpressions), msgspec.json.schema(list[SeenImpressions])]}


def _ok(payload: dict[str, Any] | bytes) -> Response:
    body = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return Response(content=body, media_type=_JSON)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    line = reason.splitlines()[0] if reason else "error"
    return JSONResponse(status_code=status, content={"error": line}, headers=headers)


@api_app.exception_handler(RequestValidationError)
async def _bad_path(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return _error(422, f"{where}: {first.get('msg', 'invalid value')}")


@api_app.exception_handler(StarletteHTTPException)
async def _no_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # unknown path (404) or method (405): the same {"error"} shape as every other refusal
    reason = f"{exc.detail}: {request.method} {request.url.path}"
    return _error(exc.status_code, reason, dict(exc.headers) if exc.headers else None)


@dataclass(frozen=True)
class Edge:
    """What :class:`EdgeMiddleware` enforces, built by the ingress from ``serving`` (kept on ``api_app.state``)."""

    key: ApiKeyGuard
    key_feeds: bool  # feed reads need the key too
    admission: AdmissionController

    @classmethod
    def from_config(cls, serving: ServingConfig) -> "Edge":
        limits = {RequestClass.FEED: serving.max_inflight_feeds, RequestClass.WRITE: serving.max_inflight_writes}
        return cls(ApiKeyGuard(serving.api_key), serving.api_key_feeds, AdmissionController(limits, serving.retry_after_s))

    def needs_key(self, cls: RequestClass) -> bool:
        return cls.needs_key or (self.key_feeds and cls is RequestClass.FEED)


class EdgeMiddleware:
    """ASGI middleware: the API key, then admission, before routing and before the body is read.

    A request without the key gets 401 (with ``WWW-Authenticate``); one beyond
    its class's in-flight limit gets 503 with ``Retry-After`` at once; an
    admitted one holds its slot until its response is sent (or the client
    goes away). Reads the :class:`Edge` from ``app.state.edge``; none = off.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edge: Edge | None = getattr(scope["app"].state, "edge", None) if scope["type"] == "http" else None
        if edge is None:
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        cls = classify(scope["method"], path[len(root) :] if root and path.startswith(root) else path)
        if edge.needs_key(cls) and (reason := edge.key.refusal(Headers(scope=scope))) is not None:
            await _error(401, reason, {"WWW-Authenticate": 'Bearer realm="xserve"'})(scope, receive, send)
            return
        if (refusal := edge.admission.try_acquire(cls)) is not None:
            await _error(refusal.status, refusal.reason, {"Retry-After": str(refusal.retry_after)})(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            edge.admission.release(cls)


api_app.add_middleware(EdgeMiddleware)


@serve.deployment(max_ongoing_requests=64)  # app.py sets it from serving.ingress_max_ongoing_requests
@serve.ingress(api_app)
class FeedIngress:
    """See the module docstring. ``config`` is ``config_to_dict(XServeConfig)`` (small, picklable); ``names``
    names the stateful actors this replica attaches to."""

    def __init__(self, config: dict[str, Any], names: ActorNames, retrieval: Any, ranker: Any) -> None:
        self._base = msgspec.convert(config, XServeConfig)
        self._config = self._base
        self._graph = ServiceGraph(self._base, names, retrieval, ranker)
        self._api = FeedAPI(
            self._graph.api_users,
            self._graph.api_posts,
            self._graph.sinks,
            self._graph.run_pipeline,
            self._graph.now_ms,
            viewer_wait_s=(self._base.mixer.query_hydrator_timeout_s, self._base.mixer.request_timeout_s),
            ads=self._graph.api_ads,
            viewers=self._graph.users,  # the feed's history: the context window, trimmed in blocks
            max_feed_limit=self._base.serving.max_feed_limit,
        )
        self._max_body = self._base.serving.max_body_bytes
        # fixed for the replica's life (a reconfigure does not change the key or the limits: slots held by
        # requests in flight belong to this controller)
        self._edge = Edge.from_config(self._base.serving)
        api_app.state.edge = self._edge  # this replica's app (one ingress per replica process)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live update from the Serve config: scoring weights and mixer limits take effect on the next request."""
        self._config = merge_config(self._base, user_config)
        self._graph.rebuild_pipeline(self._config)
        log.info("reconfigured: %s", sorted(user_config or {}))

    async def _body(self, request: Request) -> bytes:
        """The body, read only up to the limit: a larger one (declared or streamed) is refused with 413."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise ApiError(413, f"body of {declared} bytes exceeds the limit of {self._max_body}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise ApiError(413, f"body exceeds the limit of {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _call(self, fn: Any, *args: Any, request: Request | None = None) -> Response:
        self._graph.ensure_maintenance()
        try:
            if request is not None:
                args = (*args, await self._body(request))
            return _ok(await fn(*args))
        except ApiError as exc:
            retry = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
            return _error(exc.status, exc.reason, retry)
        except StoreUnavailable as exc:  # a shard unreachable for serving.store_unavailable_wait_s
            return _error(503, f"{exc}; retry later", {"Retry-After": "1"})
        except asyncio.CancelledError:
            if not stray_cancellation():
                raise  # the client went away
            # a call it made was cancelled under it (xserve.pipeline.stray_cancellation): let through, Serve's
            # proxy would answer a bare 500 and log nothing
            log.warning("%s: a call was cancelled under the request; answered 503", fn.__name__)
            return _error(503, "a call this request made was cancelled under it; retry", {"Retry-After": "1"})

    # ---------------------------------------------------------------- routes

    @api_app.post("/v1/feed/for_you", openapi_extra={**_body_schema(FeedRequest), **_response_schema(FeedResponse)})
    async def feed(self, request: Request) -> Response:
        return await self._call(self._api.feed, request=request)

    @api_app.post("/v1/posts", openapi_extra=_body_schema(NewPost))
    async def create_post(self, request: Request) -> Response:
        return await self._call(self._api.create_post, request=request)

    @api_app.get("/v1/posts/{post_id}", openapi_extra=_response_schema(Post))
    async def get_post(self, post_id: int) -> Response:
        return await self._call(self._api.get_post, post_id)

    @api_app.delete("/v1/posts/{post_id}")
    async def delete_post(self, post_id: int) -> Response:
        return await self._call(self._api.delete_post, post_id)

    @api_app.put("/v1/posts/{post_id}/labels", openapi_extra=_body_schema(LabelsBody))
    async def set_labels(self, post_id: int, request: Request) -> Response:
        return await self._call(self._api.set_labels, post_id, request=request)

    @api_app.post(
        "/v1/engagements",
        openapi_extra={"requestBody": {"required": True, "content": {_JSON: {"schema": _ENGAGEMENTS_SCHEMA}}}},
    )
    async def engagements(self, request: Request) -> Response:
        return await self._call(self._api.engagements, request=request)

    @api_app.post(
        "/v1/impressions",
        openapi_extra={"requestBody": {"required": True, "content": {_JSON: {"schema": _IMPRESSIONS_SCHEMA}}}},
    )
    async def impressions(self, request: Request) -> Response:
        return await self._call(self._api.impressions, request=request)

    @api_app.get("/v1/users/{user_id}", openapi_extra=_response_schema(UserRecord))
    async def get_user(self, user_id: int) -> Response:
        return await self._call(self._api.get_user, user_id)

    @api_app.put("/v1/users/{user_id}", openapi_extra=_body_schema(UserBody))
    async def put_user(self, user_id: int, request: Request) -> Response:
        return await self._call(self._api.put_user, user_id, request=request)

    @api_app.put("/v1/users/{user_id}/muted_keywords", openapi_extra=_body_schema(MutedKeywordsBody))
    async def muted_keywords(self, user_id: int, request: Request) -> Response:
        return await self._call(self._api.muted_keywords, user_id, request=request)

    @api_app.put("/v1/users/{user_id}/{relation}/{target_id}")
    async def set_edge(self, user_id: int, relation: str, target_id: int) -> Response:
        return await self._call(self._api.edge, user_id, relation, target_id, True)

    @api_app.delete("/v1/users/{user_id}/{relation}/{target_id}")
    async def unset_edge(self, user_id: int, relation: str, target_id: int) -> Response:
        return await self._call(self._api.edge, user_id, relation, target_id, False)

    @api_app.put("/v1/ads/{ad_id}", openapi_extra=_body_schema(AdBody))
    async def put_ad(self, ad_id: int, request: Request) -> Response:
        return await self._call(self._api.put_ad, ad_id, request=request)

    @api_app.get("/v1/ads/{ad_id}", openapi_extra=_response_schema(Ad))
    async def get_ad(self, ad_id: int) -> Response:
        return await self._call(self._api.get_ad, ad_id)

    @api_app.delete("/v1/ads/{ad_id}")
    async def delete_ad(self, ad_id: int) -> Response:
        return await self._call(self._api.delete_ad, ad_id)

    @api_app.get("/v1/admin/stats")
    async def admin_stats(self) -> Response:
        return _ok({"admission": self._edge.admission.stats(), **await self._graph.stats()})

    @api_app.get("/healthz")
    async def healthz(self) -> Response:
        parts = await self._graph.health()
        status = 200 if all(p == "ok" for p in parts.values()) else 503
        return JSONResponse(status_code=status, content={"ready": status == 200, "parts": parts})

    # ---------------------------------------------------------------- for tests and tools

    async def stats(self) -> dict[str, Any]:
        return await self._graph.stats()

    async def drain(self) -> None:
        """Wait for the side effects of finished requests (tests)."""
        await self._graph.drain()


