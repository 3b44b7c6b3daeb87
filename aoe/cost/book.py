"""The in-memory budget book of one run: the run (``--budget``), each workflow
(``budget_usd``) and each agent (``cost_limit_usd``), over ``aoe.cost.budget.Budgets``.

It implements ``aoe.services.BudgetBook`` for a run in one process.

Spend recorded by an earlier process (``--resume``) is preloaded into each scope the
first time it is used, so a resumed run cannot spend its budget twice.

A reservation that does not fit only because other calls' reservations are still open
waits for them to settle (they are worst cases, and usually settle far lower) instead of
failing: a budget stops the run when the spend itself leaves no room, not when many
agents happen to be in flight at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal

from aoe.cost.budget import BudgetOverrun, BudgetReservation, Budgets, BudgetScope, BudgetState
from aoe.errors import BudgetExceededError
from aoe.spec.models import AgentSpec, WorkflowSpec

RUN_SCOPE = "run"


class RunBudgets:
    """Names the scopes of a run and holds the reservations against them."""

    def __init__(
        self,
        run_limit_usd: Decimal | None = None,
        spent: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.budgets = Budgets()
        self._spent = dict(spent or {})
        self._loaded: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self.run_scope = self._scope(RUN_SCOPE, run_limit_usd, RUN_SCOPE)

    def _scope(self, name: str, limit: Decimal | None, spent_key: str) -> BudgetScope:
        scope = BudgetScope(name, limit)
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

    async def reserve(
        self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal
    ) -> BudgetReservation:
        """Reserve ``amount_usd`` in every scope; wait while open reservations may free room."""
        while True:
            try:
                return self.budgets.reserve(scopes, amount_usd)
            except BudgetExceededError:
                if not self._may_fit_later(scopes, amount_usd):
                    raise
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _may_fit_later(self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal) -> bool:
        """True when settling the open reservations could make room for ``amount_usd``."""
        blocked_by_reservations = False
        for scope in scopes:
            state = self.budgets.state(scope)
            if state.limit_usd is None:
                continue
            if state.spent_usd + state.unconfirmed_usd + amount_usd > state.limit_usd:
                return False
            if state.committed_usd + amount_usd > state.limit_usd:
                blocked_by_reservations = blocked_by_reservations or state.reserved_usd > 0
        return blocked_by_reservations

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def settle(
        self,
        reservation: BudgetReservation,
        actual_usd: Decimal,
        *,
        confirmed: bool = True,
        call: str = "",
    ) -> None:
        self.budgets.settle(reservation, actual_usd, confirmed=confirmed, call=call)
        self._wake()

    async def release(self, reservation: BudgetReservation) -> None:
        self.budgets.release(reservation)
        self._wake()

    def states(self) -> tuple[BudgetState, ...]:
        return self.budgets.states()

    def overruns(self) -> tuple[BudgetOverrun, ...]:
        return self.budgets.overruns()

    def state(self, name: str) -> BudgetState:
        return self.budgets.state(name)
