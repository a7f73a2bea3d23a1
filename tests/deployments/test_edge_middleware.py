"""EdgeMiddleware over a toy ASGI app (no Ray): key before admission, slots held until the response, released on errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from xserve.config import ServingConfig
from xserve.deployments.ingress import Edge, EdgeMiddleware


def toy_app(gate: asyncio.Event, **serving) -> Starlette:
    async def slow(request):
        await gate.wait()
        return JSONResponse({"ok": True})

    async def boom(request):
        raise RuntimeError("handler failed")

    app = Starlette(routes=[Route("/v1/feed/for_you", slow, methods=["POST"]), Route("/v1/posts", boom, methods=["POST"]),
                            Route("/healthz", slow)])
    app.add_middleware(EdgeMiddleware)
    app.state.edge = Edge.from_config(ServingConfig(**serving))
    return app


def test_surplus_feeds_are_refused_at_once_and_slots_return_after_the_response():
    async def scenario():
        gate = asyncio.Event()
        app = toy_app(gate, max_inflight_feeds=2, retry_after_s=2.5)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            held = [asyncio.create_task(http.post("/v1/feed/for_you")) for _ in range(2)]

            async def both_admitted():  # and held at the gate
                while app.state.edge.admission.stats()["feed"]["inflight"] < 2:
                    await asyncio.sleep(0.001)

            await asyncio.wait_for(both_admitted(), timeout=10)
            refused = await asyncio.wait_for(http.post("/v1/feed/for_you"), timeout=1.0)  # not queued behind the gate
            assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
            assert "max_inflight_feeds" in refused.json()["error"]
            probe = asyncio.create_task(http.get("/healthz"))  # open routes are never counted
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held, probe)] == [200, 200, 200]
            assert (await http.post("/v1/feed/for_you")).status_code == 200
            stats = app.state.edge.admission.stats()["feed"]
            assert stats["inflight"] == 0 and stats["peak"] == 2 and stats["refused"] == 1

    asyncio.run(scenario())


def test_a_failing_handler_gives_its_slot_back():
    async def scenario():
        app = toy_app(asyncio.Event(), max_inflight_writes=1)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(3):
                assert (await http.post("/v1/posts")).status_code == 500
        assert app.state.edge.admission.stats()["write"]["inflight"] == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(("feeds_need_key", "feed_status"), [(False, 200), (True, 401)])
def test_the_key_is_checked_before_admission_and_guards_feeds_only_when_asked(feeds_need_key, feed_status):
    async def scenario():
        gate = asyncio.Event()
        gate.set()
        app = toy_app(gate, api_key="k", api_key_feeds=feeds_need_key, max_inflight_writes=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            resp = await http.post("/v1/posts")
            assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
            assert (await http.post("/v1/feed/for_you")).status_code == feed_status
            assert (await http.post("/v1/feed/for_you", headers={"X-API-Key": "k"})).status_code == 200
        assert app.state.edge.admission.stats()["write"]["admitted"] == 0  # refused before taking a slot

    asyncio.run(scenario())
