"""The workflow status policy: which failures stop a workflow and how it ends."""

from __future__ import annotations

from aoe.engine.policy import outcome, stop_reason
from aoe.engine.results import AgentState, WorkflowState
from tests.engine.scripted import agent, workflow

C, F, S, P = AgentState.COMPLETED, AgentState.FAILED, AgentState.SKIPPED, AgentState.PENDING


def test_all_completed_is_completed() -> None:
    """Every agent completed: the workflow completed, exit code 0."""
    spec = workflow(agent("a"), agent("b"))
    assert outcome(spec, {"a": C, "b": C}) == (WorkflowState.COMPLETED, None)
    assert WorkflowState.COMPLETED.exit_code == 0


def test_without_partial_completion_one_failure_stops_and_fails() -> None:
    """The first permanent failure stops a strict workflow and fails it (exit 1)."""
    spec = workflow(agent("a"), agent("b"))
    assert stop_reason(spec, {"a": F, "b": P}) is not None
    state, _ = outcome(spec, {"a": F, "b": S})
    assert state is WorkflowState.FAILED
    assert state.exit_code == 1


def test_partial_completion_within_the_failure_rate_goes_on() -> None:
    """With partial completion, a failure under max_failure_rate does not stop the rest."""
    spec = workflow(
        *(agent(x) for x in "abcd"), allow_partial_completion=True, max_failure_rate=0.25
    )
    assert stop_reason(spec, {"a": F, "b": P, "c": P, "d": P}) is None
    state, _ = outcome(spec, {"a": F, "b": C, "c": C, "d": C})
    assert state is WorkflowState.PARTIALLY_COMPLETED
    assert state.exit_code == 4


def test_skipped_agents_count_against_the_failure_rate() -> None:
    """A failure that skips dependents can push the rate over the limit."""
    spec = workflow(
        *(agent(x) for x in "abcd"), allow_partial_completion=True, max_failure_rate=0.25
    )
    assert stop_reason(spec, {"a": F, "b": S, "c": P, "d": P}) is not None
    assert outcome(spec, {"a": F, "b": S, "c": C, "d": C})[0] is WorkflowState.FAILED


def test_a_critical_agent_failing_fails_the_workflow() -> None:
    """critical_priority: an important agent failing fails the workflow outright."""
    spec = workflow(
        agent("vip", priority=8),
        agent("b"),
        agent("c"),
        allow_partial_completion=True,
        max_failure_rate=0.9,
        critical_priority=8,
    )
    assert "critical_priority" in (stop_reason(spec, {"vip": F, "b": P, "c": P}) or "")
    assert outcome(spec, {"vip": F, "b": C, "c": C})[0] is WorkflowState.FAILED


def test_budget_stop_wins_and_exits_3() -> None:
    """A budget stop ends the workflow BUDGET_EXCEEDED with exit code 3."""
    spec = workflow(agent("a"), agent("b"), allow_partial_completion=True, max_failure_rate=1)
    states = {"a": AgentState.BUDGET_EXCEEDED, "b": S}
    assert stop_reason(spec, states) is not None
    state, _ = outcome(spec, states)
    assert state is WorkflowState.BUDGET_EXCEEDED
    assert state.exit_code == 3


def test_cancelled_is_130() -> None:
    """An interrupted workflow is CANCELLED, exit code 130."""
    spec = workflow(agent("a"))
    state, _ = outcome(spec, {"a": AgentState.CANCELLED}, cancelled=True)
    assert state.exit_code == 130


def test_a_critical_agent_skipped_by_a_failure_fails_the_workflow() -> None:
    """A critical agent that never ran because its dependency failed is a critical loss."""
    spec = workflow(agent("feed", priority=1), agent("vip", "feed", priority=9), agent("b"),
                    allow_partial_completion=True, max_failure_rate=0.9, critical_priority=8)
    states = {"feed": F, "vip": S, "b": C}
    assert "critical_priority" in (stop_reason(spec, states) or "")
    assert outcome(spec, states)[0] is WorkflowState.FAILED
