"""Run budgets: many agents in flight never overspend, and cheap calls are not refused."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from aoe.cost.book import RunBudgets
from aoe.errors import BudgetExceededError
from tests.engine.scripted import agent, workflow

ONE = Decimal(1)


async def _spend(budgets: RunBudgets, scopes: tuple, actual: Decimal) -> bool:  # type: ignore[type-arg]
    try:
        hold = await budgets.reserve(scopes, ONE)
    except BudgetExceededError:
        return False
    await asyncio.sleep(0.001)
    await budgets.settle(hold, actual)
    return True


async def test_calls_wait_for_open_reservations_instead_of_failing() -> None:
    """50 calls reserving $1 under a $10 cap, each really costing $0.10: all of them run."""
    budgets = RunBudgets(Decimal(10))
    scopes = budgets.scopes_for_workflow("wf", workflow(agent("a")))
    done = await asyncio.gather(*(_spend(budgets, scopes, Decimal("0.1")) for _ in range(50)))
    assert all(done)
    assert budgets.state("run").spent_usd == Decimal(5)


async def test_spend_never_passes_the_limit_and_the_rest_is_refused() -> None:
    """When calls really cost what they reserved, exactly the budget's worth runs."""
    budgets = RunBudgets(Decimal(10))
    scopes = budgets.scopes_for_workflow("wf", workflow(agent("a")))
    done = await asyncio.gather(*(_spend(budgets, scopes, ONE) for _ in range(50)))
    assert sum(done) == 10
    state = budgets.state("run")
    assert state.spent_usd == Decimal(10)
    assert state.reserved_usd == 0


async def test_resumed_spend_counts_against_every_scope() -> None:
    """Spend recorded before a resume is preloaded, so the budget is not spent twice."""
    budgets = RunBudgets(Decimal(2), {"run": Decimal("1.5"), "wf": Decimal("1.5")})
    spec = workflow(agent("a"), budget_usd=Decimal(5))
    scopes = budgets.scopes_for_workflow("wf", spec)
    with pytest.raises(BudgetExceededError):
        await budgets.reserve(scopes, ONE)
    assert budgets.state("workflow:wf").spent_usd == Decimal("1.5")
