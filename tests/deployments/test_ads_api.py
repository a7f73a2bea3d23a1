"""Issue 17 item 5 over HTTP, in the session's served app (``served_app``, tests/conftest.py): ``PUT /v1/ads``,
two feed pages whose ads are spaced across the page boundary and marked ``source: "ad"`` with their ad id,
explain's bid and value, and spent budgets stopping delivery.

The session app runs with ``ads.min_gap_ms`` 0 (``served_app_config``), so the second page, a moment after the
first, may carry an ad. The test deletes its ads, so later modules see none. Ids of its own: users 921_xxx, ads 921_xxx; viewer 187 is a world user (a history, a ranked feed).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SERVED_APP, wait_until

pytestmark = pytest.mark.ray

VIEWER, ADVERTISER, ADS = 187, 921_001, (921_011, 921_012)


@pytest.fixture(scope="module")
def http(served_app):
    with httpx.Client(base_url=served_app.url, timeout=30, headers=served_app.auth) as client:
        yield client


def _drain() -> None:
    """Wait for the finished feeds' side effects (the served history, the ads' charges)."""
    from ray import serve

    serve.get_app_handle(SERVED_APP).drain.remote().result()


def test_ads_are_spaced_across_pages_marked_and_stop_when_spent(http):
    assert http.put(f"/v1/users/{ADVERTISER}", json={"screen_name": "brand"}).status_code == 200
    creatives = [http.post("/v1/posts", json={"author_id": ADVERTISER, "text": f"our product {i}"}).json()["post_id"]
                 for i in range(2)]
    ad = {"advertiser_id": ADVERTISER, "bid_micros": 1_000_000, "budget_micros": 1_000_000,  # one impression each
          "targeting": {"countries": ["FR"]}}
    assert http.put(f"/v1/ads/{ADS[0]}", json={**ad, "creative_post_id": 1}).status_code == 404  # no such post
    assert http.put(f"/v1/ads/{ADS[0]}", json={**ad, "creative_post_id": creatives[0], "bid_micros": 0}).status_code == 422
    try:
        for ad_id, creative in zip(ADS, creatives):
            assert http.put(f"/v1/ads/{ad_id}", json={**ad, "creative_post_id": creative}).json() == {"ad_id": ad_id}

        answers: list[dict] = []

        def page(**kw) -> list[dict]:
            body = {"viewer_id": VIEWER, "limit": 4, "country_code": "FR", "explain": True, **kw}
            resp = http.post("/v1/feed/for_you", json=body)
            assert resp.status_code == 200, resp.text
            _drain()
            answers.append(resp.json())
            return resp.json()["posts"]

        assert [p.get("ad_id") for p in page(country_code="US")] == [None] * 4  # not targeted: no ad
        first, second = page(), page(is_bottom_request=True)
        served = first + second
        slots = [i for i, p in enumerate(served) if p["source"] == "ad"]
        assert slots == [1, 5], (creatives, [(a["degraded"], a["filtered"],
                                              [(r["component"], r["count_out"], r["status"]) for r in a["trace"]])
                                             for a in answers[1:]])  # 3 organic posts between, across pages
        assert {served[i]["ad_id"] for i in slots} == set(ADS)
        for i in slots:
            explain = served[i]["explain"]
            assert served[i]["post_id"] in creatives and served[i]["served_type"] == "for_you_ad"
            assert explain["ad_bid_micros"] == 1_000_000 and explain["ad_value"] == served[i]["score"] > 0
        for ad_id in ADS:
            stored = http.get(f"/v1/ads/{ad_id}").json()
            assert (stored["spent_micros"], stored["impressions"]) == (1_000_000, 1)
        # both budgets are spent: a fresh (top) feed, which would take an ad at slot 1, has none
        assert all(p["source"] != "ad" for p in page())
    finally:
        for ad_id in ADS:
            http.delete(f"/v1/ads/{ad_id}")
    assert http.get(f"/v1/ads/{ADS[0]}").status_code == 404
    assert http.delete(f"/v1/ads/{ADS[0]}").status_code == 404
