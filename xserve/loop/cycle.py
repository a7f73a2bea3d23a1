"""The guardrail of continuous training: promote a candidate only when it is no worse than the live model.

Both models are evaluated on the same held-out recent traffic (the candidate's validation split: the
newest ``train.validation_fraction`` of the window) by ``xserve.phoenix.training.evaluate``; the
primary metrics are the ranker's AUC on the three most frequent positive actions, retrieval's recall@100
and next-engagement NDCG@10. A metric worse by more than ``loop.guardrail_tolerance`` blocks the
promotion; a metric missing on either side (no such label in the window) is skipped and named.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRIMARY_METRICS", "Verdict", "guardrail", "primary_metrics"]

PRIMARY_METRICS = (
    ("ranker", "auc", "favorite"),
    ("ranker", "auc", "reply"),
    ("ranker", "auc", "repost"),
    ("retrieval", "recall@100", None),
    ("next_engagement", "ndcg@10", None),
)


def _name(path: tuple[str, str, str | None]) -> str:
    return ".".join(p for p in path if p)


def primary_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The primary metrics of an ``evaluate`` result (None where it has none)."""
    out: dict[str, float | None] = {}
    for section, key, action in PRIMARY_METRICS:
        value = result.get(section, {}).get(key)
        if action is not None:
            value = (value or {}).get(action)
        out[_name((section, key, action))] = None if value is None else float(value)
    return out


class Verdict(dict):
    """``promote`` (bool), ``worse`` (metric → (candidate, live)), ``skipped`` (metrics missing on a side)."""

    @property
    def promote(self) -> bool:
        return self["promote"]


def guardrail(candidate: dict[str, float | None], live: dict[str, float | None], tolerance: float) -> Verdict:
    """Promote unless a primary metric of ``candidate`` is below ``live``'s by more than ``tolerance``."""
    worse, skipped = {}, []
    for name, value in candidate.items():
        before = live.get(name)
        if value is None or before is None:
            skipped.append(name)
        elif value < before - tolerance:
            worse[name] = (value, before)
    return Verdict(promote=not worse and len(skipped) < len(candidate), worse=worse, skipped=skipped)
