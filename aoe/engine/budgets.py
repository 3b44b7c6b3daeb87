"""The budget scopes of one run: the run (``--budget``), each workflow (``budget_usd``),
and each agent (``cost_limit_usd``), over ``aoe.cost.budget.Budgets``.

Spend recorded by an earlier process (``--resume``) is preloaded into each scope the
first time it is used, so a resumed run cannot spend its budget twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from aoe.cost.budget import BudgetReservation, BudgetScope, Budgets, BudgetState
from aoe.spec.models import AgentSpec, WorkflowSpec

RUN_SCOPE = "run"


def _usd(value: float | Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


class RunBudgets:
    """Names the scopes of a run and holds the reservations against them."""

    def __init__(
        self, run_limit_usd: float | Decimal | None = None,
        spent: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.budgets = Budgets()
        self._spent = dict(spent or {})
        self._loaded: set[str] = set()
        self.run_scope = self._scope(RUN_SCOPE, run_limit_usd, RUN_SCOPE)

    def _scope(self, name: str, limit: float | Decimal | None, spent_key: str) -> BudgetScope:
        scope = BudgetScope(name, _usd(limit))
        if name not in self._loaded:
            self._loaded.add(name)
            earlier = self._spent.get(spent_key)
            if earlier:
                self.budgets.preload(scope, earlier)
        return scope

    def scopes_for_workflow(self, key: str, spec: WorkflowSpec) -> tuple[BudgetScope, ...]:
        """The run's scope and this workflow instance's own."""
        return (self.run_scope, self._scope(f"workflow:{key}", spec.budget_usd, key))

    def scope_for_agent(self, key: str, agent: AgentSpec) -> BudgetScope:
        return self._scope(f"agent:{key}/{agent.id}", agent.cost_limit_usd, f"{key}/{agent.id}")

    def reserve(self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal) -> BudgetReservation:
        return self.budgets.reserve(scopes, amount_usd)

    def settle(self, reservation: BudgetReservation, actual_usd: Decimal, *, confirmed: bool = True) -> None:
        self.budgets.settle(reservation, actual_usd, confirmed=confirmed)

    def release(self, reservation: BudgetReservation) -> None:
        self.budgets.release(reservation)

    def states(self) -> tuple[BudgetState, ...]:
        return self.budgets.states()

    def state(self, name: str) -> BudgetState:
        return self.budgets.state(name)
