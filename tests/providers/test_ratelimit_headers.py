"""Rate-limit headers of both providers are read into one snapshot; garbage is ignored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aoe.providers.base import RateLimitSnapshot
from aoe.providers.ratelimit_headers import parse_anthropic, parse_go_duration, parse_openai


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("59.8s", 59.8),
        ("12ms", 0.012),
        ("1s", 1.0),
        ("1h2m3s", 3723.0),
        ("1m30.5s", 90.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("900ns", 9e-7),
        ("20", 20.0),
        ("0.5", 0.5),
    ],
)
def test_go_durations_become_seconds(text: str, seconds: float):
    """OpenAI's reset values like 6m0s and 12ms are understood (ms is not read as minutes)."""
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "soon", "6x", "m5", "5m junk", "1s2", "-3", "s", "1.2.3s", "inf", "nan"]
)
def test_unreadable_durations_are_none(text: str):
    """A reset value we cannot read is skipped rather than guessed."""
    assert parse_go_duration(text) is None


@given(st.text(max_size=30))
def test_duration_parser_never_raises(text: str):
    """No header value, however odd, crashes the client."""
    result = parse_go_duration(text)
    assert result is None or result >= 0


def test_openai_headers_fill_the_snapshot():
    """All six x-ratelimit-* headers are read, resets in seconds."""
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_openai(headers) == RateLimitSnapshot(60, 59, 1.0, 150000, 149984, 360.0)


def test_openai_garbage_is_ignored_field_by_field():
    """One broken header does not cost the others."""
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "-1",
        "x-ratelimit-reset-requests": "whenever",
        "x-ratelimit-remaining-tokens": "1000",
    }
    assert parse_openai(headers) == RateLimitSnapshot(remaining_tokens=1000)


def test_no_headers_is_no_snapshot():
    """Local servers send no rate-limit headers; the limiter is then left alone."""
    assert parse_openai({"content-type": "application/json"}) is None
    assert parse_anthropic({"date": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None


def test_anthropic_resets_are_seconds_from_the_response_date():
    """RFC 3339 resets are measured from the server's date header, immune to local clock skew."""
    headers = {
        "date": "Thu, 21 Aug 2025 12:40:00 GMT",
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:01Z",
        "anthropic-ratelimit-tokens-limit": "80000",
        "anthropic-ratelimit-tokens-remaining": "79000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-input-tokens-limit": "40000",
    }
    assert parse_anthropic(headers) == RateLimitSnapshot(50, 49, 1.0, 80000, 79000, 59.0)


def test_anthropic_without_date_uses_now_and_never_goes_negative():
    """Without a date header, now is the reference; a reset in the past is 0 s, not negative."""
    now = datetime(2025, 8, 21, 12, 40, 0, tzinfo=UTC)
    headers = {
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:10+00:00",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:39:00Z",
    }
    snapshot = parse_anthropic(headers, now=now)
    assert snapshot is not None
    assert snapshot.reset_requests_s == 10.0
    assert snapshot.reset_tokens_s == 0.0


def test_anthropic_falls_back_to_input_token_limits():
    """When only input-token limits are sent, they stand for the token tier."""
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-output-tokens-limit": "8000",
    }
    assert parse_anthropic(headers) == RateLimitSnapshot(limit_tokens=40000, remaining_tokens=39000)


def test_anthropic_garbage_is_ignored():
    """Broken dates and numbers are skipped; the readable values survive."""
    headers = {
        "date": "not a date",
        "anthropic-ratelimit-requests-limit": "fifty",
        "anthropic-ratelimit-requests-remaining": "7",
        "anthropic-ratelimit-requests-reset": "tomorrow-ish",
    }
    assert parse_anthropic(headers) == RateLimitSnapshot(remaining_requests=7)


@given(st.dictionaries(st.sampled_from([
    "date",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-requests",
]), st.text(max_size=40)))  # fmt: skip
def test_header_parsers_never_raise(headers: dict[str, str]):
    """Whatever a server sends in these headers, parsing returns a snapshot or None."""
    parse_openai(headers)
    parse_anthropic(headers)
