"""A prompt past its limit fails its agent before anything is reserved, limited or sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

from aoe.cost.book import RunBudgets
from aoe.engine.results import AgentState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, WorkflowJob
from aoe.providers.base import ModelInfo
from aoe.spec.models import AgentSpec, WorkflowSpec
from tests.engine.scripted import FlatPrices, OneClient, ScriptedClient, agent, workflow


@dataclass
class WindowedClient(ScriptedClient):
    """A scripted model whose context window is known."""

    context_window: int | None = None

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(provider=self.name, name=model, context_window=self.context_window)


class CountingBudgets(RunBudgets):
    """Run budgets that count how often a reservation was asked for."""

    asked = 0

    async def reserve(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.asked += 1
        return await super().reserve(*args, **kwargs)  # type: ignore[arg-type]


async def _run(client: ScriptedClient, spec: WorkflowSpec) -> tuple[CountingBudgets, object]:
    budgets = CountingBudgets(Decimal(1))
    rt = Runtime(
        clients=OneClient(client), clock=client.clock, budgets=budgets,
        prices=FlatPrices("0.01"),
    )  # fmt: skip
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 5)
    return budgets, result


def _prompted(agent_id: str, prompt: str, **extra: object) -> AgentSpec:
    return agent(agent_id, prompt=prompt, **extra)


async def test_an_oversized_prompt_fails_its_agent_before_any_reservation_or_call() -> None:
    """max_prompt_chars: 10 and an 11-character prompt: FAILED on the first attempt, with
    the limit in the error, no call, no reservation; a 10-character prompt runs."""
    client = WindowedClient()
    spec = workflow(
        _prompted("long", "x" * 11, max_prompt_chars=10, priority=1),
        _prompted("exact", "y" * 10, max_prompt_chars=10),
        allow_partial_completion=True, max_failure_rate=1.0,
    )
    budgets, result = await _run(client, spec)
    agents = result.workflows[0].agents  # type: ignore[attr-defined]
    assert agents["long"].state is AgentState.FAILED
    assert len(agents["long"].attempts) == 1  # not retried: rendering again changes nothing
    assert "more than 10 characters" in (agents["long"].error or "")
    assert agents["exact"].state is AgentState.COMPLETED
    assert client.order() == ["exact"]
    assert budgets.asked == 1  # only the agent that ran reserved anything
    assert budgets.state("agent:wf/long").committed_usd == 0


async def test_without_max_prompt_chars_the_models_context_window_sets_the_limit() -> None:
    """A 100-token window allows 800 characters: 801 fail, 800 run; an unknown window
    allows 1,000,000."""
    small = WindowedClient(context_window=100)
    spec = workflow(_prompted("over", "z" * 801, priority=1), _prompted("fits", "z" * 800),
                    allow_partial_completion=True, max_failure_rate=1.0)  # fmt: skip
    _, result = await _run(small, spec)
    agents = result.workflows[0].agents  # type: ignore[attr-defined]
    assert agents["over"].state is AgentState.FAILED
    assert "more than 800 characters" in (agents["over"].error or "")
    assert agents["fits"].state is AgentState.COMPLETED
    unknown = WindowedClient()
    _, result = await _run(unknown, workflow(_prompted("big", "z" * 900_000)))
    assert result.workflows[0].agents["big"].state is AgentState.COMPLETED  # type: ignore[attr-defined]
