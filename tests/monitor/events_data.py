"""One instance of every event kind, with realistic values, for sink tests."""

from __future__ import annotations

from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentSkipped,
    AgentStarted,
    ApiCall,
    BudgetHit,
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
    """A run of two agents: a rate-limit wait, a retry, a budget hit, a skip, two calls."""
    r = "run1"
    return [
        RunStarted(run_id=r, at=T0, workflows=("ap",), simulate=True, budget_usd=1.0),
        WorkflowStarted(run_id=r, at=T0, workflow="ap", name="ap-close", agents_total=3),
        AgentStarted(run_id=r, at=T0 + 1, workflow="ap", agent="extract", attempt=1,
                     model="openai/gpt-4o-mini", module="accounts_payable"),
        RateLimitHit(run_id=r, at=T0 + 1.5, workflow="ap", agent="extract", limiter="openai",
                     waited_s=0.5, provider_429=True),
        ApiCall(run_id=r, at=T0 + 2, workflow="ap", agent="extract", attempt=1, provider="openai",
                model="openai/gpt-4o-mini", usage=Usage(100, 20, 0, 0, 0), cost_usd=0.001,
                latency_s=0.4, status="server_error"),
        ToolCalled(run_id=r, at=T0 + 2, workflow="ap", agent="extract", attempt=1, turn=1,
                   tool="lookup_vendor", ok=True, duration_s=0.02, result_chars=120),
        AgentRetrying(run_id=r, at=T0 + 2, workflow="ap", agent="extract", attempt=1,
                      error="HTTP 503", delay_s=1.0),
        AgentStarted(run_id=r, at=T0 + 3, workflow="ap", agent="extract", attempt=2,
                     model="openai/gpt-4o-mini", module="accounts_payable"),
        ApiCall(run_id=r, at=T0 + 4, workflow="ap", agent="extract", attempt=2, provider="openai",
                model="openai/gpt-4o-mini", usage=Usage(100, 50, 30, 10, 5), cost_usd=0.002,
                latency_s=0.5, status="ok"),
        AgentFinished(run_id=r, at=T0 + 4, workflow="ap", agent="extract", state="COMPLETED",
                      attempts=2, duration_s=3.0, usage=Usage(200, 70), cost_usd=0.003,
                      module="accounts_payable"),
        AgentStarted(run_id=r, at=T0 + 4, workflow="ap", agent="post", attempt=1,
                     model="anthropic/claude-3-5-haiku-latest"),
        BudgetHit(run_id=r, at=T0 + 4.1, workflow="ap", agent="post", scope="run",
                  message="run budget spent"),
        AgentFinished(run_id=r, at=T0 + 4.1, workflow="ap", agent="post", state="BUDGET_EXCEEDED",
                      attempts=1, duration_s=0.1, error="run budget spent"),
        AgentSkipped(run_id=r, at=T0 + 4.1, workflow="ap", agent="report", reason="needs post"),
        WorkflowFinished(run_id=r, at=T0 + 5, workflow="ap", state="BUDGET_EXCEEDED",
                         duration_s=5.0, cost_usd=0.003,
                         counts=(("COMPLETED", 1), ("BUDGET_EXCEEDED", 1), ("SKIPPED", 1))),
        RunFinished(run_id=r, at=T0 + 5, state="BUDGET_EXCEEDED", exit_code=3, cost_usd=0.003,
                    duration_s=5.0),
    ]
