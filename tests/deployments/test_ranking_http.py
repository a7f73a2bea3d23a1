"""Issue 17 items 1, 6, 7 and 8 end to end over HTTP in the session's served app (``served_app``): the value
model (switched on live, every term in explain), the request's country, language and app and the declared
topics reaching the ranker, mutual follows, posts marked with outbound links, and the ``link_open`` action.

One test, one pair of live reconfigurations (the value model on, then the session's settings back), so the
module adds a few seconds to CI. It reads feeds of a tiny-world user (42) and writes only that user's topics
(put back at the end) and ids of its own.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.ray

VIEWER = 42  # a tiny-world user with an engagement history
FRIEND, AUTHOR = 930_171, 930_172  # users of this test's own


def _feed(http: httpx.Client, **kw) -> dict:
    resp = http.post("/v1/feed/for_you", json={"viewer_id": VIEWER, "explain": True, "limit": 20, **kw})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _scores(feed: dict) -> dict[int, dict]:
    return {p["post_id"]: p["explain"]["action_scores"] for p in feed["posts"] if p["explain"]["action_scores"]}


@pytest.mark.budget(60, reason="two live reconfigurations of the session app and a handful of feeds")
def test_value_model_context_links_and_mutual_follows_over_http(served_app):
    with httpx.Client(base_url=served_app.url, timeout=30, headers=served_app.auth) as http:
        # --- item 8: a post with an outbound link is marked at creation; link_open is an engagement action
        for user in (FRIEND, AUTHOR):
            assert http.put(f"/v1/users/{user}", json={"screen_name": f"u{user}"}).status_code == 200
        linked = http.post("/v1/posts", json={"author_id": AUTHOR, "text": "read https://example.com/a"}).json()
        plain = http.post("/v1/posts", json={"author_id": AUTHOR, "text": "no link", "has_link": False}).json()
        told = http.post("/v1/posts", json={"author_id": AUTHOR, "text": "see bio", "has_link": True}).json()
        assert [http.get(f"/v1/posts/{p['post_id']}").json()["has_link"] for p in (linked, plain, told)] == \
            [True, False, True]
        eng = {"user_id": FRIEND, "post_id": linked["post_id"], "author_id": AUTHOR, "action": "link_open",
               "timestamp_ms": 1_767_225_600_000}
        assert http.post("/v1/engagements", json=eng).json() == {"accepted": 1}

        # --- item 1 (mutual follows): both directions make a mutual follow the value model boosts
        assert http.put(f"/v1/users/{FRIEND}/follows/{AUTHOR}").status_code == 200
        assert http.put(f"/v1/users/{AUTHOR}/follows/{FRIEND}").status_code == 200
        assert http.get(f"/v1/users/{FRIEND}").json()["features"]["mutual_follow_ids"] == [AUTHOR]

        # --- item 7: the request's country, language and app, and declared topics, change the ranker's scores
        base = _scores(_feed(http))
        other = _scores(_feed(http, country_code="jp", language_code="ja", client_app_id=2))
        common = sorted(set(base) & set(other))
        assert common and any(base[p] != other[p] for p in common), "the request context was ignored"
        name = http.get(f"/v1/users/{VIEWER}").json()["screen_name"]
        too_many = {"screen_name": name, "topics": [f"t{i}" for i in range(17)]}
        assert http.put(f"/v1/users/{VIEWER}", json=too_many).status_code == 422
        assert http.put(f"/v1/users/{VIEWER}", json={"screen_name": name, "topics": ["music", "tech"]}).status_code == 200
        try:
            assert http.get(f"/v1/users/{VIEWER}").json()["features"]["topics"] == ["music", "tech"]
            with_topics = _scores(_feed(http))
            common = sorted(set(base) & set(with_topics))
            assert common and any(base[p] != with_topics[p] for p in common), "the declared topics were ignored"

            # --- item 1: the value model, switched on live, shows every term; the weighted scorer shows none
            served_app.reconfigure({"scoring": {"scorer": "value_model", "value_model": {
                "author_exploration_bonus": 0.5, "perturbation_sigma": 0.2, "perturbation_salt": "e2e"}}})
            try:
                feed = _feed(http)
            finally:
                served_app.reconfigure({})
            offset = served_app.config.scoring.negative_scores_offset
            ranked = [p for p in feed["posts"] if p["explain"]["weighted_score"] is not None]
            assert ranked
            for p in ranked:
                e = p["explain"]
                assert e["scorer"] == "value_model"
                terms = {k: v for k, v in e["terms"].items() if not k.startswith("perturbation.")}
                assert {"watch_time", "profile_visit_time", "click_dwell_time", "link_open", "video_open",
                        "mutual_follow_dwell_boost", "author_exploration_bonus"} <= set(terms)
                for head in ("favorite", "reply", "watch_time"):  # each weight x exp(+-0.2)
                    assert min(abs(e["terms"][f"perturbation.{head}"] - m) for m in (1.2214, 0.8187)) < 1e-4
                combined = sum(terms.values())
                if combined >= 0:
                    assert e["weighted_score"] == pytest.approx(combined + offset, rel=1e-5)
                s = e["action_scores"]
                assert terms["watch_time"] == pytest.approx(
                    0.004 * e["terms"]["perturbation.watch_time"] * s["video_open"] * s["watch_time"], rel=1e-4, abs=1e-9)
            assert any(p["explain"]["terms"]["author_exploration_bonus"] == 0.5 for p in ranked)
            january = _feed(http)["posts"][0]["explain"]
            assert january["scorer"] == "weighted" and january["terms"] == {}
        finally:
            http.put(f"/v1/users/{VIEWER}", json={"screen_name": name, "topics": []})
