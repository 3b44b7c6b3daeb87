"""What one agent execution is given (``AgentTask``) and what one attempt shares (``Attempt``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aoe.cost.budget import BudgetScope
from aoe.cost.money import ZERO
from aoe.engine.results import NO_USAGE, AttemptResult
from aoe.engine.runtime import Runtime
from aoe.monitor.events import Envelope
from aoe.providers.base import Usage
from aoe.spec.models import AgentSpec, WorkflowSpec


class CancelGuard:
    """Holds the scheduler's cancel off an agent while it settles and records a call that
    answered (``held``); a cancel that came meanwhile (``deferred``) is raised once it is
    done. It does what ``asyncio.shield`` around that work would, without a task of its own."""

    __slots__ = ("deferred", "held")

    def __init__(self) -> None:
        self.held = False
        self.deferred = False


@dataclass(frozen=True, slots=True)
class AgentTask:
    """Everything one agent execution needs from the scheduler.

    ``envelope`` says where its events happen (run, workflow, agent); ``fingerprint`` is
    ``agent_fingerprint(agent)``, recorded with each attempt for ``--resume``; ``upstream``
    is a live read-only view of the outputs of the agents it needs.
    """

    envelope: Envelope
    workflow: WorkflowSpec
    agent: AgentSpec
    fingerprint: str
    inputs: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]
    env: Mapping[str, str] = field(default_factory=dict)
    budget_scopes: tuple[BudgetScope, ...] = ()
    first_attempt: int = 1
    # Filled as attempts end, so an agent cancelled mid-attempt still reports them.
    attempts: list[AttemptResult] = field(default_factory=list)
    guard: CancelGuard = field(default_factory=CancelGuard)

    @property
    def run_id(self) -> str:
        return self.envelope.run_id

    @property
    def workflow_key(self) -> str:
        return self.envelope.workflow or ""

    @property
    def where(self) -> str:
        return f"{self.workflow_key}/{self.agent.id}"


@dataclass(slots=True)
class Attempt:
    """One attempt of an agent: its number, its envelope, and the calls it has made."""

    task: AgentTask
    rt: Runtime
    number: int
    envelope: Envelope
    started_at: float
    usage: Usage = NO_USAGE
    cost_usd: Decimal = ZERO

    @classmethod
    def begin(cls, task: AgentTask, rt: Runtime, number: int) -> Attempt:
        return cls(task, rt, number, task.envelope.of_attempt(number), rt.clock.wall())

    def add_call(self, usage: Usage, cost_usd: Decimal) -> None:
        """Count one call's tokens and cost toward this attempt."""
        self.usage = self.usage + usage
        self.cost_usd += cost_usd

    @property
    def where(self) -> str:
        return f"{self.task.where}#{self.number}"
