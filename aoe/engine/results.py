"""States and results of agents, workflows and runs: what the engine hands back.

Times are epoch seconds from the run's clock; money is ``Decimal`` USD.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from aoe.cost.money import ZERO
from aoe.providers.base import Usage


class AgentState(enum.StrEnum):
    """Where an agent is. SKIPPED: a dependency failed for good, so it never ran."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def final(self) -> bool:
        return self not in (AgentState.PENDING, AgentState.RUNNING)


class WorkflowState(enum.StrEnum):
    """A workflow's outcome; each maps to an exit code (DESIGN.md section 1)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    PARTIALLY_COMPLETED = "PARTIALLY_COMPLETED"
    FAILED = "FAILED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    CANCELLED = "CANCELLED"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    WorkflowState.PENDING: 1,
    WorkflowState.RUNNING: 1,
    WorkflowState.COMPLETED: 0,
    WorkflowState.PARTIALLY_COMPLETED: 4,
    WorkflowState.FAILED: 1,
    WorkflowState.BUDGET_EXCEEDED: 3,
    WorkflowState.CANCELLED: 130,
}

# Worst first: the run's exit code is that of its worst workflow.
SEVERITY = (
    WorkflowState.CANCELLED,
    WorkflowState.FAILED,
    WorkflowState.BUDGET_EXCEEDED,
    WorkflowState.PARTIALLY_COMPLETED,
    WorkflowState.RUNNING,
    WorkflowState.PENDING,
    WorkflowState.COMPLETED,
)


def worst(states: list[WorkflowState]) -> WorkflowState:
    """The most severe of ``states`` (COMPLETED for none)."""
    if not states:
        return WorkflowState.COMPLETED
    return min(states, key=SEVERITY.index)


#: The usage of an attempt that made no call: one frozen object shared by all of them.
NO_USAGE: Final = Usage()


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One try of one agent."""

    attempt: int
    state: AgentState
    started_at: float
    ended_at: float
    usage: Usage = NO_USAGE
    cost_usd: Decimal = ZERO
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class AgentResult:
    """An agent's final state, its attempts and its output (parsed JSON or text)."""

    agent_id: str
    state: AgentState
    attempts: tuple[AttemptResult, ...] = ()
    output: Any = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    resumed: bool = False

    @property
    def usage(self) -> Usage:
        attempts = self.attempts
        if len(attempts) == 1:  # most agents: no new object, no sum
            return attempts[0].usage
        return _sum_usage(a.usage for a in attempts)

    @property
    def cost_usd(self) -> Decimal:
        attempts = self.attempts
        if len(attempts) == 1:
            return attempts[0].cost_usd
        return sum((a.cost_usd for a in attempts), ZERO)

    @property
    def duration_s(self) -> float:
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class WorkflowResult:
    """One workflow instance's outcome."""

    key: str
    name: str
    path: str
    state: WorkflowState
    agents: Mapping[str, AgentResult]
    started_at: float
    ended_at: float
    inputs: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None

    @property
    def cost_usd(self) -> Decimal:
        return sum((a.cost_usd for a in self.agents.values()), ZERO)

    @property
    def usage(self) -> Usage:
        return _sum_usage(a.usage for a in self.agents.values())

    def count(self, state: AgentState) -> int:
        return sum(1 for a in self.agents.values() if a.state is state)


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one ``aoe run`` did."""

    run_id: str
    workflows: tuple[WorkflowResult, ...]
    started_at: float
    ended_at: float
    simulate: bool = False
    interrupted: bool = False

    @property
    def state(self) -> WorkflowState:
        if self.interrupted:
            return WorkflowState.CANCELLED
        return worst([w.state for w in self.workflows])

    @property
    def exit_code(self) -> int:
        return self.state.exit_code

    @property
    def cost_usd(self) -> Decimal:
        return sum((w.cost_usd for w in self.workflows), ZERO)

    @property
    def usage(self) -> Usage:
        total = Usage()
        for w in self.workflows:
            total = total + w.usage
        return total


def _sum_usage(usages: Iterable[Usage]) -> Usage:
    """The sum of ``usages``, added field by field (one ``Usage`` made, not one per term)."""
    input_tokens = output_tokens = cache_read = cache_write = reasoning = 0
    for u in usages:
        input_tokens += u.input_tokens
        output_tokens += u.output_tokens
        cache_read += u.cache_read_tokens
        cache_write += u.cache_write_tokens
        reasoning += u.reasoning_tokens
    return Usage(input_tokens, output_tokens, cache_read, cache_write, reasoning)
