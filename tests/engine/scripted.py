"""A scripted fake model for engine tests: answers per agent from a script, records calls."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aoe.clock import FakeClock
from aoe.ledger.records import CallRecord
from aoe.providers.base import Completion, CompletionRequest, LLMClient, ModelInfo, Usage
from aoe.ratelimit import LimiterStats, RateLimiter
from aoe.services import NullRecorder
from aoe.spec.models import (
    AgentSpec,
    Location,
    ModelRef,
    RetrySpec,
    WorkflowSpec,
)

Step = Exception | str | Callable[[CompletionRequest], str]


@dataclass
class Call:
    agent: str
    attempt: int
    started: float
    ended: float = 0.0


@dataclass
class ScriptedClient:
    """Answers each agent with the next step of its script (an exception is raised).

    ``latency_s`` maps agent ids to how long each call takes, slept on ``clock``: by default
    a ``FakeClock`` that jumps, so calls take no real time and ``Call`` stamps (in that
    clock's seconds) still show which calls overlapped. Give the engine the same clock.
    """

    script: Mapping[str, list[Step]] = field(default_factory=dict)
    latency_s: Mapping[str, float] = field(default_factory=dict)
    name: str = "script"
    clock: FakeClock = field(default_factory=lambda: FakeClock(autojump=True))
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    _cursor: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def complete(self, request: CompletionRequest) -> Completion:
        agent = request.trace_id.rsplit("/", 1)[-1]
        call = Call(agent, request.attempt, self.clock.now())
        self.calls.append(call)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            delay = self.latency_s.get(agent, 0.0)
            if delay:
                await self.clock.sleep(delay)
            steps = self.script.get(agent, [])
            index = self._cursor[agent]
            self._cursor[agent] += 1
            step: Step = steps[index] if index < len(steps) else f"answer of {agent}"
            if isinstance(step, Exception):
                raise step
            text = step(request) if callable(step) else step
            return Completion(
                text=text, usage=Usage(10, 5), model=request.model, finish_reason="stop"
            )
        finally:
            self.in_flight -= 1
            call.ended = self.clock.now()

    async def complete_with_tools(self, request: CompletionRequest) -> Completion:
        return await self.complete(request)

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(provider=self.name, name=model)

    async def aclose(self) -> None:
        return None

    def started(self, agent: str) -> float:
        return next(c.started for c in self.calls if c.agent == agent)

    def ended(self, agent: str) -> float:
        return [c.ended for c in self.calls if c.agent == agent][-1]

    def order(self) -> list[str]:
        return [c.agent for c in self.calls]


class OneClient:
    """A client source that serves every model with the same client."""

    def __init__(self, client: LLMClient) -> None:
        self.client = client

    def client_for(self, model: ModelRef) -> LLMClient:
        return self.client

    async def aclose(self) -> None:
        return None


class FlatPrices:
    """A price source by which every call reserves, and costs, the same amount."""

    def __init__(self, per_call_usd: Decimal | str) -> None:
        self.per_call_usd = Decimal(per_call_usd)

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal:
        return self.per_call_usd

    def max_cost_usd(self, model: ModelRef, input_tokens: int, max_output_tokens: int) -> Decimal:
        return self.per_call_usd


class OneLimiter:
    """A limiter source that puts every model behind the same limiter."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def for_model(self, provider: str, model: str) -> RateLimiter:
        return self.limiter

    def all_stats(self) -> tuple[LimiterStats, ...]:
        return (self.limiter.stats(),)


class CallLog(NullRecorder):
    """A recorder that keeps the call records the ledger would write, in order."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    async def record_call(self, record: CallRecord) -> None:
        self.calls.append(record)


NO_RETRY = RetrySpec(max_retries=0)


def agent(
    agent_id: str,
    *needs: str,
    priority: int = 5,
    retry: RetrySpec = NO_RETRY,
    prompt: str | None = None,
    **extra: Any,
) -> AgentSpec:
    return AgentSpec(
        id=agent_id,
        model=ModelRef("script", "m"),
        prompt=prompt if prompt is not None else f"do {agent_id}",
        location=Location("test.yaml", 1, 1),
        needs=needs,
        priority=priority,
        retry=retry,
        **extra,
    )


def workflow(*agents: AgentSpec, name: str = "wf", **extra: Any) -> WorkflowSpec:
    from pathlib import Path

    return WorkflowSpec(
        name=name, path=Path("test.yaml"), agents={a.id: a for a in agents}, **extra
    )
