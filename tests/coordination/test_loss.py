"""Redis restarted or lost while processes use it."""

from __future__ import annotations

import asyncio

import pytest

from aoe.clock import FakeClock
from aoe.coordination.connection import (
    CoordinationLostError,
    CoordinationSettings,
    connect,
)
from aoe.coordination.limiter import RedisLimiter
from aoe.coordination.wake import Wakeups
from aoe.spec.models import LimitsSpec
from tests.coordination.conftest import RedisServer


async def test_a_redis_restart_is_ridden_through(own_redis: RedisServer) -> None:
    """A restart between two calls costs nothing: the client reconnects, the script is
    loaded again, and the limiter keeps granting."""
    conn = await connect(CoordinationSettings(own_redis.url, "test"))
    wakeups = Wakeups(conn)
    limiter = RedisLimiter(
        conn, LimitsSpec(requests_per_minute=10, concurrent_requests=2), name="openai",
        key_id="k", lane_id="l", clock=FakeClock(), wakeups=wakeups, server_time=False,
    )  # fmt: skip
    try:
        await limiter.settle(await limiter.acquire(5), 5)
        await asyncio.to_thread(own_redis.restart)
        permit = await limiter.acquire(5)
        assert permit.tokens == 5
        assert conn.lost_error is None
        await limiter.settle(permit, 5)
    finally:
        await limiter.aclose()
        await wakeups.aclose()
        await conn.aclose()


async def test_losing_redis_stops_admitting_calls_but_lets_running_ones_end(
    own_redis: RedisServer,
) -> None:
    """With Redis gone, acquire raises CoordinationLostError (exit 5) and the run is told
    once; a call already running still settles without an error, so it is recorded."""
    conn = await connect(CoordinationSettings(own_redis.url, "test"))
    told: list[CoordinationLostError] = []
    conn.on_lost(told.append)
    wakeups = Wakeups(conn)
    limiter = RedisLimiter(
        conn, LimitsSpec(requests_per_minute=10), name="openai",
        key_id="k", lane_id="l", clock=FakeClock(), wakeups=wakeups, server_time=False,
    )  # fmt: skip
    try:
        running = await limiter.acquire(5)
        await asyncio.to_thread(own_redis.stop)
        with pytest.raises(CoordinationLostError) as caught:
            await limiter.acquire(5)
        assert caught.value.exit_code == 5
        assert "lost Redis at redis://127.0.0.1" in caught.value.message
        await limiter.settle(running, 5)  # no error: the call is recorded by the engine
        with pytest.raises(CoordinationLostError):
            await limiter.acquire(5)
        assert told == [caught.value]
    finally:
        await limiter.aclose()
        await wakeups.aclose()
        await conn.aclose()
