"""The Redis limiter: the in-memory limiter's semantics, shared by every process on a key.

Each "process" here is a ``RedisLimiter`` on a connection of its own to one real
redis-server; one fake clock stamps both (``server_time=False``), so windows and pauses
move when the test says. The subprocess tests are in ``test_fleet.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from aoe.clock import FakeClock
from aoe.coordination.connection import Connection, CoordinationSettings, connect
from aoe.coordination.limiter import RedisLimiter, RedisLimiters
from aoe.coordination.wake import Wakeups
from aoe.errors import ConfigError, RateLimitClosedError, RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.spec.models import Config, LimitsSpec, ProviderConfig

Factory = Callable[..., Awaitable[RedisLimiter]]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Wait for real I/O (a Redis round trip, a wake message) to make ``check`` true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def used(limiter: RedisLimiter) -> dict[str, int]:
    return {t.name: t.used for t in limiter.stats().tiers}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
async def process(redis_url: str, clock: FakeClock) -> AsyncIterator[Factory]:
    """Makes a limiter as one process would: its own connection, wake-ups and limiter."""
    made: list[tuple[Connection, Wakeups, RedisLimiter]] = []

    async def make(ttl_s: float = 30.0, **limits: int) -> RedisLimiter:
        conn = await connect(CoordinationSettings(redis_url, "test", permit_ttl_s=ttl_s))
        wakeups = Wakeups(conn)
        limiter = RedisLimiter(
            conn, LimitsSpec(**limits), name="openai", key_id="key", lane_id="lane",
            clock=clock, wakeups=wakeups, permit_ttl_s=ttl_s, window_margin_s=0,
            server_time=False,
        )  # fmt: skip
        made.append((conn, wakeups, limiter))
        await asyncio.wait_for(wakeups.ready(), 5)  # wake-ups heard from now on
        return limiter

    yield make
    for conn, wakeups, limiter in made:
        await limiter.aclose()
        await wakeups.aclose()
        await conn.aclose()


async def test_all_tiers_or_none_a_token_shortage_takes_no_request(process: Factory) -> None:
    """The script takes from every tier or from none: a call short of tokens leaves the
    request tiers untouched while it waits, in Redis itself."""
    limiter = await process(requests_per_minute=10, tokens_per_minute=1000)
    first = await limiter.acquire(900)
    with pytest.raises(RateLimitTimeoutError):
        await limiter.acquire(200, timeout_s=0)
    assert used(limiter) == {"requests_per_minute": 1, "tokens_per_minute": 900}
    waiting = asyncio.create_task(limiter.acquire(200))
    await until(lambda: limiter.stats().queued == 1, "the waiter")
    assert used(limiter) == {"requests_per_minute": 1, "tokens_per_minute": 900}
    await limiter.settle(first, 700)  # the refund makes room
    second = await asyncio.wait_for(waiting, 5)
    assert second.tokens == 200
    assert used(limiter) == {"requests_per_minute": 2, "tokens_per_minute": 900}


async def test_two_processes_never_pass_a_window_together(
    process: Factory, clock: FakeClock
) -> None:
    """Two processes on one key share its per-minute window: together they never take more
    than the limit in a minute, and the next grant comes when the first leaves it."""
    one = await process(requests_per_minute=3)
    two = await process(requests_per_minute=3)
    await one.acquire(0)  # at 0 s
    await clock.advance(10.0)
    await two.acquire(0)  # at 10 s
    await clock.advance(10.0)
    await one.acquire(0)  # at 20 s
    late = asyncio.create_task(two.acquire(0))
    await until(lambda: two.stats().queued == 1, "the fourth call to wait")
    await clock.advance(39.0)
    await asyncio.sleep(0.05)
    assert not late.done()
    await clock.advance(1.5)  # the first grant leaves the window
    granted = await asyncio.wait_for(late, 5)
    assert granted.granted_at == clock.now()
    assert used(two)["requests_per_minute"] == 3


async def test_concurrency_is_shared_and_a_settle_elsewhere_wakes_the_waiter(
    process: Factory,
) -> None:
    """Two processes share concurrent_requests; a slot freed in one wakes a waiter in the
    other through pub/sub, without waiting out the poll."""
    one = await process(concurrent_requests=2)
    two = await process(concurrent_requests=2)
    held = [await one.acquire(10), await two.acquire(10)]
    waiting = asyncio.create_task(two.acquire(10))
    await until(lambda: two.stats().queued == 1, "the third call to wait")
    started = time.monotonic()
    await one.settle(held[0], 10)
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 0.5  # woken, not polled (the poll is 1 s)
    assert two.stats().in_flight == 2


async def test_higher_priority_waiters_go_first_within_a_process(process: Factory) -> None:
    """Within a process, waiters are served by priority, then arrival."""
    limiter = await process(concurrent_requests=1)
    held = await limiter.acquire(1)
    order: list[str] = []

    async def call(name: str, priority: int) -> None:
        permit = await limiter.acquire(1, priority=priority)
        order.append(name)
        await limiter.settle(permit, 1)

    tasks = [asyncio.create_task(call("low", 1))]
    await until(lambda: limiter.stats().queued == 1, "low to queue")
    tasks.append(asyncio.create_task(call("high", 9)))
    tasks.append(asyncio.create_task(call("mid", 5)))
    await until(lambda: limiter.stats().queued == 3, "all three to queue")
    await limiter.release(held)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["high", "mid", "low"]


async def test_a_permit_of_a_process_that_stopped_comes_back_at_its_expiry(
    process: Factory, clock: FakeClock
) -> None:
    """A process that dies holding the only slot stops renewing it; the slot comes back to
    the others when its permit expires, while its window use stays counted."""
    dead = await process(ttl_s=6.0, concurrent_requests=1, requests_per_minute=10)
    alive = await process(ttl_s=6.0, concurrent_requests=1, requests_per_minute=10)
    await dead.acquire(5)
    await dead.aclose()  # no settle, no more renewals: as if killed
    waiting = asyncio.create_task(alive.acquire(5))
    await until(lambda: alive.stats().queued == 1, "the waiter")
    await clock.advance(5.0)
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await clock.advance(1.5)
    await asyncio.wait_for(waiting, 5)
    assert used(alive)["requests_per_minute"] == 2


async def test_a_held_permit_is_renewed_while_the_call_runs(
    process: Factory, clock: FakeClock
) -> None:
    """A live process renews its permits every third of their life: a call longer than the
    expiry keeps its slot."""
    holder = await process(ttl_s=3.0, concurrent_requests=1)
    other = await process(ttl_s=3.0, concurrent_requests=1)
    await holder.acquire(1)
    for _ in range(6):  # 6 s: twice the expiry
        await clock.advance(1.0)
        await asyncio.sleep(0.02)
    with pytest.raises(RateLimitTimeoutError):
        await other.acquire(1, timeout_s=0)
    assert (await other.refresh_stats()).in_flight == 1


async def test_a_429_pause_and_a_closure_reach_every_process(
    process: Factory, clock: FakeClock
) -> None:
    """A Retry-After noted by one process pauses the key for all; one past the retry cap
    closes it: the other process's waiter and next acquire fail at once."""
    one = await process(requests_per_minute=100)
    two = await process(requests_per_minute=100)
    permit = await one.acquire(1)
    await one.note_429(permit, "rate_limit", retry_after_s=5.0)
    await one.settle(permit, 1)
    paused = asyncio.create_task(two.acquire(1))
    await until(lambda: two.stats().queued == 1, "the paused call")
    await clock.advance(5.5)
    await two.settle(await asyncio.wait_for(paused, 5), 1)
    assert one.stats().learned_concurrency == 1  # nothing else explained that 429
    permit = await one.acquire(1)
    waiting = asyncio.create_task(two.acquire(1, timeout_s=60))
    await until(lambda: two.stats().queued == 1, "a call waiting for the slot")
    await one.note_429(permit, "rate_limit", retry_after_s=600.0)
    with pytest.raises(RateLimitClosedError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(RateLimitClosedError):
        await two.acquire(1)


async def test_concurrency_learned_from_429s_holds_in_every_process(process: Factory) -> None:
    """A concurrency 429 in one process halves what the key may have in flight, for all."""
    one = await process(concurrent_requests=8)
    two = await process(concurrent_requests=8)
    permits = [await one.acquire(1) for _ in range(2)] + [await two.acquire(1) for _ in range(2)]
    await one.note_429(permits[0], "concurrency")
    await one.settle(permits[0], 1)
    assert one.stats().learned_concurrency == 2
    stats = await two.refresh_stats()
    assert stats.learned_concurrency == 2
    assert stats.in_flight == 3
    with pytest.raises(RateLimitTimeoutError):
        await two.acquire(1, timeout_s=0)  # 3 in flight, 2 allowed


async def test_a_providers_remaining_holds_every_process_until_its_reset(
    process: Factory, clock: FakeClock
) -> None:
    """Headers read by one process (0 left, reset in 10 s) hold the other's calls too."""
    one = await process(requests_per_minute=100)
    two = await process(requests_per_minute=100)
    await one.observe(
        RateLimitSnapshot(limit_requests=100, remaining_requests=0, reset_requests_s=10.0)
    )
    held = asyncio.create_task(two.acquire(1))
    await until(lambda: two.stats().queued == 1, "the held call")
    await clock.advance(9.0)
    await asyncio.sleep(0.05)
    assert not held.done()
    await clock.advance(1.5)
    await asyncio.wait_for(held, 5)


async def test_a_limit_only_the_headers_tell_is_learned_for_every_process(
    process: Factory,
) -> None:
    """A key with no limits learns the per-minute limit its headers say, and a call that
    needs more than it fails at once in another process too."""
    one = await process()
    two = await process()
    await one.observe(RateLimitSnapshot(limit_tokens=500, remaining_tokens=400, reset_tokens_s=30))
    with pytest.raises(ConfigError, match="tokens_per_minute"):
        await two.acquire(600)
    assert "tokens_per_minute (learned)" in used(two)


async def test_a_cancelled_waiter_takes_nothing(process: Factory) -> None:
    """A waiter cancelled while it waits leaves every tier as it was."""
    limiter = await process(concurrent_requests=1, requests_per_minute=10)
    held = await limiter.acquire(1)
    waiting = asyncio.create_task(limiter.acquire(1))
    await until(lambda: limiter.stats().queued == 1, "the waiter")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await limiter.settle(held, 1)
    stats = await limiter.refresh_stats()
    assert (stats.in_flight, used(limiter)["requests_per_minute"]) == (0, 1)


async def test_keys_in_redis_never_name_the_provider_key(
    redis_url: str, raw_redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What aoe stores in Redis is named by hashes: no API key, provider or model in clear,
    and two API keys of one provider have limits of their own."""
    config = Config(
        providers={
            "openai": ProviderConfig(
                "openai", "openai", api_key_env="OPENAI_API_KEY",
                limits=LimitsSpec(requests_per_minute=5),
            )
        }
    )  # fmt: skip
    conn = await connect(CoordinationSettings(redis_url, "test"))
    wakeups = Wakeups(conn)
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-one")
        first = RedisLimiters(conn, config, clock=FakeClock(), wakeups=wakeups)
        await first.for_model("openai", "gpt-4o-mini").acquire(1)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-two")
        second = RedisLimiters(conn, config, clock=FakeClock(), wakeups=wakeups)
        other = second.for_model("openai", "gpt-4o-mini")
        await other.acquire(1)
        assert used(other) == {"requests_per_minute": 1}  # not 2: another key
        dump = b""
        async for key in raw_redis.scan_iter("*"):
            dump += key
            if await raw_redis.type(key) == b"hash":
                for field, value in (await raw_redis.hgetall(key)).items():
                    dump += field + value
        for secret in (b"sk-secret", b"openai", b"gpt-4o"):
            assert secret not in dump
        await first.aclose()
        await second.aclose()
    finally:
        await wakeups.aclose()
        await conn.aclose()


async def test_a_slot_given_back_leaves_no_timer_a_skipping_clock_could_jump(
    redis_url: str,
) -> None:
    """A settle here wakes the waiter loop and ends its timer at once: between the settle
    and the loop's next turn no sleep of the limiter is left on the clock, so a clock that
    skips to the next sleep while nothing is in flight cannot jump past the grant."""
    from tests.test_ratelimit import _IdleSkipClock

    clock = _IdleSkipClock()
    conn = await connect(CoordinationSettings(redis_url, "test"))
    wakeups = Wakeups(conn)
    limiter = RedisLimiter(
        conn, LimitsSpec(concurrent_requests=1), name="openai", key_id="skip", lane_id="lane",
        clock=clock, wakeups=wakeups, permit_ttl_s=30.0, window_margin_s=0, server_time=False,
    )  # fmt: skip
    try:
        await asyncio.wait_for(wakeups.ready(), 5)
        first = await limiter.acquire(1)
        waiting = asyncio.create_task(limiter.acquire(1, timeout_s=600))
        await until(lambda: len(clock.pending) == 2, "the waiter loop to sleep")
        alarm, renewal = sorted(clock.pending)  # the waiter's poll; the permit's renewal
        assert alarm < renewal
        await limiter.settle(first, 1)
        assert alarm not in clock.pending  # the timer ended with the settle, not a turn later
        granted = await asyncio.wait_for(waiting, 5)
        assert granted.waited_s == 0
    finally:
        await limiter.aclose()
        await wakeups.aclose()
        await conn.aclose()
