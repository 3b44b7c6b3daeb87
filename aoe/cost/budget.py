"""Hard budgets by reservation: a call's worst-case cost is committed before it is sent.

Scopes are named (the run, each workflow, each agent); a call reserves against all of its
scopes at once or against none, so 500 agents in parallel can never overspend: at any
moment ``spent + unconfirmed + reserved <= limit`` for every scope, as long as no call
costs more than it reserved (a reservation is the worst case, see
``PriceBook.max_cost_usd``). A call that did cost more is still recorded in full: a budget
never hides spend.

After the call the reservation is settled to the true cost. A call whose outcome is
unknown (timed out, cut off after sending) may still have been billed, so it settles at its
full reserved amount as *unconfirmed* spend, which counts against the budget like any other.

A reservation is an upper bound of what the provider can bill, so a call never costs more.
If a provider bills past it anyway and that takes a scope over its limit, the scope is
*overrun*: it is closed at once (every later reservation in it is refused) and
``overruns()`` says which scope, by how much and which calls did it, so the run can end
as stopped by a budget instead of completed.

All methods are synchronous and never await: on one event loop, each runs to completion
before another task can run, so check-then-commit needs no lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from aoe.cost.money import ZERO as _ZERO
from aoe.cost.money import format_usd
from aoe.errors import BudgetExceededError

__all__ = ["BudgetOverrun", "BudgetReservation", "BudgetScope", "BudgetState", "Budgets"]


@dataclass(frozen=True, slots=True)
class BudgetScope:
    """A named ceiling, e.g. ``run``, ``workflow:review``, ``agent:review/summarise``.

    ``limit_usd`` None means the scope only counts spend.
    """

    name: str
    limit_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class BudgetReservation:
    """A commitment held against ``scopes`` until it is settled or released."""

    id: int
    scopes: tuple[str, ...]
    amount_usd: Decimal


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One scope's readout. ``remaining_usd`` is None for a scope with no limit."""

    name: str
    limit_usd: Decimal | None
    spent_usd: Decimal
    unconfirmed_usd: Decimal
    reserved_usd: Decimal

    @property
    def committed_usd(self) -> Decimal:
        """Everything that counts against the limit."""
        return self.spent_usd + self.unconfirmed_usd + self.reserved_usd

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limit_usd is None:
            return None
        return self.limit_usd - self.committed_usd


@dataclass(frozen=True, slots=True)
class BudgetOverrun:
    """A scope a provider billed past: what it holds now against its limit, and the calls
    that cost more than aoe reserved for them while taking it over."""

    scope: str
    limit_usd: Decimal
    committed_usd: Decimal
    calls: tuple[str, ...]

    @property
    def over_usd(self) -> Decimal:
        return self.committed_usd - self.limit_usd

    @property
    def message(self) -> str:
        return (
            f"budget {self.scope} ({format_usd(self.limit_usd)}) was passed by "
            f"{format_usd(self.over_usd)}: the provider billed more than aoe reserved for "
            f"{', '.join(self.calls)}"
        )


class _Account:
    __slots__ = ("limit", "overrun_by", "reserved", "spent", "unconfirmed")

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = limit
        self.spent = _ZERO
        self.unconfirmed = _ZERO
        self.reserved = _ZERO
        self.overrun_by: list[str] = []  # calls that billed past their reservation and limit

    def committed(self) -> Decimal:
        return self.spent + self.unconfirmed + self.reserved


class Budgets:
    """Every budget scope of one process, and the reservations held against them."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._open: dict[int, BudgetReservation] = {}
        self._overrun: list[str] = []  # scopes in the order a provider billed past them
        self._ids = itertools.count(1)

    def reserve(self, scopes: Sequence[BudgetScope], amount_usd: Decimal) -> BudgetReservation:
        """Commit ``amount_usd`` to every scope, or raise ``BudgetExceededError`` touching none.

        A scope seen for the first time is registered with its limit; the same name with a
        different limit is a bug in the caller (``ValueError``).
        """
        if amount_usd < 0:
            raise ValueError(f"a reservation cannot be negative: {amount_usd}")
        scopes = list({scope.name: scope for scope in scopes}.values())  # once per name
        accounts = [self._account(scope) for scope in scopes]
        for scope, account in zip(scopes, accounts, strict=True):
            if account.overrun_by:
                raise BudgetExceededError(
                    f"budget {scope.name} is closed: the provider billed past it",
                    where=scope.name,
                    hint="raise the budget, or check how the provider counts tokens",
                )
            if account.limit is not None and account.committed() + amount_usd > account.limit:
                left = max(_ZERO, account.limit - account.committed())
                raise BudgetExceededError(
                    f"budget {scope.name} ({format_usd(account.limit)}) cannot take "
                    f"{format_usd(amount_usd)} more: {format_usd(left)} left (spent "
                    f"{format_usd(account.spent)}, unconfirmed {format_usd(account.unconfirmed)}, "
                    f"reserved {format_usd(account.reserved)})",
                    where=scope.name,
                    hint="raise the budget (--budget, budget_usd or cost_limit_usd) "
                    "or lower max_tokens",
                )
        for account in accounts:
            account.reserved += amount_usd
        reservation = BudgetReservation(
            next(self._ids), tuple(scope.name for scope in scopes), amount_usd
        )
        self._open[reservation.id] = reservation
        return reservation

    def settle(
        self,
        reservation: BudgetReservation,
        actual_usd: Decimal,
        *,
        confirmed: bool = True,
        call: str = "",
    ) -> None:
        """Replace the reservation with the call's cost, even one past the reservation.

        ``confirmed=False`` records spend the provider may or may not have billed (outcome
        unknown): the full reserved amount. ``call`` names the call in an overrun.
        """
        if actual_usd < 0:
            raise ValueError(f"a cost cannot be negative: {actual_usd}")
        past_bound = actual_usd > reservation.amount_usd
        accounts = self._close(reservation)
        for name, account in zip(reservation.scopes, accounts, strict=True):
            account.reserved -= reservation.amount_usd
            if confirmed:
                account.spent += actual_usd
            else:
                account.unconfirmed += actual_usd
            if past_bound and account.limit is not None and account.committed() > account.limit:
                if not account.overrun_by:
                    self._overrun.append(name)
                account.overrun_by.append(call or f"reservation {reservation.id}")

    def release(self, reservation: BudgetReservation) -> None:
        """Give a reservation back whole: the call never went out."""
        for account in self._close(reservation):
            account.reserved -= reservation.amount_usd

    def preload(
        self, scope: BudgetScope, spent_usd: Decimal, unconfirmed_usd: Decimal = _ZERO
    ) -> None:
        """Count spend from before this process (a resumed run), even past the limit."""
        account = self._account(scope)
        account.spent += spent_usd
        account.unconfirmed += unconfirmed_usd

    def state(self, scope: str | BudgetScope) -> BudgetState:
        """The readout of one scope (a scope never used reads as all zero)."""
        name = scope if isinstance(scope, str) else scope.name
        account = self._accounts.get(name)
        if account is None:
            limit = None if isinstance(scope, str) else scope.limit_usd
            return BudgetState(name, limit, _ZERO, _ZERO, _ZERO)
        return BudgetState(
            name, account.limit, account.spent, account.unconfirmed, account.reserved
        )

    def states(self) -> tuple[BudgetState, ...]:
        """Every scope seen so far, by name."""
        return tuple(self.state(name) for name in sorted(self._accounts))

    def overruns(self) -> tuple[BudgetOverrun, ...]:
        """Every scope a provider billed past its limit, in the order it happened (cheap:
        the engine asks after every agent)."""
        found = []
        for name in self._overrun:
            account = self._accounts[name]
            assert account.limit is not None
            found.append(
                BudgetOverrun(name, account.limit, account.committed(), tuple(account.overrun_by))
            )
        return tuple(found)

    def _account(self, scope: BudgetScope) -> _Account:
        account = self._accounts.get(scope.name)
        if account is None:
            account = self._accounts[scope.name] = _Account(scope.limit_usd)
        elif account.limit != scope.limit_usd:
            raise ValueError(
                f"budget scope {scope.name} has limit {account.limit}, not {scope.limit_usd}"
            )
        return account

    def _close(self, reservation: BudgetReservation) -> list[_Account]:
        if self._open.pop(reservation.id, None) is None:
            raise ValueError(f"budget reservation {reservation.id} is not open")
        return [self._accounts[name] for name in reservation.scopes]
