"""A run's lease in Redis: one process on any machine runs a run, judged on Redis's clock."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aoe.clock import FakeClock
from aoe.coordination.connection import Connection, CoordinationSettings, connect
from aoe.coordination.lease import FleetLease, RedisRunLease
from aoe.errors import RunLeaseHeldError, RunLeaseLostError
from aoe.services import NoLease

Factory = Callable[..., Awaitable[RedisRunLease]]


@pytest.fixture
async def process(redis_url: str) -> AsyncIterator[Factory]:
    """Makes a lease as one process (a connection of its own) would."""
    conns: list[Connection] = []

    async def make(clock: FakeClock | None = None, heartbeat_s: float = 5.0) -> RedisRunLease:
        conn = await connect(CoordinationSettings(redis_url, "test"))
        conns.append(conn)
        if clock is None:  # this host's clock, heartbeats stamped by Redis TIME
            return RedisRunLease(conn, heartbeat_s=heartbeat_s, clock=FakeClock())
        return RedisRunLease(conn, heartbeat_s=heartbeat_s, clock=clock, server_time=False)

    yield make
    for conn in conns:
        await conn.aclose()


async def test_a_second_process_is_refused_naming_the_holder(process: Factory) -> None:
    """While the holder's heartbeat is fresh, another process is refused (exit 2) with the
    holder's pid and host, and takes the lease once it is released."""
    one, two = await process(), await process()
    await one.acquire("run-a")
    with pytest.raises(RunLeaseHeldError) as caught:
        await two.acquire("run-a")
    assert caught.value.exit_code == 2
    assert f"pid {os.getpid()} on {socket.gethostname()}" in caught.value.message
    await two.acquire("run-b")  # another run is free
    await one.release()
    await two.acquire("run-a")


async def test_a_lease_three_heartbeats_stale_is_taken_over_and_the_old_holder_stops(
    process: Factory,
) -> None:
    """A holder that missed three heartbeats loses the lease to the next asker; its next
    renewal says so (RunLeaseLostError), naming who holds it now."""
    clock = FakeClock(epoch_s=1_797_292_800.0)
    one = await process(clock)
    two = await process(clock)
    await one.acquire("run-a")
    await clock.advance(14.0)
    with pytest.raises(RunLeaseHeldError, match=r"14\.0 s ago") as caught:
        await two.acquire("run-a")
    assert "in 1.0 s" in (caught.value.hint or "")
    await one.renew()  # a late heartbeat still counts
    await clock.advance(15.5)
    await two.acquire("run-a")
    with pytest.raises(RunLeaseLostError, match=f"pid {os.getpid()}"):
        await one.renew()
    await one.release()  # leaves the new holder's lease alone
    with pytest.raises(RunLeaseHeldError):
        await (await process(clock)).acquire("run-a")


async def test_staleness_is_judged_on_the_servers_clock_not_the_hosts(process: Factory) -> None:
    """Two hosts whose clocks are an hour apart agree on a fresh lease: heartbeats are
    stamped with Redis TIME, so the skewed host is refused, not handed a live run."""
    ahead = FakeClock(epoch_s=1_797_292_800.0 + 3600.0)
    one = await process()  # this host's clock, stamped by the server
    await one.acquire("run-a")
    skewed = RedisRunLease(one._conn, heartbeat_s=5.0, clock=ahead)  # server time
    with pytest.raises(RunLeaseHeldError):
        await skewed.acquire("run-a")


async def test_the_fleet_lease_holds_redis_and_the_ledger_together(process: Factory) -> None:
    """The run's Redis lease and its ledger lease are taken and released together; the
    ledger's failing gives the Redis lease back."""

    class Refusing(NoLease):
        async def acquire(self, run_id: str) -> None:
            raise RunLeaseHeldError("held in the ledger")

    one = await process()
    with pytest.raises(RunLeaseHeldError, match="ledger"):
        await FleetLease(one, Refusing()).acquire("run-a")
    two = await process()
    both = FleetLease(two, NoLease())
    await both.acquire("run-a")  # the first gave its Redis lease back
    await both.renew()
    await both.release()
    await one.acquire("run-a")
