"""Budgets that span processes and runs: ``aoe.cost.book.RunBudgets`` kept in Redis.

The scopes and their rules are the in-memory book's (``aoe.cost.budget``): a call reserves
its worst-case cost against every scope at once or against none, settles to its true cost
(confirmed, or unconfirmed when its outcome is unknown), and a scope a provider billed
past is closed. In Redis they hold for every process at once:

- ``run`` (``--budget``) and the run's workflow and agent scopes are named by the run id,
  so a run resumed by another process (or machine) finds what it already spent. A scope
  Redis does not have yet is seeded with what the ledger says was spent (a flushed Redis
  forgets nothing the ledger knows).
- **Named shared budgets** (``budgets:`` in aoe.yaml, e.g. ``finance-monthly: {usd: 500,
  period: month}``) are scopes of every call of every run that names them, in every
  process, per period (UTC, on the Redis server's clock): the month's key is
  ``...:finance-monthly:2026-12``.
- A reservation is held with an expiry ``permit_ttl_s`` ahead, renewed while its call runs.
  A process killed mid-call stops renewing; at its expiry the next script run by anyone
  turns the reservation into **unconfirmed spend** (its call may have been billed): it
  stays counted, as the ledger counts a call in flight at a crash.
- Money is integer pico-dollars in Redis (``aoe.cost.money.to_pusd``), added and compared
  exactly in ``lua/budgets.lua``; ``Decimal`` on this side.

One script run per ``reserve``, ``settle`` and ``release``; a reservation blocked only by
other calls' open reservations waits for a wake message (any process's settle) or
``WAKE_POLL_S``, as the in-memory book waits for its own settles.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from redis.exceptions import RedisError

from aoe.clock import Clock
from aoe.coordination.connection import KEY_PREFIX, Connection, CoordinationLostError
from aoe.coordination.limiter import WAKE_POLL_S
from aoe.coordination.scripts import lua_source
from aoe.coordination.wake import Wakeups
from aoe.cost.book import RUN_SCOPE
from aoe.cost.budget import BudgetOverrun, BudgetReservation, BudgetScope, BudgetState
from aoe.cost.money import ZERO, format_usd, from_pusd, to_pusd
from aoe.errors import BudgetExceededError, ConfigError
from aoe.spec.models import AgentSpec, SharedBudgetSpec, WorkflowSpec

__all__ = ["NAMED_PREFIX", "RedisBudgets", "period_label"]

#: How a named shared budget's scope is called in states, errors and reports.
NAMED_PREFIX: Final = "budget:"

_BASE = f"{KEY_PREFIX}:{{budgets}}"  # one hash tag: a reservation spans many scopes


def period_label(period: str, epoch_s: float) -> str:
    """The period ``epoch_s`` falls in (UTC): ``2026-12-08``, ``2026-W50``, ``2026-12``,
    ``2026``, or ``all`` for a budget that never starts again."""
    when = datetime.fromtimestamp(epoch_s, UTC)
    if period == "day":
        return when.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return when.strftime("%Y-%m")
    if period == "year":
        return when.strftime("%Y")
    return "all"


class RedisBudgets:
    """``aoe.services.BudgetBook`` for a run whose budgets live in Redis (see the module)."""

    def __init__(
        self,
        conn: Connection,
        *,
        run_id: str,
        run_limit_usd: Decimal | None,
        spent: Mapping[str, Decimal] | None = None,
        named: Sequence[SharedBudgetSpec] = (),
        declared: Mapping[str, SharedBudgetSpec] | None = None,
        clock: Clock,
        wakeups: Wakeups,
        server_time: bool = True,
    ) -> None:
        """``spent``: what the ledger says each scope spent before (``--resume``), keyed as
        ``RunBudgets`` keys it. ``named``: the shared budgets every call of the run draws on.
        ``declared``: every shared budget of aoe.yaml, for workflows that name theirs
        (``budgets:`` in the workflow file). ``server_time`` False stamps expiries with
        ``clock`` (tests)."""
        self._conn = conn
        self._run_id = run_id
        self._spent = dict(spent or {})
        self._clock = clock
        self._server_time = server_time
        self._ttl = conn.settings.permit_ttl_s
        self._script = conn.client.register_script(lua_source("budgets"))
        self._channel = f"{_BASE}:wake"
        self._wake = asyncio.Event()
        self._wakeups = wakeups
        wakeups.subscribe(self._channel, self._wake.set)
        self.run_scope = BudgetScope(RUN_SCOPE, run_limit_usd)
        self._named = tuple(BudgetScope(NAMED_PREFIX + b.name, b.usd) for b in named)
        self._declared = dict(declared or {})
        self._periods = {
            NAMED_PREFIX + b.name: b.period for b in (*named, *self._declared.values())
        }
        self._preload_keys = {RUN_SCOPE: RUN_SCOPE}
        self._states: dict[str, BudgetState] = {}
        self._overrun_calls: dict[str, tuple[str, ...]] = {}
        self._overrun_order: list[str] = []
        self._open: dict[int, BudgetReservation] = {}
        self._keys: dict[int, list[str]] = {}
        self._renew_task: asyncio.Task[None] | None = None

    # -- naming scopes -------------------------------------------------------------------------

    def scopes_for_workflow(self, key: str, spec: WorkflowSpec) -> tuple[BudgetScope, ...]:
        """The run's scope, this workflow instance's own, every named shared budget of the
        run, and those the workflow names (``budgets:``; once each)."""
        name = f"workflow:{key}"
        self._preload_keys[name] = key
        own = []
        for budget in spec.budgets:
            shared = self._declared.get(budget)
            if shared is None:  # prepare refused it already; a spec built in code
                raise ConfigError(
                    f"workflow {spec.name} names shared budget {budget!r}, which aoe.yaml "
                    "does not declare",
                    hint=f"add `budgets: {{{budget}: {{usd: ..., period: month}}}}` to aoe.yaml",
                )
            scope = BudgetScope(NAMED_PREFIX + budget, shared.usd)
            if scope not in self._named:
                own.append(scope)
        return (self.run_scope, BudgetScope(name, spec.budget_usd), *self._named, *own)

    def scope_for_agent(self, key: str, agent: AgentSpec) -> BudgetScope:
        name = f"agent:{key}/{agent.id}"
        self._preload_keys[name] = f"{key}/{agent.id}"
        return BudgetScope(name, agent.cost_limit_usd)

    def _key(self, scope: str) -> str:
        period = self._periods.get(scope)
        if period is not None:
            wall = self._clock.wall()
            label = period_label(
                period, self._conn.server_wall(wall) if self._server_time else wall
            )
            return f"{_BASE}:named:{scope.removeprefix(NAMED_PREFIX)}:{label}"
        return f"{_BASE}:run:{self._run_id}:{scope}"

    @property
    def named_scopes(self) -> tuple[BudgetScope, ...]:
        """The shared budgets every call of this run reserves against."""
        return self._named

    # -- the protocol ----------------------------------------------------------------------------

    async def reserve(
        self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal
    ) -> BudgetReservation:
        """Commit ``amount_usd`` to every scope, in Redis, or raise ``BudgetExceededError``.

        Waits while only other calls' open reservations stand in the way.
        """
        if amount_usd < 0:
            raise ValueError(f"a reservation cannot be negative: {amount_usd}")
        scopes = tuple({scope.name: scope for scope in scopes}.values())
        keys = [self._key(scope.name) for scope in scopes]
        args = [repr(self._ttl), str(to_pusd(amount_usd))]
        for scope in scopes:
            limit = "" if scope.limit_usd is None else str(to_pusd(scope.limit_usd))
            before = self._spent.get(self._preload_keys.get(scope.name, ""), ZERO)
            args += [limit, str(to_pusd(before))]
        while True:
            self._wake.clear()
            head = await self._run("reserve", keys, scopes, args)
            if head[0] == "ok":
                reservation = BudgetReservation(
                    int(head[1]), tuple(s.name for s in scopes), amount_usd
                )
                self._open[reservation.id] = reservation
                self._keys[reservation.id] = keys
                self._start_renewing()
                return reservation
            scope = scopes[int(head[1]) - 1]
            if head[0] == "closed":
                raise BudgetExceededError(
                    f"budget {scope.name} is closed: the provider billed past it",
                    where=scope.name,
                    hint="raise the budget, or check how the provider counts tokens",
                )
            if head[0] == "refused":
                raise self._refused(scope, amount_usd)
            await self._sleep(WAKE_POLL_S)  # "wait": open reservations may settle lower

    async def settle(
        self,
        reservation: BudgetReservation,
        actual_usd: Decimal,
        *,
        confirmed: bool = True,
        call: str = "",
    ) -> None:
        """Replace the reservation with the call's cost in every scope (see the module)."""
        if actual_usd < 0:
            raise ValueError(f"a cost cannot be negative: {actual_usd}")
        keys = self._close(reservation)
        await self._quiet(
            "settle",
            keys,
            reservation,
            [
                str(reservation.id),
                str(to_pusd(reservation.amount_usd)),
                str(to_pusd(actual_usd)),
                "1" if confirmed else "0",
                call or f"reservation {reservation.id}",
            ],
        )

    async def release(self, reservation: BudgetReservation) -> None:
        """Give a reservation back whole: the call never went out."""
        keys = self._close(reservation)
        await self._quiet(
            "release",
            keys,
            reservation,
            [str(reservation.id), str(to_pusd(reservation.amount_usd)), "0", "1", ""],
        )

    def states(self) -> tuple[BudgetState, ...]:
        """Every scope seen, as of this process's last round trip, by name."""
        return tuple(self._states[name] for name in sorted(self._states))

    def state(self, name: str) -> BudgetState:
        return self._states.get(name) or BudgetState(name, None, ZERO, ZERO, ZERO)

    def overruns(self) -> tuple[BudgetOverrun, ...]:
        found = []
        for name in self._overrun_order:
            state = self._states[name]
            assert state.limit_usd is not None
            found.append(
                BudgetOverrun(name, state.limit_usd, state.committed_usd, self._overrun_calls[name])
            )
        return tuple(found)

    async def refresh(self, scopes: Sequence[BudgetScope]) -> tuple[BudgetState, ...]:
        """Read ``scopes`` from Redis now (one round trip)."""
        keys = [self._key(scope.name) for scope in scopes]
        await self._run("read", keys, tuple(scopes), [])
        return tuple(self.state(scope.name) for scope in scopes)

    async def aclose(self) -> None:
        task = self._renew_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wakeups.unsubscribe(self._channel, self._wake.set)

    # -- internals ---------------------------------------------------------------------------------

    async def _run(
        self,
        op: str,
        keys: list[str],
        scopes: Sequence[BudgetScope] | BudgetReservation,
        args: list[str],
    ) -> tuple[str, ...]:
        if self._conn.lost_error is not None:
            raise self._conn.lost_error
        now = "" if self._server_time else repr(self._clock.now())
        try:
            raw: Sequence[bytes] = await self._conn.run_script(
                self._script,
                [f"{_BASE}:open", f"{_BASE}:records", f"{_BASE}:ids", *keys],
                [op, now, self._channel, *args],
            )
        except (RedisError, OSError) as exc:
            raise self._conn.lost(exc, f"{op} on the budgets of run {self._run_id}") from exc
        reply = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
        size = len(reply) - 5 * len(keys)
        names = scopes.scopes if isinstance(scopes, BudgetReservation) else [s.name for s in scopes]
        for i, name in enumerate(names):
            limit, spent, unconfirmed, reserved, calls = reply[size + 5 * i : size + 5 * i + 5]
            self._states[name] = BudgetState(
                name,
                from_pusd(int(limit)) if limit else None,
                from_pusd(int(spent)),
                from_pusd(int(unconfirmed)),
                from_pusd(int(reserved)),
            )
            if calls:
                if name not in self._overrun_calls:
                    self._overrun_order.append(name)
                self._overrun_calls[name] = tuple(calls.split("\x1f"))
        return reply[:size]

    async def _quiet(
        self, op: str, keys: list[str], reservation: BudgetReservation, args: list[str]
    ) -> None:
        """After the call: a lost server was reported, the run goes on to record the call;
        the reservation expires into unconfirmed spend on the server by itself."""
        with contextlib.suppress(CoordinationLostError):
            await self._run(op, keys, reservation, args)

    def _close(self, reservation: BudgetReservation) -> list[str]:
        if self._open.pop(reservation.id, None) is None:
            raise ValueError(f"budget reservation {reservation.id} is not open")
        return self._keys.pop(reservation.id)

    def _refused(self, scope: BudgetScope, amount_usd: Decimal) -> BudgetExceededError:
        state = self.state(scope.name)
        limit = state.limit_usd if state.limit_usd is not None else ZERO
        left = max(ZERO, limit - state.committed_usd)
        named = scope.name.startswith(NAMED_PREFIX)
        shared = " (shared by every process through Redis)" if named else ""
        return BudgetExceededError(
            f"budget {scope.name}{shared} ({format_usd(limit)}) cannot take "
            f"{format_usd(amount_usd)} more: {format_usd(left)} left (spent "
            f"{format_usd(state.spent_usd)}, unconfirmed {format_usd(state.unconfirmed_usd)}, "
            f"reserved {format_usd(state.reserved_usd)})",
            where=scope.name,
            hint="raise the budget (--budget, budget_usd, cost_limit_usd or budgets: in "
            "aoe.yaml) or lower max_tokens",
        )

    def _start_renewing(self) -> None:
        if self._renew_task is None or self._renew_task.done():
            self._renew_task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self._open:
            await self._clock.sleep(self._ttl / 3)
            if self._open:
                try:
                    await self._run("renew", [], (), [repr(self._ttl), *map(str, self._open)])
                except CoordinationLostError:
                    return

    async def _sleep(self, seconds: float) -> None:
        alarm = asyncio.ensure_future(self._clock.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((alarm, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (alarm, woken):
                if not task.done():
                    task.cancel()
