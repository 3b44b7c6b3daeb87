"""Budgets in Redis: reserved and settled atomically across processes, exact to the
pico-dollar, with the spend of a process that died still counted."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest

from aoe.clock import FakeClock
from aoe.coordination.budgets import NAMED_PREFIX, RedisBudgets, period_label
from aoe.coordination.connection import Connection, CoordinationSettings, connect
from aoe.coordination.wake import Wakeups
from aoe.cost.budget import BudgetScope
from aoe.errors import BudgetExceededError
from aoe.spec.models import SharedBudgetSpec

Factory = Callable[..., Awaitable[RedisBudgets]]
D = Decimal
FINANCE = SharedBudgetSpec("finance-monthly", D("10"), "month")


MID_DECEMBER = 1_797_292_800.0  # 2026-12-15T00:00:00Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0, epoch_s=MID_DECEMBER)


@pytest.fixture
async def process(redis_url: str, clock: FakeClock) -> AsyncIterator[Factory]:
    """Makes a budget book as one process of one run would, on a connection of its own."""
    made: list[tuple[Connection, Wakeups, RedisBudgets]] = []

    async def make(
        run_id: str = "run1",
        run_limit: Decimal | None = None,
        named: tuple[SharedBudgetSpec, ...] = (FINANCE,),
        ttl_s: float = 30.0,
        spent: dict[str, Decimal] | None = None,
    ) -> RedisBudgets:
        conn = await connect(CoordinationSettings(redis_url, "test", permit_ttl_s=ttl_s))
        wakeups = Wakeups(conn)
        book = RedisBudgets(
            conn, run_id=run_id, run_limit_usd=run_limit, spent=spent, named=named,
            clock=clock, wakeups=wakeups, server_time=False,
        )  # fmt: skip
        made.append((conn, wakeups, book))
        await asyncio.wait_for(wakeups.ready(), 5)  # wake-ups heard from now on
        return book

    yield make
    for conn, wakeups, book in made:
        await book.aclose()
        await wakeups.aclose()
        await conn.aclose()


def named(book: RedisBudgets) -> BudgetScope:
    return next(s for s in book.named_scopes)


async def test_a_reservation_takes_every_scope_or_none(process: Factory) -> None:
    """A call that does not fit the shared budget reserves nothing in the run's budget."""
    book = await process(run_limit=D("100"))
    scopes = (book.run_scope, named(book))
    await book.settle(await book.reserve(scopes, D("9")), D("9"))
    with pytest.raises(BudgetExceededError, match="budget:finance-monthly"):
        await book.reserve(scopes, D("2"))
    run, shared = await book.refresh(scopes)
    assert (run.spent_usd, run.reserved_usd) == (D("9"), D("0"))
    assert (shared.spent_usd, shared.reserved_usd) == (D("9"), D("0"))


@pytest.mark.parametrize("seed", range(8))
async def test_concurrent_processes_never_pass_a_shared_budget(process: Factory, seed: int) -> None:
    """Four processes (runs of their own) reserve and settle random amounts on one $10
    budget at once: the spend never passes it, and it is used nearly to the end."""
    rng = random.Random(seed)
    books = [await process(run_id=f"run{i}") for i in range(4)]
    limit = FINANCE.usd

    async def spend(book: RedisBudgets) -> None:
        scope = named(book)
        while True:
            amount = D(rng.randint(1, 900_000_000_000)) / D(10**12)  # up to $0.9
            try:
                hold = await book.reserve((book.run_scope, scope), amount)
            except BudgetExceededError:
                return
            await asyncio.sleep(rng.random() / 1000)
            actual = amount * D(rng.randint(50, 100)) / D(100)
            await book.settle(hold, actual.quantize(D("1e-12")))

    await asyncio.wait_for(asyncio.gather(*(spend(b) for b in books)), 20)
    (state,) = await books[0].refresh((named(books[0]),))
    assert state.reserved_usd == 0
    assert state.unconfirmed_usd == 0
    assert state.spent_usd <= limit
    assert state.spent_usd > limit - D("0.9")  # refused only when the next could not fit


async def test_a_killed_process_reservation_becomes_unconfirmed_spend_at_its_expiry(
    process: Factory, clock: FakeClock
) -> None:
    """A process that dies mid-call stops renewing its reservation; at its expiry it turns
    into unconfirmed spend (its call may have been billed) and still counts for everyone."""
    dead = await process(run_id="dead", ttl_s=6.0)
    alive = await process(run_id="alive", ttl_s=6.0)
    await dead.reserve((dead.run_scope, named(dead)), D("4"))
    await dead.aclose()  # no settle, no more renewals
    await clock.advance(6.5)
    await alive.reserve((alive.run_scope, named(alive)), D("1"))
    (state,) = await alive.refresh((named(alive),))
    assert (state.unconfirmed_usd, state.reserved_usd) == (D("4"), D("1"))
    with pytest.raises(BudgetExceededError, match=r"unconfirmed \$4\.0000"):
        await alive.reserve((named(alive),), D("6.5"))


async def test_a_live_process_keeps_its_reservation_past_the_expiry(
    process: Factory, clock: FakeClock
) -> None:
    """A reservation renewed while its call runs is not swept, however long the call."""
    book = await process(ttl_s=3.0)
    hold = await book.reserve((named(book),), D("2"))
    for _ in range(6):
        await clock.advance(1.0)
        await asyncio.sleep(0.02)
    (state,) = await book.refresh((named(book),))
    assert (state.reserved_usd, state.unconfirmed_usd) == (D("2"), D("0"))
    await book.settle(hold, D("1.5"))
    (state,) = await book.refresh((named(book),))
    assert (state.spent_usd, state.reserved_usd) == (D("1.5"), D("0"))


async def test_money_is_exact_past_what_a_double_holds(process: Factory) -> None:
    """Pico-dollars add exactly beyond 2**53 (about $9,007): Redis holds no float money."""
    big = SharedBudgetSpec("big", D("1000000"), "none")
    book = await process(named=(big,))
    scope = named(book)
    for amount in (D("12345.678901234567"), D("0.000000000001"), D("9007.199254740993")):
        await book.settle(await book.reserve((scope,), amount), amount)
    (state,) = await book.refresh((scope,))
    assert state.spent_usd == D("21352.878155975561")


async def test_a_reservation_blocked_by_open_ones_waits_for_another_process(
    process: Factory,
) -> None:
    """A call that fits once others' worst cases settle waits for them (any process)."""
    one = await process(run_id="one")
    two = await process(run_id="two")
    hold = await one.reserve((named(one),), D("8"))
    waiting = asyncio.create_task(two.reserve((named(two),), D("5")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await one.settle(hold, D("2"))
    await asyncio.wait_for(waiting, 5)


async def test_an_overrun_closes_the_shared_budget_for_every_process(process: Factory) -> None:
    """A provider billing past a reservation and the limit closes the scope everywhere."""
    one = await process(run_id="one")
    two = await process(run_id="two")
    hold = await one.reserve((named(one),), D("9"))
    await one.settle(hold, D("11"), call="extract#1")
    (overrun,) = one.overruns()
    assert (overrun.scope, overrun.over_usd, overrun.calls) == (
        "budget:finance-monthly",
        D("1"),
        ("extract#1",),
    )
    with pytest.raises(BudgetExceededError, match="closed"):
        await two.reserve((named(two),), D("0.01"))


async def test_a_resumed_run_is_seeded_from_the_ledger_only_once(process: Factory) -> None:
    """A run's scope missing from Redis starts at what the ledger says it spent; present,
    it is not counted again."""
    first = await process(run_id="r", run_limit=D("5"), spent={"run": D("3")})
    await first.settle(await first.reserve((first.run_scope,), D("1")), D("1"))
    again = await process(run_id="r", run_limit=D("5"), spent={"run": D("4")})
    (state,) = await again.refresh((again.run_scope,))
    assert state.spent_usd == D("4")
    with pytest.raises(BudgetExceededError):
        await again.reserve((again.run_scope,), D("1.5"))


def test_periods_follow_utc_calendar() -> None:
    """A shared budget starts again each UTC day, ISO week, month or year."""
    at = 1_798_761_599.0  # 2026-12-31T23:59:59Z
    assert period_label("day", at) == "2026-12-31"
    assert period_label("week", at) == "2026-W53"
    assert period_label("month", at) == "2026-12"
    assert period_label("year", at) == "2026"
    assert period_label("month", at + 1) == "2027-01"
    assert period_label("none", at) == "all"
    assert NAMED_PREFIX == "budget:"
