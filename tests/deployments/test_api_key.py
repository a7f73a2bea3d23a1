"""ApiKeyGuard, without Ray: both headers, constant-time comparison, reasons that say what to send."""

from __future__ import annotations

import pytest

from xserve.deployments.api_key import ApiKeyGuard

KEY = "k3y-Ω"  # non-ASCII: compared as bytes, never raises


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEY}".encode().decode("latin-1")},
        {"authorization": f"bearer   {KEY}  ".encode().decode("latin-1")},
        {"x-api-key": KEY.encode().decode("latin-1")},
    ],
)
def test_the_key_in_either_header_is_accepted(headers):
    assert ApiKeyGuard(KEY).refusal(headers) is None


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "needs the API key"),
        ({"authorization": "Basic abc"}, "needs the API key"),
        ({"authorization": "Bearer"}, "needs the API key"),
        ({"authorization": "Bearer wrong"}, "wrong API key"),
        ({"x-api-key": "k3y"}, "wrong API key"),  # a prefix is not the key
        ({"x-api-key": ""}, "wrong API key"),
        ({"x-api-key": "\x00\xff" * 100}, "wrong API key"),
    ],
)
def test_a_missing_or_wrong_key_is_refused_with_a_one_line_reason(headers, needle):
    reason = ApiKeyGuard(KEY).refusal(headers)
    assert reason is not None and needle in reason
    assert "Authorization: Bearer" in reason and "X-API-Key" in reason and "\n" not in reason
    assert KEY not in reason


def test_no_key_configured_means_off_and_repr_hides_the_key():
    assert ApiKeyGuard("").refusal({}) is None
    assert not ApiKeyGuard("").enabled
    assert KEY not in repr(ApiKeyGuard(KEY)) and ApiKeyGuard(KEY).enabled
