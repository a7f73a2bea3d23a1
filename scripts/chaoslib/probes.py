"""One round of the probe viewers' feeds: their posts and scores, and what any of them named degraded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

__all__ = ["Round", "probe_round"]


@dataclass
class Round:
    """One feed per probe viewer."""

    # viewer -> (post id, score, weighted score, multiplier, conversation) of its feed, in order (answered viewers
    # only): the weighted score is the one before the author-diversity and out-of-network multipliers (explain),
    # the conversation the root of the post's thread (see chaoslib.state.compare_feeds)
    ids: dict[int, list[tuple[int, float, float, float, int]]]
    degraded: set[str]  # components any of the feeds named; "http_<status>" / "transport" for failed ones

    @property
    def clean(self) -> bool:
        return not self.degraded


async def probe_round(http: httpx.AsyncClient, viewers: Sequence[int], limit: int, in_network_only: bool = False) -> Round:
    """Each viewer's For You feed of ``limit`` posts (``in_network_only``: from followed authors only), explained."""
    out = Round({}, set())
    for v in viewers:
        try:
            body = {"viewer_id": v, "limit": limit, "in_network_only": in_network_only, "explain": True}
            resp = await http.post("/v1/feed/for_you", json=body)
        except httpx.HTTPError:
            out.degraded.add("transport")
            continue
        if resp.status_code != 200:
            out.degraded.add(f"http_{resp.status_code}")
            continue
        data = resp.json()
        out.degraded.update(data["degraded"])
        out.ids[v] = [(p["post_id"], p["score"], *_unmultiplied(p), min(p["ancestors"], default=p["post_id"]))
                      for p in data["posts"]]
    return out


def _unmultiplied(post: dict) -> tuple[float, float]:
    """(weighted score, the product of the multipliers applied to it) of an explained feed post."""
    why = post["explain"]
    multiplier = (why["diversity_multiplier"] or 1.0) * (why["oon_multiplier"] or 1.0)
    return (why["weighted_score"] if why["weighted_score"] is not None else post["score"]), multiplier
