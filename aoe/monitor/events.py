"""Typed events of a run, fanned out to sinks (live UI, plain log, JSON Lines, metrics).

Every event carries one ``Envelope``, where it happened (the run, and as far down as it
is known: workflow, agent, attempt), and ``at``, when (epoch seconds from the run's
clock). The engine builds an envelope once per workflow, agent or attempt and hands the
same object to every event it publishes there. Money is ``Decimal`` USD.

Events are plain frozen data: the engine and pipeline publish them and never care who
listens. A sink's ``handle`` is called on the event loop and must return quickly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from aoe.errors import RateLimitKind
from aoe.providers.base import Usage

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Where an event happened: the run, and its workflow, agent and attempt when known."""

    run_id: str
    workflow: str | None = None
    agent: str | None = None
    attempt: int | None = None

    def of_workflow(self, workflow: str) -> Envelope:
        return Envelope(self.run_id, workflow)

    def of_agent(self, agent: str) -> Envelope:
        return Envelope(self.run_id, self.workflow, agent)

    def of_attempt(self, attempt: int) -> Envelope:
        return Envelope(self.run_id, self.workflow, self.agent, attempt)


@functools.cache
def _kind(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@dataclass(frozen=True, slots=True)
class Event:
    """Common to every event: where (``envelope``) and when (``at``, epoch seconds)."""

    envelope: Envelope
    at: float

    @property
    def kind(self) -> str:
        """The event's name in snake case, as written to JSON Lines (``api_call``)."""
        return _kind(type(self).__name__)

    @property
    def run_id(self) -> str:
        return self.envelope.run_id


@dataclass(frozen=True, slots=True)
class WorkflowEvent(Event):
    """An event of one workflow instance."""

    @property
    def workflow(self) -> str:
        return self.envelope.workflow or ""


@dataclass(frozen=True, slots=True)
class AgentEvent(WorkflowEvent):
    """An event of one agent of a workflow instance."""

    @property
    def agent(self) -> str:
        return self.envelope.agent or ""


@dataclass(frozen=True, slots=True)
class AttemptEvent(AgentEvent):
    """An event of one attempt of an agent."""

    @property
    def attempt(self) -> int:
        return self.envelope.attempt or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    workflows: tuple[str, ...]
    simulate: bool
    budget_usd: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    state: str
    exit_code: int
    cost_usd: Decimal
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStarted(WorkflowEvent):
    name: str
    agents_total: int
    budget_usd: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFinished(WorkflowEvent):
    state: str
    duration_s: float
    cost_usd: Decimal
    counts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStarted(AttemptEvent):
    model: str
    module: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRetrying(AttemptEvent):
    error: str
    delay_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFinished(AgentEvent):
    """An agent reached a final state (COMPLETED, FAILED, BUDGET_EXCEEDED, CANCELLED, ...)."""

    state: str
    attempts: int
    duration_s: float
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = _ZERO
    error: str | None = None
    module: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSkipped(AgentEvent):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiCall(AttemptEvent):
    """One provider call that came back, with or without usage."""

    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal
    latency_s: float
    status: str
    cost_confirmed: bool = True
    turn: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(AttemptEvent):
    """An agent's tool call finished. Carries no arguments and no result, only its size."""

    turn: int
    tool: str
    ok: bool
    duration_s: float
    result_chars: int
    truncated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetHit(AttemptEvent):
    """A reservation did not fit a budget; the agent stops BUDGET_EXCEEDED."""

    scope: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitHit(AttemptEvent):
    """A call waited for rate-limit capacity, or the provider answered 429.

    A 429 says which ``provider`` and ``model`` answered it, what it ``limited``
    (``rate_limit``: calls or tokens per period; ``concurrency``: calls in flight;
    ``quota``: money) and the ``retry_after_s`` it asked for, if any.
    """

    limiter: str
    waited_s: float
    provider_429: bool = False
    provider: str | None = None
    model: str | None = None
    limited: RateLimitKind | None = None
    retry_after_s: float | None = None


class EventSink(Protocol):
    """Anything that wants events."""

    def handle(self, event: Event) -> None: ...


class EventBus:
    """Fans each event out to every sink; a failing sink never breaks the run."""

    def __init__(self, sinks: Iterable[EventSink] = ()) -> None:
        self._sinks: list[EventSink] = list(sinks)
        self.errors: list[BaseException] = []

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def publish(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink.handle(event)
            except Exception as exc:  # a UI bug must not lose the run
                self.errors.append(exc)
