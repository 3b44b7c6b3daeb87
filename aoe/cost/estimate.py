"""``aoe plan --estimate``: tokens and cost per agent before anything is spent.

Each agent's prompt is rendered with the inputs given and with stand-ins for upstream
outputs (a schema-valid example when the upstream agent has ``output_schema``, else prose
of its expected length), then counted with the model's tokenizer. Three figures:

- **min**: one attempt, the rendered prompt, no output;
- **expected**: one attempt with the expected output (``simulate.output_tokens``, else
  half of ``max_tokens``), and for agents with tools, two turns;
- **max**: what the budget reservation guards: every retry used
  (``max_retries + 1`` attempts), each with ``max_tokens`` of output, and ``max_turns``
  turns for agents with tools.

Cost is ``None`` for a model with no known price.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from aoe.cost.money import optional_text
from aoe.cost.pricing import PriceBook
from aoe.cost.tokens import estimate_request
from aoe.providers.base import CompletionRequest, Message, ToolDefinition, Usage
from aoe.providers.schema_example import example_for_schema
from aoe.spec.models import AgentSpec, WorkflowSpec, thaw
from aoe.spec.templates import prompt_char_limit, render

EXPECTED_TOOL_TURNS = 2


@dataclass(frozen=True, slots=True)
class Range:
    """A min / expected / max triple."""

    min: int
    expected: int
    max: int


@dataclass(frozen=True, slots=True)
class CostRange:
    """Cost in USD, or None for each figure when the model has no known price."""

    min: Decimal | None
    expected: Decimal | None
    max: Decimal | None


@dataclass(frozen=True, slots=True)
class AgentEstimate:
    """One agent's figures; ``exact`` says whether the prompt was counted exactly."""

    agent_id: str
    model: str
    input_tokens: Range
    output_tokens: Range
    cost_usd: CostRange
    exact: bool


@dataclass(frozen=True, slots=True)
class WorkflowEstimate:
    """Every agent's figures and the totals (a total is None if any part is unknown)."""

    agents: tuple[AgentEstimate, ...]
    input_tokens: Range
    output_tokens: Range
    cost_usd: CostRange
    unpriced: tuple[str, ...]


def _expected_output(agent: AgentSpec) -> int:
    if agent.simulate.output_tokens is not None:
        return min(agent.simulate.output_tokens, agent.max_tokens)
    return max(1, agent.max_tokens // 2)


def _stand_in(agent: AgentSpec, rng: random.Random) -> Any:
    """What an upstream agent's output might look like, for rendering downstream prompts."""

    if agent.simulate.output is not None:
        return thaw(agent.simulate.output)
    if agent.output_schema is not None:
        return example_for_schema(thaw(agent.output_schema), rng)
    return " ".join(["lorem"] * _expected_output(agent))


def _request(
    workflow: WorkflowSpec, agent: AgentSpec, context: Mapping[str, Any]
) -> CompletionRequest:

    where = f"{workflow.name}/{agent.id}"
    limit = prompt_char_limit(agent.max_prompt_chars, None)
    prompt = render(agent.prompt, context, where=f"{where} prompt", max_chars=limit)
    system = (
        render(agent.system, context, where=f"{where} system", max_chars=limit)
        if agent.system
        else None
    )
    tools = tuple(
        ToolDefinition(t.name, t.description, t.parameters)
        for name in agent.tools
        if (t := workflow.tools.get(name)) is not None
    )
    return CompletionRequest(
        model=agent.model.name,
        messages=(Message("user", prompt),),
        max_tokens=agent.max_tokens,
        system=system,
        output_schema=agent.output_schema,
        tools=tools,
    )


def _cost(
    prices: PriceBook, agent: AgentSpec, inputs: int, outputs: int, calls: int
) -> Decimal | None:
    one = prices.cost_usd(agent.model, Usage(input_tokens=inputs, output_tokens=outputs))
    return None if one is None else one * calls


def _sum(values: list[Decimal | None]) -> Decimal | None:
    return (
        None
        if any(v is None for v in values)
        else sum((v for v in values if v is not None), Decimal(0))
    )


def estimate_workflow(
    workflow: WorkflowSpec, inputs: Mapping[str, Any], prices: PriceBook, *, seed: int = 0
) -> WorkflowEstimate:
    """Render every agent's prompt with ``inputs`` and count what its calls may cost."""
    rng = random.Random(seed)
    upstream = {
        agent_id: MappingProxyType({"output": _stand_in(agent, rng)})
        for agent_id, agent in workflow.agents.items()
    }
    context = {"inputs": inputs, "agents": upstream, "env": {}, "workflow": {"name": workflow.name}}
    estimates: list[AgentEstimate] = []
    for agent in workflow.agents.values():
        request = _request(workflow, agent, {**context, "with": agent.with_values})
        counted = estimate_request(agent.model, request, exact=True)
        attempts = agent.retry.max_retries + 1
        turns_max = agent.max_turns if agent.tools else 1
        turns_expected = EXPECTED_TOOL_TURNS if agent.tools else 1
        expected_out = _expected_output(agent)
        tokens_in = Range(
            counted.input_tokens,
            counted.input_tokens * turns_expected,
            counted.input_tokens * turns_max * attempts,
        )
        tokens_out = Range(
            0, expected_out * turns_expected, agent.max_tokens * turns_max * attempts
        )
        estimates.append(
            AgentEstimate(
                agent.id,
                str(agent.model),
                tokens_in,
                tokens_out,
                CostRange(
                    _cost(prices, agent, counted.input_tokens, 0, 1),
                    _cost(prices, agent, counted.input_tokens, expected_out, turns_expected),
                    _cost(
                        prices, agent, counted.input_tokens, agent.max_tokens, turns_max * attempts
                    ),
                ),
                counted.exact,
            )
        )
    return WorkflowEstimate(
        tuple(estimates),
        Range(
            *(
                sum(getattr(e.input_tokens, f) for e in estimates)
                for f in ("min", "expected", "max")
            )
        ),
        Range(
            *(
                sum(getattr(e.output_tokens, f) for e in estimates)
                for f in ("min", "expected", "max")
            )
        ),
        CostRange(
            *(_sum([getattr(e.cost_usd, f) for e in estimates]) for f in ("min", "expected", "max"))
        ),
        tuple(sorted({e.model for e in estimates if e.cost_usd.max is None})),
    )


def estimate_to_dict(estimate: WorkflowEstimate) -> dict[str, Any]:
    """JSON-ready figures (costs as decimal strings, null when unknown)."""

    def money(c: CostRange) -> dict[str, str | None]:
        return {
            k: optional_text(v)
            for k, v in (("min", c.min), ("expected", c.expected), ("max", c.max))
        }

    def tokens(r: Range) -> dict[str, int]:
        return {"min": r.min, "expected": r.expected, "max": r.max}

    return {
        "agents": {
            e.agent_id: {
                "model": e.model,
                "exact": e.exact,
                "input_tokens": tokens(e.input_tokens),
                "output_tokens": tokens(e.output_tokens),
                "cost_usd": money(e.cost_usd),
            }
            for e in estimate.agents
        },
        "total": {
            "input_tokens": tokens(estimate.input_tokens),
            "output_tokens": tokens(estimate.output_tokens),
            "cost_usd": money(estimate.cost_usd),
        },
        "unpriced_models": list(estimate.unpriced),
    }


def estimate_json(estimate: WorkflowEstimate) -> str:
    return json.dumps(estimate_to_dict(estimate), indent=2)
