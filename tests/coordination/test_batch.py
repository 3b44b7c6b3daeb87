"""Script runs asked for in one turn of the event loop share one round trip to Redis, and
each still gets its own answer: one that fails does not fail the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aoe.clock import FakeClock
from aoe.coordination.budgets import RedisBudgets
from aoe.coordination.connection import (
    Connection,
    CoordinationLostError,
    CoordinationSettings,
    connect,
)
from aoe.coordination.limiter import RedisLimiter
from aoe.coordination.wake import Wakeups
from aoe.cost.budget import BudgetScope
from aoe.spec.models import LimitsSpec, SharedBudgetSpec
from tests.coordination.conftest import RedisServer

D = Decimal
SHARED = SharedBudgetSpec("team", D("100"), "none")


@pytest.fixture
async def book(conn: Connection) -> AsyncIterator[RedisBudgets]:
    wakeups = Wakeups(conn)
    budgets = RedisBudgets(
        conn, run_id="r", run_limit_usd=None, named=[SHARED], clock=FakeClock(1000.0),
        wakeups=wakeups, server_time=False,
    )  # fmt: skip
    yield budgets
    await budgets.aclose()
    await wakeups.aclose()


def team(book: RedisBudgets) -> BudgetScope:
    return book.named_scopes[0]


async def test_thirty_settles_of_one_loop_turn_are_one_round_trip(
    conn: Connection, book: RedisBudgets
) -> None:
    """30 calls that end together settle in one round trip, each to its own cost."""
    holds = await asyncio.gather(*(book.reserve((team(book),), D("1")) for _ in range(30)))
    assert len({h.id for h in holds}) == 30
    before = conn.round_trips
    await asyncio.gather(
        *(book.settle(h, D("0.25") * (i % 4), call=f"c{i}") for i, h in enumerate(holds))
    )
    assert conn.round_trips - before == 1
    (state,) = await book.refresh((team(book),))
    expected = sum((D("0.25") * (i % 4) for i in range(30)), D(0))
    assert (state.spent_usd, state.reserved_usd, state.unconfirmed_usd) == (expected, 0, 0)


async def test_a_script_that_fails_in_the_middle_of_a_batch_fails_alone(
    conn: Connection, book: RedisBudgets
) -> None:
    """The others of its round trip still run and answer; the failing one raises its own
    error to its own caller."""
    first, last = [await book.reserve((team(book),), D("2")) for _ in range(2)]
    before = conn.round_trips
    settled_first, broken, settled_last = await asyncio.gather(
        book.settle(first, D("1.5")),
        conn.run_script(book._script, ["aoe:x"], ["no-such-op", "", "aoe:wake"]),
        book.settle(last, D("0.5")),
        return_exceptions=True,
    )
    assert conn.round_trips - before == 1
    assert settled_first is None
    assert settled_last is None
    assert isinstance(broken, ResponseError)
    assert "unknown budgets op" in str(broken)
    (state,) = await book.refresh((team(book),))
    assert (state.spent_usd, state.reserved_usd) == (D("2.0"), 0)


async def test_a_batch_on_a_server_that_forgot_its_scripts_reloads_them(
    conn: Connection, book: RedisBudgets, raw_redis: aioredis.Redis
) -> None:
    """A restarted server forgets every script (NOSCRIPT did not run it): the batch loads
    the script and runs exactly those calls again, each once."""
    holds = await asyncio.gather(*(book.reserve((team(book),), D("1")) for _ in range(5)))
    await raw_redis.script_flush()
    await asyncio.gather(*(book.settle(h, D("1")) for h in holds))
    (state,) = await book.refresh((team(book),))
    assert (state.spent_usd, state.reserved_usd) == (D("5"), 0)


async def test_a_cancelled_caller_is_never_sent(conn: Connection, book: RedisBudgets) -> None:
    """A script run cancelled before its loop turn ends never reaches the server."""
    before = conn.round_trips
    task = asyncio.ensure_future(book.reserve((team(book),), D("1")))
    await asyncio.sleep(0)  # queued for the batch, not yet sent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert conn.round_trips == before
    (state,) = await book.refresh((team(book),))
    assert state.reserved_usd == 0


async def test_a_lost_server_fails_every_call_of_the_batch(own_redis: RedisServer) -> None:
    """A connection that fails under a batch fails each of its scripts with the loss, as it
    would have failed each alone: no acquire is admitted."""
    conn = await connect(CoordinationSettings(own_redis.url, "test", permit_ttl_s=30.0))
    wakeups = Wakeups(conn)
    limiter = RedisLimiter(
        conn, LimitsSpec(requests_per_minute=1000), name="p", key_id="k", lane_id="l",
        clock=FakeClock(1000.0), wakeups=wakeups, server_time=False,
    )  # fmt: skip
    try:
        await limiter.settle(await limiter.acquire(10), 10)
        own_redis.stop()
        results = await asyncio.wait_for(
            asyncio.gather(*(limiter.acquire(10) for _ in range(5)), return_exceptions=True), 30
        )
        assert all(isinstance(r, CoordinationLostError) for r in results), results
        assert conn.lost_error is not None
    finally:
        await limiter.aclose()
        await wakeups.aclose()
        await conn.aclose()
