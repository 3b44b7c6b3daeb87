"""One agent's run to its final state: RATE_LIMITED when rate limits win, and what follows."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from aoe.engine.results import AgentState, WorkflowState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, WorkflowJob
from aoe.errors import RateLimitedError
from aoe.ledger.store import Ledger
from aoe.ratelimit import LimiterStats, RateLimiter
from aoe.spec.models import LimitsSpec, ModelRef, RetrySpec
from tests.engine.scripted import OneClient, OneLimiter, ScriptedClient, agent, workflow

TWO_RETRIES = RetrySpec(max_retries=2, strategy="constant", base_delay_s=1, jitter=False)


class _ByModel:
    """A limiter source with one limiter per model name."""

    def __init__(self, limiters: dict[str, RateLimiter]) -> None:
        self.limiters = limiters

    def for_model(self, provider: str, model: str) -> RateLimiter:
        return self.limiters[model]

    def all_stats(self) -> tuple[LimiterStats, ...]:
        return tuple(limiter.stats() for limiter in self.limiters.values())


def _too_many(retry_after_s: float) -> RateLimitedError:
    return RateLimitedError(
        "rate limit reached", provider="script", status=429, retry_after_s=retry_after_s
    )


async def test_an_agent_whose_every_retry_gets_429_ends_rate_limited_and_fails_the_run() -> None:
    """Three 429s in a row with two retries: the agent ends RATE_LIMITED (not FAILED), each
    Retry-After is honoured, the workflow fails and stops its other agents: exit code 1."""
    client = ScriptedClient(
        script={"busy": [_too_many(2), _too_many(3), _too_many(4)]},
        latency_s={"slow": 100.0},
    )
    limiter = RateLimiter(LimitsSpec(requests_per_minute=100), clock=client.clock, name="key")
    other = RateLimiter(LimitsSpec(), clock=client.clock, name="other")
    limiters = _ByModel({"m": limiter, "other": other})
    rt = Runtime(clients=OneClient(client), clock=client.clock, limiters=limiters)
    # slow is on a key of its own: busy's 429s (which teach busy's key its concurrency) and
    # their Retry-After are about busy's key only
    slow = replace(agent("slow"), model=ModelRef("script", "other"))
    spec = workflow(agent("busy", retry=TWO_RETRIES), slow)
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    wf = result.workflows[0]
    busy = wf.agents["busy"]
    assert busy.state is AgentState.RATE_LIMITED
    assert [a.error_type for a in busy.attempts] == ["RateLimitedError"] * 3
    assert "rate limit reached" in (busy.error or "")
    starts = [c.started for c in client.calls if c.agent == "busy"]
    assert starts == pytest.approx([0.0, 2.0, 5.0])  # after each Retry-After: 2 s, then 3 s
    assert limiter.stats().rate_limited == 3  # every 429 was told to the limiter
    assert wf.agents["slow"].state is AgentState.CANCELLED  # the outcome is settled: stop
    assert wf.state is WorkflowState.FAILED
    assert "'busy' failed" in (wf.reason or "")
    assert result.exit_code == 1


@pytest.mark.parametrize(
    ("priority", "state", "exit_code"),
    [(9, WorkflowState.FAILED, 1), (1, WorkflowState.PARTIALLY_COMPLETED, 4)],
    ids=["critical", "not-critical"],
)
async def test_a_rate_limited_agent_counts_as_failed_under_partial_completion(
    priority: int, state: WorkflowState, exit_code: int
) -> None:
    """With allow_partial_completion a RATE_LIMITED agent is a failure like any other: at or
    above critical_priority it fails the workflow, below it the workflow ends partial."""
    client = ScriptedClient(script={"busy": [_too_many(1)]})
    rt = Runtime(clients=OneClient(client), clock=client.clock)
    spec = workflow(
        agent("busy", priority=priority),
        agent("other"),
        agent("third"),
        allow_partial_completion=True,
        max_failure_rate=0.5,
        critical_priority=8,
    )
    result = await Engine(rt).run([WorkflowJob.of("wf", spec)])
    wf = result.workflows[0]
    assert wf.agents["busy"].state is AgentState.RATE_LIMITED
    assert wf.state is state
    assert result.exit_code == exit_code


async def test_an_agent_that_waits_too_long_for_a_rate_limit_slot_ends_rate_limited() -> None:
    """A call that cannot get a slot within rate_limit_timeout_s is retried, then the agent
    ends RATE_LIMITED with the limiter's explanation, having called nothing: exit code 1."""
    client = ScriptedClient(latency_s={"hog": 100.0})
    limiter = RateLimiter(LimitsSpec(concurrent_requests=1), clock=client.clock, name="key")
    rt = Runtime(
        clients=OneClient(client),
        clock=client.clock,
        limiters=OneLimiter(limiter),
        rate_limit_timeout_s=5.0,
    )
    retry_once = RetrySpec(max_retries=1, strategy="constant", base_delay_s=1, jitter=False)
    spec = workflow(agent("hog", priority=9), agent("waiter", retry=retry_once))
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    wf = result.workflows[0]
    waiter = wf.agents["waiter"]
    assert waiter.state is AgentState.RATE_LIMITED
    assert [a.error_type for a in waiter.attempts] == ["RateLimitTimeoutError"] * 2
    assert "concurrent_requests 1/1" in (waiter.error or "")
    assert client.order() == ["hog"]
    assert client.clock.now() == pytest.approx(11.0)  # 5 s wait, 1 s backoff, 5 s wait
    assert wf.agents["hog"].state is AgentState.CANCELLED
    assert wf.state is WorkflowState.FAILED
    assert result.exit_code == 1


async def test_the_ledger_shows_a_rate_limited_agent_as_rate_limited(tmp_path: Path) -> None:
    """`aoe show` reads the state the run ended with: RATE_LIMITED, not FAILED."""
    client = ScriptedClient(script={"busy": [_too_many(1), _too_many(1)]})
    ledger = Ledger.open(tmp_path / "aoe.db")
    rt = Runtime(clients=OneClient(client), clock=client.clock, recorder=ledger)
    spec = workflow(agent("busy", retry=RetrySpec(max_retries=1, strategy="immediate")))
    try:
        result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    finally:
        await ledger.aclose()
    assert result.workflows[0].agents["busy"].state is AgentState.RATE_LIMITED
    with Ledger.open(tmp_path / "aoe.db") as reader:
        detail = reader.get_run(result.run_id)
    (agent_detail,) = detail.workflows[0].agents
    assert agent_detail.state == "RATE_LIMITED"
    assert [a.state for a in agent_detail.attempts] == ["RATE_LIMITED", "RATE_LIMITED"]
