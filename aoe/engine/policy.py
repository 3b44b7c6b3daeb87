"""The workflow status policy: when a failure stops a workflow, and how it ends.

Without ``allow_partial_completion`` the first permanent failure fails the workflow and
stops it. With it, the workflow fails when an agent at or above ``critical_priority``
fails, or when more than ``max_failure_rate`` of its agents did not complete (skipped
ones count); otherwise it ends PARTIALLY_COMPLETED. A budget stop wins over both: the
workflow ends BUDGET_EXCEEDED, also when every agent completed but a provider billed past
one of the workflow's budgets (an overrun). The same rules decide early whether to stop, so no money
is spent once the outcome is settled.
"""

from __future__ import annotations

from collections.abc import Mapping

from aoe.engine.results import AgentState, WorkflowState
from aoe.spec.models import WorkflowSpec

FAILED_STATES = frozenset({AgentState.FAILED, AgentState.RATE_LIMITED})


def _critical_failure(spec: WorkflowSpec, states: Mapping[str, AgentState]) -> str | None:
    if spec.critical_priority is None:
        return None
    for agent_id, state in states.items():
        # a critical agent that never ran because its input failed is lost all the same
        lost = state in FAILED_STATES or state is AgentState.SKIPPED
        if lost and spec.agents[agent_id].priority >= spec.critical_priority:
            return agent_id
    return None


def _failure_rate(states: Mapping[str, AgentState]) -> float:
    if not states:
        return 0.0
    not_completed = sum(1 for s in states.values() if s.final and s is not AgentState.COMPLETED)
    return not_completed / len(states)


def stop_reason(spec: WorkflowSpec, states: Mapping[str, AgentState]) -> str | None:
    """Why the workflow must stop starting agents now, or None to go on."""
    for agent_id, state in states.items():
        if state is AgentState.BUDGET_EXCEEDED:
            return f"agent '{agent_id}' hit a budget"
    failed = [a for a, s in states.items() if s in FAILED_STATES]
    if not failed:
        return None
    if not spec.allow_partial_completion:
        return f"agent '{failed[0]}' failed and partial completion is not allowed"
    critical = _critical_failure(spec, states)
    if critical is not None:
        return (
            f"agent '{critical}' (priority {spec.agents[critical].priority}) "
            f"{states[critical].value.lower()}, at or above critical_priority "
            f"{spec.critical_priority}"
        )
    rate = _failure_rate(states)
    if rate > spec.max_failure_rate:
        return (
            f"{rate:.0%} of agents did not complete, "
            f"more than max_failure_rate {spec.max_failure_rate:.0%}"
        )
    return None


def cancels_running(states: Mapping[str, AgentState]) -> bool:
    """Whether a stop also cancels the agents in flight.

    A failure that settles the outcome does; a budget stop does not: the running agents
    already hold their reservations, and cutting them off would waste what they cost.
    """
    return not any(s is AgentState.BUDGET_EXCEEDED for s in states.values())


def outcome(
    spec: WorkflowSpec,
    states: Mapping[str, AgentState],
    *,
    cancelled: bool = False,
    overrun: str | None = None,
) -> tuple[WorkflowState, str | None]:
    """The final state of a workflow whose agents are all in a final state, with a reason.

    ``overrun`` says how a provider billed past one of the workflow's budgets, if it did.
    """
    if cancelled:
        return WorkflowState.CANCELLED, "interrupted"
    if overrun is not None:
        return WorkflowState.BUDGET_EXCEEDED, overrun
    if any(s is AgentState.BUDGET_EXCEEDED for s in states.values()):
        return WorkflowState.BUDGET_EXCEEDED, stop_reason(spec, states)
    if all(s is AgentState.COMPLETED for s in states.values()):
        return WorkflowState.COMPLETED, None
    reason = stop_reason(spec, states)
    if reason is not None or not spec.allow_partial_completion:
        return WorkflowState.FAILED, reason or "not every agent completed"
    rate = _failure_rate(states)
    if rate > spec.max_failure_rate:
        return WorkflowState.FAILED, (
            f"{rate:.0%} of agents did not complete, "
            f"more than max_failure_rate {spec.max_failure_rate:.0%}"
        )
    return WorkflowState.PARTIALLY_COMPLETED, f"{rate:.0%} of agents did not complete"
