"""One instance of every event kind, with realistic values, for sink tests."""

from __future__ import annotations

from decimal import Decimal

from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentSkipped,
    AgentStarted,
    ApiCall,
    BudgetHit,
    Envelope,
    Event,
    RateLimitHit,
    RunFinished,
    RunStarted,
    ToolCalled,
    WorkflowFinished,
    WorkflowStarted,
)
from aoe.providers.base import Usage

T0 = 1_700_000_000.0


def every_event() -> list[Event]:
    """A run of two agents: a rate-limit wait, a 429, a retry, a budget hit, a skip, two calls."""
    run = Envelope("run1")
    ap = run.of_workflow("ap")
    extract, post, report = ap.of_agent("extract"), ap.of_agent("post"), ap.of_agent("report")
    x1, x2, p1 = extract.of_attempt(1), extract.of_attempt(2), post.of_attempt(1)
    return [
        RunStarted(run, T0, workflows=("ap",), simulate=True, budget_usd=Decimal("1.0")),
        WorkflowStarted(ap, T0, name="ap-close", agents_total=3),
        AgentStarted(x1, T0 + 1, model="openai/gpt-4o-mini", module="accounts_payable"),
        RateLimitHit(x1, T0 + 1.5, limiter="openai", waited_s=0.5),
        RateLimitHit(
            x1,
            T0 + 1.9,
            limiter="openai",
            waited_s=0.0,
            provider_429=True,
            provider="openai",
            model="openai/gpt-4o-mini",
            limited="concurrency",
            retry_after_s=1.0,
        ),
        ApiCall(
            x1,
            T0 + 2,
            provider="openai",
            model="openai/gpt-4o-mini",
            usage=Usage(100, 20, 0, 0, 0),
            cost_usd=Decimal("0.001"),
            latency_s=0.4,
            status="RateLimitedError",
        ),
        ToolCalled(
            x1, T0 + 2, turn=1, tool="lookup_vendor", ok=True, duration_s=0.02, result_chars=120
        ),
        AgentRetrying(x1, T0 + 2, error="HTTP 503", delay_s=1.0),
        AgentStarted(x2, T0 + 3, model="openai/gpt-4o-mini", module="accounts_payable"),
        ApiCall(
            x2,
            T0 + 4,
            provider="openai",
            model="openai/gpt-4o-mini",
            usage=Usage(100, 50, 30, 10, 5),
            cost_usd=Decimal("0.002"),
            latency_s=0.5,
            status="ok",
        ),
        AgentFinished(
            extract,
            T0 + 4,
            state="COMPLETED",
            attempts=2,
            duration_s=3.0,
            usage=Usage(200, 70),
            cost_usd=Decimal("0.003"),
            module="accounts_payable",
        ),
        AgentStarted(p1, T0 + 4, model="anthropic/claude-3-5-haiku-latest"),
        BudgetHit(p1, T0 + 4.1, scope="run", message="run budget spent"),
        AgentFinished(
            post,
            T0 + 4.1,
            state="BUDGET_EXCEEDED",
            attempts=1,
            duration_s=0.1,
            error="run budget spent",
        ),
        AgentSkipped(report, T0 + 4.1, reason="needs post"),
        WorkflowFinished(
            ap,
            T0 + 5,
            state="BUDGET_EXCEEDED",
            duration_s=5.0,
            cost_usd=Decimal("0.003"),
            counts=(("COMPLETED", 1), ("BUDGET_EXCEEDED", 1), ("SKIPPED", 1)),
        ),
        RunFinished(
            run,
            T0 + 5,
            state="BUDGET_EXCEEDED",
            exit_code=3,
            cost_usd=Decimal("0.003"),
            duration_s=5.0,
        ),
    ]
