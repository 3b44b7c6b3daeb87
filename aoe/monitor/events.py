"""Typed events of a run, fanned out to sinks (live UI, plain log, JSON Lines, metrics).

Events are plain frozen data: the engine and pipeline publish them and never care who
listens. A sink's ``handle`` is called on the event loop and must return quickly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aoe.providers.base import Usage


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Common fields: when (epoch seconds) and which run."""

    run_id: str
    at: float = field(default_factory=_now)

    @property
    def kind(self) -> str:
        """The event's name in snake case, as written to JSON Lines."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    workflows: tuple[str, ...]
    simulate: bool
    budget_usd: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    state: str
    exit_code: int
    cost_usd: float
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStarted(Event):
    workflow: str
    name: str
    agents_total: int
    budget_usd: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFinished(Event):
    workflow: str
    state: str
    duration_s: float
    cost_usd: float
    counts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStarted(Event):
    workflow: str
    agent: str
    attempt: int
    model: str
    module: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRetrying(Event):
    workflow: str
    agent: str
    attempt: int
    error: str
    delay_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFinished(Event):
    """An agent reached a final state (COMPLETED, FAILED, BUDGET_EXCEEDED, CANCELLED, ...)."""

    workflow: str
    agent: str
    state: str
    attempts: int
    duration_s: float
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    error: str | None = None
    module: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSkipped(Event):
    workflow: str
    agent: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiCall(Event):
    """One provider call that came back, with or without usage."""

    workflow: str
    agent: str
    attempt: int
    provider: str
    model: str
    usage: Usage
    cost_usd: float
    latency_s: float
    status: str
    cost_confirmed: bool = True
    turn: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(Event):
    """An agent's tool call finished. Carries no arguments and no result, only its size."""

    workflow: str
    agent: str
    attempt: int
    turn: int
    tool: str
    ok: bool
    duration_s: float
    result_chars: int
    truncated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetHit(Event):
    """A reservation did not fit a budget; the agent stops BUDGET_EXCEEDED."""

    workflow: str
    agent: str
    scope: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitHit(Event):
    """A call waited for rate-limit capacity, or the provider answered 429."""

    workflow: str
    agent: str
    limiter: str
    waited_s: float
    provider_429: bool = False


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
