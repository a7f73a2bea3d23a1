"""The API key check of the HTTP edge: write and admin routes need the configured key when one is set.

The key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
and compared in constant time (:func:`hmac.compare_digest` over bytes, so a
wrong key's length or prefix does not show in the timing). An empty key turns
the check off (the local demo). Pure Python: the ingress passes the headers.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

__all__ = ["ApiKeyGuard"]

HOW = "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


class ApiKeyGuard:
    """``refusal(headers)`` is None when the request carries ``key`` (or no key is set), else a one-line reason.

    ``headers`` maps lower-case names to values as decoded by the ASGI server
    (latin-1), as Starlette's ``Headers`` does.
    """

    def __init__(self, key: str) -> None:
        self._key = key.encode("utf-8")

    def __repr__(self) -> str:
        return f"ApiKeyGuard(enabled={self.enabled})"  # never the key

    @property
    def enabled(self) -> bool:
        return bool(self._key)

    def refusal(self, headers: Mapping[str, str]) -> str | None:
        if not self._key:
            return None
        sent = _presented(headers)
        if sent is None:
            return f"this route needs the API key: {HOW}"
        if not hmac.compare_digest(sent, self._key):
            return f"wrong API key: {HOW}"
        return None


def _presented(headers: Mapping[str, str]) -> bytes | None:
    """The key the request presents (raw header bytes), from ``X-API-Key`` or a Bearer ``Authorization``."""
    value = headers.get("x-api-key")
    if value is None:
        scheme, _, token = (headers.get("authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        value = token.strip()
    return value.encode("latin-1", errors="replace")
