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

All methods are synchronous and never await: on one event loop, each runs to completion
before another task can run, so check-then-commit needs no lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from aoe.cost.money import ZERO as _ZERO
from aoe.cost.money import format_usd
from aoe.errors import BudgetExceededError

__all__ = ["BudgetReservation", "BudgetScope", "BudgetState", "Budgets"]



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


class _Account:
    __slots__ = ("limit", "reserved", "spent", "unconfirmed")

    def __init__(self, limit: Decimal | None) -> None:
        self.limit = limit
        self.spent = _ZERO
        self.unconfirmed = _ZERO
        self.reserved = _ZERO

    def committed(self) -> Decimal:
        return self.spent + self.unconfirmed + self.reserved


class Budgets:
    """Every budget scope of one process, and the reservations held against them."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._open: dict[int, BudgetReservation] = {}
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
        self, reservation: BudgetReservation, actual_usd: Decimal, *, confirmed: bool = True
    ) -> None:
        """Replace the reservation with the call's cost.

        ``confirmed=False`` records spend the provider may or may not have billed (outcome
        unknown); pass the full reserved amount, see ``settle_unknown``.
        """
        if actual_usd < 0:
            raise ValueError(f"a cost cannot be negative: {actual_usd}")
        for account in self._close(reservation):
            account.reserved -= reservation.amount_usd
            if confirmed:
                account.spent += actual_usd
            else:
                account.unconfirmed += actual_usd

    def settle_unknown(self, reservation: BudgetReservation) -> None:
        """A call that may have been billed: keep its whole reservation, as unconfirmed."""
        self.settle(reservation, reservation.amount_usd, confirmed=False)

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

    def fits(self, scopes: Iterable[BudgetScope], amount_usd: Decimal) -> bool:
        """Whether ``reserve`` would succeed now (for planning; reserve is what guarantees)."""
        for scope in scopes:
            state = self.state(scope)
            remaining = state.remaining_usd
            if remaining is not None and amount_usd > remaining:
                return False
        return True

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
