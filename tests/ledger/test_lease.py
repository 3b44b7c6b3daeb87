"""The run lease: one process runs a run; a dead holder's lease is taken over, by one taker."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from aoe.clock import FakeClock
from aoe.errors import RunLeaseHeldError, RunLeaseLostError
from aoe.ledger import Ledger
from aoe.ledger.lease import HEARTBEAT_S, MISSED_HEARTBEATS
from aoe.ledger.store import Target
from ledger.factory import call, call_start, run_start

HEARTBEAT = 2.0
WINDOW = MISSED_HEARTBEATS * HEARTBEAT


@pytest.fixture
async def ledgers(db: Target) -> AsyncIterator[tuple[Ledger, Ledger]]:
    """Two processes' views of one ledger (a file, or a PostgreSQL database): two
    connections, two writer threads."""
    first, second = Ledger.open(db), Ledger.open(db)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_a_live_holder_keeps_the_run(ledgers: tuple[Ledger, Ledger]) -> None:
    """While the holder renews its heartbeat, another process is refused at once with an
    exit-2 error that names the holder's pid, host and since when, and a hint."""
    clock = FakeClock()
    a, b = ledgers
    holder = a.run_lease(heartbeat_s=HEARTBEAT, clock=clock)
    await holder.acquire("run-1")
    for _ in range(5):  # ten seconds of heartbeats, more than the window
        await clock.advance(HEARTBEAT)
        await holder.renew()
    with pytest.raises(RunLeaseHeldError) as refused:
        await b.run_lease(heartbeat_s=HEARTBEAT, clock=clock).acquire("run-1")
    err = refused.value
    assert err.exit_code == 2
    assert f"pid {os.getpid()} on {socket.gethostname()} since 2026-01-01T00:00:00" in err.message
    assert "aoe run --resume run-1" in (err.hint or "")
    assert f"expires {WINDOW:g} s after its last heartbeat" in (err.hint or "")
    held = b.lease_holder("run-1")
    assert held is not None
    assert (held.pid, held.stale_after_s) == (os.getpid(), WINDOW)


async def test_a_holder_that_stopped_beating_is_taken_over(
    ledgers: tuple[Ledger, Ledger],
) -> None:
    """Within the window (three missed heartbeats) the run stays its holder's; past it, the
    next process takes the run over, and the old holder can neither renew nor record."""
    clock = FakeClock()
    a, b = ledgers
    old = a.run_lease(heartbeat_s=HEARTBEAT, clock=clock)
    await old.acquire("run-1")
    await a.start_run(run_start())  # the old holder writes, fenced by its lease
    await clock.advance(WINDOW)
    with pytest.raises(RunLeaseHeldError):
        await b.run_lease(heartbeat_s=HEARTBEAT, clock=clock).acquire("run-1")
    await clock.advance(0.01)
    new = b.run_lease(heartbeat_s=HEARTBEAT, clock=clock)
    await new.acquire("run-1")
    with pytest.raises(RunLeaseLostError) as lost:
        await old.renew()
    assert f"pid {os.getpid()}" in lost.value.message
    await a.record_call(call())  # queued: fenced out when its batch is committed
    with pytest.raises(RunLeaseLostError):
        await a.flush()
    with pytest.raises(RunLeaseLostError):  # and the old holder can write nothing more
        await a.start_call(call_start())
    assert b.get_run("run-1").workflows == ()
    assert b.cost_report("agent", run_id="run-1").total.calls == 0
    await old.release()  # does not give away what is no longer its own
    holder = b.lease_holder("run-1")
    assert holder is not None
    assert holder.token == (new.holder.token if new.holder else "")


async def test_a_released_lease_is_free_at_once(ledgers: tuple[Ledger, Ledger]) -> None:
    """A run that ended (any way but SIGKILL) releases its lease: a resume needs no wait."""
    clock = FakeClock()
    a, b = ledgers
    lease = a.run_lease(clock=clock)
    assert lease.heartbeat_s == HEARTBEAT_S
    await lease.acquire("run-1")
    await lease.release()
    assert b.lease_holder("run-1") is None
    await b.run_lease(clock=clock).acquire("run-1")


async def test_a_lease_taken_before_the_run_is_adopted_by_it(
    ledgers: tuple[Ledger, Ledger],
) -> None:
    """--resume takes the lease before it reads what to resume; its run then holds that
    same lease (no one can slip in between), and others are still refused."""
    clock = FakeClock()
    a, b = ledgers
    taken = a.take_lease_now("run-1", heartbeat_s=HEARTBEAT, clock=clock)
    with pytest.raises(RunLeaseHeldError):
        b.take_lease_now("run-1", heartbeat_s=HEARTBEAT, clock=clock)
    await clock.advance(HEARTBEAT)
    run = a.run_lease(heartbeat_s=HEARTBEAT, clock=clock, holder=taken)
    await run.acquire("run-1")
    held = b.lease_holder("run-1")
    assert held is not None
    assert (held.token, held.since, held.heartbeat_at) == (
        taken.token,
        taken.since,
        taken.since + HEARTBEAT,
    )
    with pytest.raises(RunLeaseHeldError):
        await b.run_lease(heartbeat_s=HEARTBEAT, clock=clock).acquire("run-1")


async def test_two_takers_of_a_stale_lease_never_both_win(db: Target) -> None:
    """Of processes that find the same dead holder's lease at the same moment, exactly one
    takes the run over; the others are told who has it now (PostgreSQL: row locks)."""
    clock = FakeClock()
    path = db
    for trial in range(20):
        run_id = f"run-{trial}"
        async with Ledger.open(path) as dead:  # takes the lease, then is never heard of again
            await dead.run_lease(heartbeat_s=HEARTBEAT, clock=clock).acquire(run_id)
        await clock.advance(WINDOW + 1)
        takers = [Ledger.open(path) for _ in range(4)]
        try:
            results = await asyncio.gather(
                *(t.run_lease(heartbeat_s=HEARTBEAT, clock=clock).acquire(run_id) for t in takers),
                return_exceptions=True,
            )
        finally:
            for t in takers:
                await t.aclose()
        assert results.count(None) == 1, results
        assert all(isinstance(r, RunLeaseHeldError) for r in results if r is not None)
