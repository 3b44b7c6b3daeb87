"""Read the providers' rate-limit headers into one ``RateLimitSnapshot``.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as Go
durations (``6m0s``, ``59.8s``, ``12ms``); Anthropic sends
``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``
with resets as RFC 3339 timestamps, turned here into seconds from the response's ``date``.
The headers only tune the rate limiter, so a value we cannot read is skipped, never fatal.
Each answer repeats the few values of the last ones, so the parsers remember them.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from aoe.providers.base import RateLimitSnapshot

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|h|m|s)")
_GO_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
PARSED_KEPT = 256  # distinct header values remembered: resets and dates of the last calls


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_go_duration(text: str) -> float | None:
    """``6m0s`` -> 360.0; a bare number counts as seconds; anything else -> None."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value >= 0 and math.isfinite(value) else None
    pos, total = 0, 0.0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_http_date(text: str) -> datetime | None:
    """An RFC 7231 date (``Wed, 21 Oct 2015 07:28:00 GMT``) as an aware datetime, or None."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=PARSED_KEPT)
def parse_rfc3339(text: str) -> datetime | None:
    """``2025-08-21T12:40:59Z`` as an aware datetime, or None."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw.strip()))
    except (ValueError, OverflowError):
        return None
    return value if value >= 0 else None


def parse_openai(headers: Mapping[str, str]) -> RateLimitSnapshot | None:
    """The ``x-ratelimit-*`` headers, or None when the server sent none (local servers)."""

    def reset(kind: str) -> float | None:
        raw = headers.get(f"x-ratelimit-reset-{kind}")
        return parse_go_duration(raw) if raw is not None else None

    snapshot = RateLimitSnapshot(
        limit_requests=_int(headers, "x-ratelimit-limit-requests"),
        remaining_requests=_int(headers, "x-ratelimit-remaining-requests"),
        reset_requests_s=reset("requests"),
        limit_tokens=_int(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=_int(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens_s=reset("tokens"),
    )
    return None if snapshot == RateLimitSnapshot() else snapshot


def parse_anthropic(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> RateLimitSnapshot | None:
    """The ``anthropic-ratelimit-*`` headers, resets in seconds from ``date`` (else ``now``).

    ``tokens-*`` already reflect the most restrictive token limit; without them the
    input-token limit stands in, since input dominates what a call reserves.
    """
    date_header = headers.get("date")
    reference = (parse_http_date(date_header) if date_header else None) or now
    if reference is None:
        reference = datetime.now(UTC)

    def reset(name: str) -> float | None:
        raw = headers.get(name)
        when = parse_rfc3339(raw) if raw is not None else None
        return None if when is None else max(0.0, (when - reference).total_seconds())

    prefix = "anthropic-ratelimit-"
    token_kind = (
        "tokens"
        if any(f"{prefix}tokens-{part}" in headers for part in ("limit", "remaining", "reset"))
        else "input-tokens"
    )
    snapshot = RateLimitSnapshot(
        limit_requests=_int(headers, f"{prefix}requests-limit"),
        remaining_requests=_int(headers, f"{prefix}requests-remaining"),
        reset_requests_s=reset(f"{prefix}requests-reset"),
        limit_tokens=_int(headers, f"{prefix}{token_kind}-limit"),
        remaining_tokens=_int(headers, f"{prefix}{token_kind}-remaining"),
        reset_tokens_s=reset(f"{prefix}{token_kind}-reset"),
    )
    return None if snapshot == RateLimitSnapshot() else snapshot
