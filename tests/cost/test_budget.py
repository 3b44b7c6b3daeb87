"""Hard budgets by reservation: parallel agents can never spend past a limit."""

from __future__ import annotations

import asyncio
import contextlib
import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.cost.budget import Budgets, BudgetScope
from aoe.errors import BudgetExceededError

D = Decimal


def test_reserve_commits_to_every_scope() -> None:
    """A reservation counts against the run, its workflow and its agent at once."""
    budgets = Budgets()
    scopes = [BudgetScope("run", D("1")), BudgetScope("wf", D("0.5")), BudgetScope("agent", None)]
    budgets.reserve(scopes, D("0.2"))
    assert [s.reserved_usd for s in budgets.states()] == [D("0.2")] * 3
    assert budgets.state("wf").remaining_usd == D("0.3")
    assert budgets.state("agent").remaining_usd is None


def test_a_reservation_that_does_not_fit_touches_nothing() -> None:
    """When one scope is full, no scope is charged, and the error names it and what is left."""
    budgets = Budgets()
    run, agent = BudgetScope("run", D("1.00")), BudgetScope("agent:a", D("0.05"))
    budgets.reserve([run, agent], D("0.04"))
    with pytest.raises(BudgetExceededError) as err:
        budgets.reserve([run, agent], D("0.02"))
    assert err.value.exit_code == 3
    assert err.value.where == "agent:a"
    assert "cannot take $0.0200 more: $0.0100 left" in str(err.value)
    assert budgets.state(run).reserved_usd == D("0.04")
    assert budgets.state(agent).reserved_usd == D("0.04")


def test_settle_replaces_the_reservation_with_the_real_cost() -> None:
    """After the call only its true cost stays committed; the rest is free again."""
    budgets = Budgets()
    run = BudgetScope("run", D("0.10"))
    res = budgets.reserve([run], D("0.08"))
    budgets.settle(res, D("0.03"))
    state = budgets.state(run)
    assert (state.spent_usd, state.reserved_usd, state.remaining_usd) == (
        D("0.03"),
        D(0),
        D("0.07"),
    )
    budgets.reserve([run], D("0.07"))  # exactly fits


def test_unknown_outcome_counts_as_unconfirmed_spend() -> None:
    """A call that may have been billed keeps its whole reservation, marked unconfirmed."""
    budgets = Budgets()
    run = BudgetScope("run", D("0.10"))
    held = budgets.reserve([run], D("0.06"))
    budgets.settle(held, held.amount_usd, confirmed=False)
    state = budgets.state(run)
    assert (state.spent_usd, state.unconfirmed_usd, state.reserved_usd) == (D(0), D("0.06"), D(0))
    with pytest.raises(BudgetExceededError, match=r"unconfirmed \$0.0600"):
        budgets.reserve([run], D("0.05"))


def test_release_gives_the_whole_reservation_back() -> None:
    """A call that never went out costs nothing."""
    budgets = Budgets()
    run = BudgetScope("run", D("0.10"))
    budgets.release(budgets.reserve([run], D("0.10")))
    assert budgets.state(run).remaining_usd == D("0.10")
    budgets.reserve([run], D("0.10"))


def test_preloaded_spend_of_a_resumed_run_counts() -> None:
    """Resuming a run starts from what it already spent, even if that is over the limit."""
    budgets = Budgets()
    run = BudgetScope("run", D("1"))
    budgets.preload(run, D("0.90"), unconfirmed_usd=D("0.05"))
    with pytest.raises(BudgetExceededError):
        budgets.reserve([run], D("0.06"))
    budgets.reserve([run], D("0.05"))
    budgets.preload(BudgetScope("wf", D("0.1")), D("0.2"))
    assert budgets.state("wf").remaining_usd == D("-0.1")


def test_misuse_is_reported() -> None:
    """Settling twice or one name with two limits is a caller bug, not silent double counting."""
    budgets = Budgets()
    run = BudgetScope("run", D("1"))
    res = budgets.reserve([run], D("0.1"))
    budgets.settle(res, D("0.1"))
    with pytest.raises(ValueError, match="not open"):
        budgets.settle(res, D("0.1"))
    with pytest.raises(ValueError, match="has limit 1"):
        budgets.reserve([BudgetScope("run", D("2"))], D("0.1"))
    with pytest.raises(ValueError, match="negative"):
        budgets.reserve([run], D("-1"))


def test_a_scope_listed_twice_is_charged_once() -> None:
    """Passing the same scope twice does not let a call slip past its limit."""
    budgets = Budgets()
    run = BudgetScope("run", D("1"))
    budgets.reserve([run, run], D("0.6"))
    assert budgets.state(run).reserved_usd == D("0.6")
    with pytest.raises(BudgetExceededError):
        budgets.reserve([run], D("0.6"))


async def test_hundreds_of_parallel_agents_never_pass_any_budget() -> None:
    """500 agents reserving and settling at once: committed spend never exceeds a limit."""
    budgets = Budgets()
    rng = random.Random(7)
    run = BudgetScope("run", D("5.00"))
    workflows = [BudgetScope(f"wf:{i}", D("1.50")) for i in range(4)]
    stopped = 0
    violations: list[str] = []

    def check() -> None:
        for state in budgets.states():
            if state.limit_usd is not None and state.committed_usd > state.limit_usd:
                violations.append(f"{state.name}: {state.committed_usd}")

    async def agent(i: int) -> None:
        nonlocal stopped
        scopes = [run, workflows[i % 4], BudgetScope(f"agent:{i}", D("0.05"))]
        for _ in range(5):
            amount = D(rng.randint(1, 2000)) / D(100_000)
            try:
                res = budgets.reserve(scopes, amount)
            except BudgetExceededError:
                stopped += 1
                return
            check()
            await asyncio.sleep(0)
            outcome = rng.random()
            if outcome < 0.1:
                budgets.settle(res, res.amount_usd, confirmed=False)
            elif outcome < 0.2:
                budgets.release(res)
            else:
                budgets.settle(res, amount * D(rng.randint(0, 100)) / D(100))
            check()
            await asyncio.sleep(0)

    await asyncio.gather(*(agent(i) for i in range(500)))
    assert violations == []
    assert stopped > 0  # the budget was binding, not idle
    final = budgets.state(run)
    assert final.reserved_usd == 0
    assert final.spent_usd + final.unconfirmed_usd <= D("5.00")
    total_agents = sum((budgets.state(f"agent:{i}").spent_usd for i in range(500)), start=D(0))
    assert total_agents == final.spent_usd


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reserve", "settle", "unknown", "release"]),
            st.integers(0, 3),
            st.integers(0, 60),
            st.integers(0, 100),
        ),
        max_size=60,
    )
)
def test_committed_spend_never_passes_a_limit(ops: list[tuple[str, int, int, int]]) -> None:
    """Over any sequence of reserve/settle/release, spent+unconfirmed+reserved stays in limits."""
    budgets = Budgets()
    run = BudgetScope("run", D("1.00"))
    agents = [BudgetScope(f"a{i}", D("0.40")) for i in range(4)]
    open_ = []
    for kind, who, cents, pct in ops:
        if kind == "reserve":
            with contextlib.suppress(BudgetExceededError):
                open_.append(budgets.reserve([run, agents[who]], D(cents) / 100))
        elif open_:
            res = open_.pop(who % len(open_))
            if kind == "settle":
                budgets.settle(res, res.amount_usd * pct / 100)
            elif kind == "unknown":
                budgets.settle(res, res.amount_usd, confirmed=False)
            else:
                budgets.release(res)
        for state in budgets.states():
            assert state.limit_usd is not None
            assert state.committed_usd <= state.limit_usd


def test_a_provider_billing_past_the_bound_and_the_limit_closes_the_scope() -> None:
    """A call that cost more than its reservation and took a scope over: the scope is
    overrun (which, by how much, which call) and refuses every later reservation."""
    budgets = Budgets()
    run = BudgetScope("run", D("0.10"))
    agent = BudgetScope("agent:wf/a", None)
    held = budgets.reserve([run, agent], D("0.08"))
    budgets.settle(held, D("0.13"), call="wf/a#1")
    (overrun,) = budgets.overruns()
    assert (overrun.scope, overrun.limit_usd, overrun.over_usd) == ("run", D("0.10"), D("0.03"))
    assert overrun.calls == ("wf/a#1",)
    assert "budget run ($0.1000) was passed by $0.0300" in overrun.message
    assert "wf/a#1" in overrun.message
    with pytest.raises(BudgetExceededError, match="closed"):
        budgets.reserve([run], D(0))


def test_a_call_past_its_reservation_but_within_the_limit_is_no_overrun() -> None:
    """Billing past a reservation matters only when it passes a limit."""
    budgets = Budgets()
    run = BudgetScope("run", D("1"))
    budgets.settle(budgets.reserve([run], D("0.01")), D("0.05"), call="wf/a#1")
    assert budgets.overruns() == ()
    budgets.reserve([run], D("0.5"))
