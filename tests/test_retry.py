"""The retry policy: which failures are retried, after how long, and how often."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from aoe.clock import FakeClock
from aoe.engine.results import AgentResult, AgentState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, WorkflowJob
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
from aoe.providers.base import Completion, CompletionRequest, LLMClient, ModelInfo, Usage
from aoe.providers.openai import OpenAIClient
from aoe.retry import MAX_RETRY_AFTER_S, RetryDecision, backoff_delay, decide
from aoe.spec.models import (
    AgentSpec,
    Location,
    ModelRef,
    ProviderConfig,
    RetrySpec,
    WorkflowSpec,
)
from tests.engine.scripted import OneClient
from tests.fakeprovider import OPENAI_PATH, FakeProvider, Fault, fake_provider

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


class _Flaky:
    """A client that raises the scripted errors in turn, then answers; counts its calls."""

    name = "flaky"

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.attempts.append(request.attempt)
        if self.errors:
            raise self.errors.pop(0)
        return Completion(f"ok on attempt {request.attempt}", Usage(1, 1), request.model, "stop")

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        return await self.complete(request)

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(self.name, model)

    async def aclose(self) -> None:
        return None


async def _run_one(client: LLMClient, retry: RetrySpec, clock: FakeClock) -> AgentResult:
    """One agent through the engine's one retry loop (``run_agent``)."""
    agent = AgentSpec(
        id="a",
        model=ModelRef("p", "m"),
        prompt="go",
        location=Location("t.yaml", 1, 1),
        retry=retry,
    )
    spec = WorkflowSpec(name="wf", path=Path("t.yaml"), agents={"a": agent})
    engine = Engine(Runtime(clients=OneClient(client), clock=clock))
    result = await engine.run([WorkflowJob.of("wf", spec)])
    return result.workflows[0].agents["a"]


async def test_the_retry_loop_waits_the_decided_delays_on_the_clock():
    """The loop sleeps each decided delay on the injected clock and ends at the first success."""
    clock = FakeClock(autojump=True)
    client = _Flaky(
        ServerError("s", provider="p"), RateLimitedError("r", provider="p", retry_after_s=7)
    )
    agent = await _run_one(client, spec(base_delay_s=2), clock)
    assert agent.state is AgentState.COMPLETED
    assert agent.output == "ok on attempt 3"
    assert clock.slept == [2.0, 7.0]
    assert [(a.attempt, a.error_type) for a in agent.attempts] == [
        (1, "ServerError"),
        (2, "RateLimitedError"),
        (3, None),
    ]


async def test_the_retry_loop_gives_up_with_the_last_error():
    """When attempts run out, the agent ends FAILED with the last error."""
    clock = FakeClock(autojump=True)
    client = _Flaky(*(ServerError(f"down {n}", provider="p") for n in (1, 2, 3, 4)))
    agent = await _run_one(client, spec(max_retries=2, strategy="linear"), clock)
    assert agent.state is AgentState.FAILED
    assert agent.error is not None
    assert "down 3" in agent.error
    assert client.attempts == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


async def test_the_retry_loop_does_not_retry_permanent_errors():
    """A 400 fails on the first attempt, without waiting."""
    clock = FakeClock(autojump=True)
    client = _Flaky(BadRequestError("no", provider="p", status=400))
    agent = await _run_one(client, spec(), clock)
    assert agent.state is AgentState.FAILED
    assert client.attempts == [1]
    assert clock.slept == []


async def test_cancellation_passes_through_the_retry_loop():
    """A cancelled call is not retried: the agent ends CANCELLED after one attempt."""
    clock = FakeClock(autojump=True)
    client = _Flaky(asyncio.CancelledError())
    agent = await _run_one(client, spec(), clock)
    assert agent.state is AgentState.CANCELLED
    assert client.attempts == [1]
    assert clock.slept == []


async def test_immediate_strategy_does_not_sleep():
    """immediate retries at once: the clock is asked for no delay."""
    clock = FakeClock(autojump=True)
    client = _Flaky(
        ProviderConnectionError("reset", provider="p"),
        ProviderConnectionError("reset", provider="p"),
    )
    agent = await _run_one(client, spec(strategy="immediate"), clock)
    assert agent.state is AgentState.COMPLETED
    assert client.attempts == [1, 2, 3]
    assert clock.slept == [0.0, 0.0]


async def test_end_to_end_against_the_loopback_server(fake_provider: FakeProvider):
    """429 with retry-after, then a 503, then success: 3 calls, waits 0.5 s then backoff."""
    fake_provider.script(Fault.rate_limit(retry_after="0.5"), Fault.error(503))
    client = OpenAIClient(
        ProviderConfig("openai", "openai", None, fake_provider.openai_base_url), api_key=None
    )
    clock = FakeClock(autojump=True)
    try:
        agent = await _run_one(client, spec(base_delay_s=1), clock)
    finally:
        await client.aclose()
    assert agent.state is AgentState.COMPLETED
    assert agent.output
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
        agent = await _run_one(client, spec(), clock)
    finally:
        await client.aclose()
    assert agent.state is AgentState.FAILED
    assert agent.attempts[0].error_type == "QuotaExceededError"
    assert fake_provider.calls() == 1
    assert clock.slept == []


def test_the_providers_x_should_retry_true_is_obeyed_first() -> None:
    """A 409 the provider says to retry is retried, within max_retries."""
    from aoe.errors import BadRequestError

    error = BadRequestError("conflict", provider="openai", status=409, should_retry=True)
    spec = RetrySpec(max_retries=1, strategy="constant", base_delay_s=0.5, jitter=False)
    assert decide(error, attempt=1, spec=spec, rng=random.Random(0)).retry
    assert not decide(error, attempt=2, spec=spec, rng=random.Random(0)).retry
