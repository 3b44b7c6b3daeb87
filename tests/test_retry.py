"""The retry policy: which failures are retried, after how long, and how often."""

from __future__ import annotations

import asyncio
import random

import pytest

from aoe.clock import FakeClock
from aoe.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    MalformedResponseError,
    OutputValidationError,
    OverloadedError,
    ProviderConnectionError,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitedError,
    RateLimitTimeoutError,
    ServerError,
)
from aoe.providers.base import Completion
from aoe.providers.openai import OpenAIClient
from aoe.retry import MAX_RETRY_AFTER_S, RetryDecision, backoff_delay, decide, retry_call
from aoe.spec.models import ProviderConfig, RetrySpec
from tests.fakeprovider import OPENAI_PATH, FakeProvider, Fault, chat_request, fake_provider

__all__ = ["fake_provider"]  # the loopback server fixture used by the end-to-end tests below

RNG = random.Random(0)


def spec(**overrides) -> RetrySpec:
    fields = {"jitter": False, **overrides}
    return RetrySpec(**fields)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("immediate", [0, 0, 0, 0]),
        ("constant", [1.5, 1.5, 1.5, 1.5]),
        ("linear", [1.5, 3.0, 4.5, 6.0]),
        ("exponential", [1.5, 3.0, 6.0, 12.0]),
    ],
)
def test_each_strategy_gives_its_delays(strategy, expected):
    """immediate 0, constant base, linear base*n, exponential base*2^(n-1)."""
    s = spec(strategy=strategy, base_delay_s=1.5)
    assert [backoff_delay(s, n, RNG) for n in (1, 2, 3, 4)] == expected


def test_exponential_base_and_cap():
    """The growth factor is configurable and the delay never exceeds max_delay_s."""
    s = spec(base_delay_s=1, exponential_base=3, max_delay_s=20)
    assert [backoff_delay(s, n, RNG) for n in (1, 2, 3, 4, 50, 5000)] == [1, 3, 9, 20, 20, 20]


def test_linear_is_capped_too():
    """Linear backoff is also bounded by max_delay_s."""
    assert backoff_delay(spec(strategy="linear", base_delay_s=10, max_delay_s=25), 5, RNG) == 25


def test_jitter_stays_between_half_and_full_delay():
    """Equal jitter: spread agents out, but never wait less than half the planned delay."""
    s = RetrySpec(strategy="exponential", base_delay_s=2, jitter=True)
    rng = random.Random(42)
    delays = [backoff_delay(s, 3, rng) for _ in range(2000)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 3.5  # it really spreads
    assert backoff_delay(RetrySpec(strategy="immediate", jitter=True), 3, rng) == 0


@pytest.mark.parametrize(
    "error",
    [
        ProviderTimeout("t", provider="p", outcome_unknown=True),
        ProviderConnectionError("c", provider="p"),
        RateLimitedError("r", provider="p", status=429),
        ServerError("s", provider="p", status=503),
        OverloadedError("o", provider="p", status=529),
        MalformedResponseError("m", provider="p", status=200),
        OutputValidationError("bad json"),
        RateLimitTimeoutError("waited too long"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_retriable_failures_are_retried(error):
    """Timeouts, connection errors, 429, 5xx, 529, malformed or invalid output are retried."""
    decision = decide(error, attempt=1, spec=spec(), rng=RNG)
    assert decision == RetryDecision(True, 1.0, decision.reason)
    assert type(error).__name__ in decision.reason


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("b", provider="p", status=400),
        AuthenticationError("a", provider="p", status=401),
        QuotaExceededError("q", provider="p", status=429, retry_after_s=1.0),
        BudgetExceededError("over budget"),
        ValueError("a bug"),
        KeyboardInterrupt(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_failures_are_not_retried(error):
    """400, 401, quota, budget stops and our own bugs fail at once, whatever retry-after says."""
    decision = decide(error, attempt=1, spec=spec(), rng=RNG)
    assert decision.retry is False
    assert "not retriable" in decision.reason


def test_attempts_count_from_one_and_max_retries_is_extra_attempts():
    """max_retries 3 means 4 attempts: retries after attempts 1-3, none after attempt 4."""
    error = ServerError("s", provider="p", status=500)
    verdicts = [
        decide(error, attempt=n, spec=spec(max_retries=3), rng=RNG).retry for n in (1, 2, 3, 4)
    ]
    assert verdicts == [True, True, True, False]
    assert "4 attempts" in decide(error, attempt=4, spec=spec(max_retries=3), rng=RNG).reason
    assert decide(error, attempt=1, spec=spec(max_retries=0), rng=RNG).retry is False


def test_retry_after_overrides_the_backoff_even_above_max_delay():
    """The provider knows when capacity returns: its Retry-After wins over our schedule."""
    s = spec(base_delay_s=1, max_delay_s=30, jitter=True)

    def delay_for(retry_after_s: float, attempt: int) -> RetryDecision:
        error = RateLimitedError("r", provider="p", retry_after_s=retry_after_s)
        return decide(error, attempt=attempt, spec=s, rng=RNG)

    assert delay_for(0.25, attempt=3).delay_s == 0.25
    assert delay_for(45, attempt=1).delay_s == 45
    zero = delay_for(0, attempt=2)
    assert zero.retry  # 0 means "no advice": normal backoff
    assert 1.0 <= zero.delay_s <= 2.0


def test_retry_after_beyond_the_cap_stops_retrying():
    """A provider asking for minutes of patience ends the attempts instead of parking the agent."""
    error = RateLimitedError("r", provider="p", retry_after_s=MAX_RETRY_AFTER_S + 1)
    decision = decide(error, attempt=1, spec=spec(), rng=RNG)
    assert decision.retry is False
    assert "121" in decision.reason


def test_should_retry_false_is_obeyed():
    """x-should-retry: false vetoes a retry of an otherwise retriable error."""
    error = ServerError("s", provider="p", status=503, should_retry=False)
    assert decide(error, attempt=1, spec=spec(), rng=RNG).retry is False
    assert decide(
        ServerError("s", provider="p", should_retry=True), attempt=1, spec=spec(), rng=RNG
    ).retry


async def test_retry_call_waits_the_decided_delays_on_the_clock():
    """The loop sleeps each decided delay on the injected clock and returns the first success."""
    clock = FakeClock(autojump=True)
    failures = [
        ServerError("s", provider="p"),
        RateLimitedError("r", provider="p", retry_after_s=7),
    ]
    seen: list[tuple[int, str, float]] = []

    async def call(attempt: int) -> str:
        if failures:
            raise failures.pop(0)
        return f"ok on attempt {attempt}"

    result = await retry_call(
        call,
        spec=spec(base_delay_s=2),
        clock=clock,
        rng=RNG,
        on_retry=lambda n, e, d: seen.append((n, type(e).__name__, d.delay_s)),
    )
    assert result == "ok on attempt 3"
    assert clock.slept == [2.0, 7.0]
    assert seen == [(1, "ServerError", 2.0), (2, "RateLimitedError", 7.0)]


async def test_retry_call_gives_up_with_the_last_error():
    """When attempts run out, the caller gets the last error itself."""
    clock = FakeClock(autojump=True)
    attempts: list[int] = []

    async def call(attempt: int) -> None:
        attempts.append(attempt)
        raise ServerError(f"down {attempt}", provider="p")

    with pytest.raises(ServerError, match="down 3"):
        await retry_call(call, spec=spec(max_retries=2, strategy="linear"), clock=clock, rng=RNG)
    assert attempts == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


async def test_retry_call_does_not_retry_permanent_errors_or_swallow_cancellation():
    """A 400 fails on the first attempt; cancellation passes straight through."""
    clock = FakeClock(autojump=True)

    async def bad(attempt: int) -> None:
        raise BadRequestError("no", provider="p", status=400)

    with pytest.raises(BadRequestError):
        await retry_call(bad, spec=spec(), clock=clock, rng=RNG)

    async def cancelled(attempt: int) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_call(cancelled, spec=spec(), clock=clock, rng=RNG)
    assert clock.slept == []


async def test_immediate_strategy_does_not_sleep():
    """immediate retries without touching the clock at all."""
    clock = FakeClock(autojump=True)
    calls: list[int] = []

    async def flaky(attempt: int) -> int:
        calls.append(attempt)
        if attempt < 3:
            raise ProviderConnectionError("reset", provider="p")
        return attempt

    assert await retry_call(flaky, spec=spec(strategy="immediate"), clock=clock, rng=RNG) == 3
    assert clock.slept == []


async def test_end_to_end_against_the_loopback_server(fake_provider: FakeProvider):
    """429 with retry-after, then a 503, then success: 3 calls, waits 0.5 s then backoff."""
    fake_provider.script(Fault.rate_limit(retry_after="0.5"), Fault.error(503))
    client = OpenAIClient(
        ProviderConfig("openai", "openai", None, fake_provider.openai_base_url), api_key=None
    )
    clock = FakeClock(autojump=True)

    async def call(attempt: int) -> Completion:
        return await client.complete(chat_request(attempt=attempt))

    try:
        completion = await retry_call(call, spec=spec(base_delay_s=1), clock=clock, rng=RNG)
    finally:
        await client.aclose()
    assert completion.text
    assert fake_provider.calls(OPENAI_PATH) == 3
    assert clock.slept == [0.5, 2.0]


async def test_end_to_end_quota_is_tried_once(fake_provider: FakeProvider):
    """insufficient_quota is a billing stop: one call, no retry, no waiting."""
    fake_provider.script(Fault.insufficient_quota(), Fault.insufficient_quota())
    client = OpenAIClient(
        ProviderConfig("openai", "openai", None, fake_provider.openai_base_url), api_key=None
    )
    clock = FakeClock(autojump=True)
    try:
        with pytest.raises(QuotaExceededError):
            await retry_call(
                lambda attempt: client.complete(chat_request(attempt=attempt)),
                spec=spec(),
                clock=clock,
                rng=RNG,
            )
    finally:
        await client.aclose()
    assert fake_provider.calls() == 1
    assert clock.slept == []


def test_the_providers_x_should_retry_true_is_obeyed_first() -> None:
    """A 409 the provider says to retry is retried, within max_retries."""
    from aoe.errors import BadRequestError

    error = BadRequestError("conflict", provider="openai", status=409, should_retry=True)
    spec = RetrySpec(max_retries=1, strategy="constant", base_delay_s=0.5, jitter=False)
    assert decide(error, attempt=1, spec=spec, rng=random.Random(0)).retry
    assert not decide(error, attempt=2, spec=spec, rng=random.Random(0)).retry
