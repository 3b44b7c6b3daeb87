"""The rate limiter: atomic multi-tier acquisition, waiting, settling, provider feedback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aoe.clock import FakeClock
from aoe.errors import ConfigError, RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.ratelimit import RateLimiter, RateLimiterRegistry, Reservation
from aoe.spec.models import Config, LimitsSpec, ProviderConfig


def used(limiter: RateLimiter) -> dict[str, int]:
    return {t.name: t.used for t in limiter.stats().tiers}


async def spin(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def make(clock: FakeClock, **limits: int) -> RateLimiter:
    return RateLimiter(LimitsSpec(**limits), clock=clock, name="openai", window_margin_s=0)


async def test_acquire_within_limits_is_immediate_and_counted() -> None:
    """A call that fits every tier goes at once and is visible in the stats."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=10, tokens_per_minute=1000, requests_per_day=100)
    res = await limiter.acquire(300)
    assert res.tokens == 300
    assert res.waited_s == 0
    assert used(limiter) == {
        "requests_per_minute": 1,
        "requests_per_day": 1,
        "tokens_per_minute": 300,
    }
    assert limiter.stats().in_flight == 1
    assert clock.slept == []


async def test_all_or_nothing_a_token_shortage_takes_no_request() -> None:
    """When tokens are short, the request tiers are not touched while the call waits."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=10, tokens_per_minute=1000)
    first = await limiter.acquire(900)
    waiting = asyncio.create_task(limiter.acquire(200))
    await spin()
    assert not waiting.done()
    assert used(limiter) == {"requests_per_minute": 1, "tokens_per_minute": 900}
    await limiter.settle(first, 700)  # the refund makes room
    await spin()
    assert waiting.done()
    assert used(limiter) == {"requests_per_minute": 2, "tokens_per_minute": 900}


async def test_timeout_leaves_every_tier_as_it_was() -> None:
    """A wait past its timeout raises RateLimitTimeoutError and has taken nothing."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=10, requests_per_hour=50, tokens_per_minute=1000)
    await limiter.acquire(950)
    before = used(limiter)
    waiting = asyncio.create_task(limiter.acquire(100, timeout_s=5))
    await spin()
    await clock.advance(4.9)
    assert not waiting.done()
    await clock.advance(0.1)
    with pytest.raises(RateLimitTimeoutError, match="tokens_per_minute 950/1000"):
        await waiting
    assert used(limiter) == before
    assert limiter.stats().in_flight == 1
    assert limiter.stats().wait_s_total == pytest.approx(5)


async def test_zero_timeout_fails_at_once_without_waiting() -> None:
    """timeout_s=0 is a try-acquire: it raises at once when the call does not fit."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=1)
    await limiter.acquire(0)
    with pytest.raises(RateLimitTimeoutError):
        await limiter.acquire(0, timeout_s=0)
    assert used(limiter) == {"requests_per_minute": 1}


async def test_a_call_that_can_never_fit_fails_at_once_naming_the_tier() -> None:
    """max_tokens above the tokens-per-minute limit is a config error, not an endless wait."""
    clock = FakeClock()
    limiter = make(clock, tokens_per_minute=1000)
    with pytest.raises(ConfigError, match=r"tokens_per_minute but its limit is 1000 \(500 over\)"):
        await limiter.acquire(1500)
    assert used(limiter) == {"tokens_per_minute": 0}


async def test_a_full_window_is_not_refilled_before_it_ends() -> None:
    """No 60-second window ever holds more than the limit (a refilling bucket would allow 2x)."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=4)
    for _ in range(4):
        await limiter.acquire(0)
    waiting = asyncio.create_task(limiter.acquire(0))
    await clock.advance(59.9)
    assert not waiting.done()
    await clock.advance(0.1)
    assert (await waiting).granted_at == pytest.approx(60)


async def test_waiters_are_served_in_arrival_order() -> None:
    """A small request does not overtake a larger one that came first."""
    clock = FakeClock()
    limiter = make(clock, tokens_per_minute=100)
    await limiter.acquire(90)
    order: list[str] = []

    async def take(label: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        order.append(label)

    big = asyncio.create_task(take("big", 50))
    await spin()
    small = asyncio.create_task(take("small", 5))
    await spin()
    assert order == []  # small would fit now, but big is first in line
    await clock.advance(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_higher_priority_waiters_go_first() -> None:
    """The engine's priorities carry into the queue: higher priority is served first."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=1)
    await limiter.acquire(0)
    order: list[int] = []

    async def take(priority: int) -> None:
        await limiter.acquire(0, priority=priority)
        order.append(priority)

    tasks = []
    for p in (1, 5, 3):
        tasks.append(asyncio.create_task(take(p)))
        await spin()
    for _ in range(3):
        await clock.advance(60)
    await asyncio.gather(*tasks)
    assert order == [5, 3, 1]


async def test_concurrency_slot_is_freed_by_settle_and_release() -> None:
    """concurrent_requests caps calls in flight; finishing one lets the next waiter go."""
    clock = FakeClock()
    limiter = make(clock, concurrent_requests=2)
    a = await limiter.acquire(10)
    b = await limiter.acquire(10)
    third = asyncio.create_task(limiter.acquire(10))
    fourth = asyncio.create_task(limiter.acquire(10))
    await spin()
    assert not third.done()
    await limiter.settle(a, 10)
    await spin()
    assert third.done()
    assert not fourth.done()
    await limiter.release(b)
    await spin()
    assert fourth.done()
    assert limiter.stats().in_flight == 2


async def test_settle_charges_extra_usage() -> None:
    """A call that used more tokens than reserved makes later calls wait for it."""
    clock = FakeClock()
    limiter = make(clock, tokens_per_minute=1000)
    res = await limiter.acquire(100)
    await limiter.settle(res, 1100)
    assert used(limiter) == {"tokens_per_minute": 1100}
    waiting = asyncio.create_task(limiter.acquire(1))
    await clock.advance(59)
    assert not waiting.done()
    await clock.advance(1)
    assert waiting.done()


async def test_release_gives_everything_back() -> None:
    """A call that never left returns its request, tokens and slot."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=1, tokens_per_minute=100, concurrent_requests=1)
    res = await limiter.acquire(100)
    await limiter.release(res)
    assert used(limiter) == {"requests_per_minute": 0, "tokens_per_minute": 0}
    await limiter.acquire(100)  # fits at once again


async def test_a_reservation_is_settled_only_once() -> None:
    """Settling twice is a bug the limiter reports instead of freeing capacity twice."""
    clock = FakeClock()
    limiter = make(clock, concurrent_requests=1)
    res = await limiter.acquire(1)
    await limiter.settle(res, 1)
    with pytest.raises(ValueError, match="not open"):
        await limiter.settle(res, 1)
    with pytest.raises(ValueError, match="not open"):
        await limiter.release(Reservation(99, "openai", 1, 0.0, 0.0))


async def test_pause_blocks_every_caller_until_it_ends() -> None:
    """A 429 with retry-after pauses the key for every agent, not only the one that got it."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=100, tokens_per_minute=10)
    refused = await limiter.acquire(10)  # every token taken: the 429 has a known cause
    await limiter.note_429(refused, "rate_limit", retry_after_s=10)
    await limiter.settle(refused, 0)
    tasks = [asyncio.create_task(limiter.acquire(1)) for _ in range(3)]
    await clock.advance(9.9)
    assert not any(t.done() for t in tasks)
    assert limiter.stats().paused_for_s == pytest.approx(0.1)
    await clock.advance(0.1)
    grants = await asyncio.gather(*tasks)
    assert all(r.granted_at == pytest.approx(10) for r in grants)
    assert limiter.stats().rate_limited == 1
    assert limiter.stats().waits == 3


async def test_observe_lowers_remaining_until_the_reset() -> None:
    """Provider headers saying less is left than we think hold us to that until the reset."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=100, tokens_per_minute=10_000)
    await limiter.observe(
        RateLimitSnapshot(
            limit_requests=100,
            remaining_requests=2,
            reset_requests_s=30,
            remaining_tokens=9_000,
            reset_tokens_s=6,
        )
    )
    assert used(limiter) == {"requests_per_minute": 98, "tokens_per_minute": 1_000}
    await limiter.acquire(1)
    await limiter.acquire(1)
    third = asyncio.create_task(limiter.acquire(1))
    await clock.advance(29)
    assert not third.done()
    await clock.advance(1)
    assert third.done()
    # And tokens: 9000 left for 6 s, whatever the local count said.
    stats = used(limiter)
    assert stats["tokens_per_minute"] == 3  # the token hold ended at 6 s


async def test_observe_never_loosens() -> None:
    """Headers that report more room than we track change nothing."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=3)
    for _ in range(3):
        await limiter.acquire(0)
    await limiter.observe(
        RateLimitSnapshot(limit_requests=3, remaining_requests=3, reset_requests_s=1)
    )
    with pytest.raises(RateLimitTimeoutError):
        await limiter.acquire(0, timeout_s=0)


async def test_a_cancelled_waiter_takes_nothing_and_unblocks_the_queue() -> None:
    """An agent cancelled while waiting leaves no capacity behind and no one stuck."""
    clock = FakeClock()
    limiter = make(clock, tokens_per_minute=100)
    await limiter.acquire(60)
    big = asyncio.create_task(limiter.acquire(80))
    await spin()
    small = asyncio.create_task(limiter.acquire(30))
    await spin()
    assert not small.done()
    big.cancel()
    await spin()
    assert small.done()
    assert used(limiter) == {"tokens_per_minute": 90}


async def test_a_grant_racing_a_cancel_is_given_back() -> None:
    """A waiter cancelled just after it was granted does not keep the capacity."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=5, concurrent_requests=1)
    first = await limiter.acquire(0)
    waiting = asyncio.create_task(limiter.acquire(0))
    await spin()
    await limiter.settle(first, 0)
    for _ in range(10):  # let the waiter loop grant it, but not the task resume
        await asyncio.sleep(0)
        if limiter.stats().in_flight == 1:
            break
    assert limiter.stats().in_flight == 1
    assert not waiting.done()
    waiting.cancel()
    await spin()
    assert waiting.cancelled()
    assert limiter.stats().in_flight == 0
    assert used(limiter) == {"requests_per_minute": 1}


async def test_unlimited_limiter_only_counts() -> None:
    """A key with no limits configured never waits."""
    clock = FakeClock()
    limiter = make(clock)
    reservations = [await limiter.acquire(10**6) for _ in range(100)]
    for r in reservations:
        await limiter.settle(r, 5)
    assert limiter.stats().tiers == ()
    assert limiter.stats().in_flight == 0


async def test_registry_builds_one_limiter_per_key_or_per_model(tmp_path: Path) -> None:
    """Agents on one provider key share its limiter; model_limits give a model its own."""
    config = Config(
        providers={
            "openai": ProviderConfig(
                "openai",
                "openai",
                limits=LimitsSpec(requests_per_minute=500),
                model_limits={"gpt-4o": LimitsSpec(requests_per_minute=50)},
            )
        }
    )
    registry = RateLimiterRegistry(config, clock=FakeClock())
    mini = registry.for_model("openai", "gpt-4o-mini")
    assert registry.for_model("openai", "gpt-4o-mini") is mini
    await mini.acquire(1)
    assert registry.for_model("openai", "gpt-4.1").stats().in_flight == 1  # the same key
    big = registry.for_model("openai", "gpt-4o")
    assert big.stats().in_flight == 0
    assert [s.name for s in registry.all_stats()] == ["openai", "openai/gpt-4o"]
    assert big.stats().tiers[0].limit == 50
    with pytest.raises(ConfigError, match="no provider 'nope'"):
        registry.for_model("nope", "x")


async def test_windows_are_a_margin_longer_than_their_period_by_default() -> None:
    """A grant reaches the provider late, so by default a window lasts its period plus a
    margin: no provider-side window sees more than the limit."""
    from aoe.ratelimit import WINDOW_MARGIN_S

    clock = FakeClock()
    limiter = RateLimiter(LimitsSpec(requests_per_minute=1), clock=clock, name="k")
    await limiter.settle(await limiter.acquire(0), 0)
    waiting = asyncio.ensure_future(limiter.acquire(0))
    await clock.advance(60)
    assert not waiting.done()
    await clock.advance(WINDOW_MARGIN_S)
    assert (await waiting).granted_at == pytest.approx(60 + WINDOW_MARGIN_S)


async def test_a_pause_longer_than_the_deadline_fails_at_once() -> None:
    """After a 429 asking for 100 s, a caller with a 10 s deadline is told at once."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=100)
    await limiter.pause(100)
    with pytest.raises(RateLimitTimeoutError, match="paused"):
        await limiter.acquire(1, timeout_s=10)
    assert clock.now() == 0


# -- what 429s teach: concurrency (AIMD) and closed keys ----------------------------------------


async def test_a_concurrency_429_halves_what_may_be_in_flight() -> None:
    """A key with no configured cap: a 429 about calls in flight with 8 out lets 4 out."""
    clock = FakeClock()
    limiter = make(clock)
    out = [await limiter.acquire(1) for _ in range(8)]
    await limiter.note_429(out[0], "concurrency")
    await limiter.settle(out[0], 0)
    assert limiter.stats().learned_concurrency == 4
    for res in out[1:4]:
        await limiter.settle(res, 1)
    assert limiter.stats().in_flight == 4
    waiting = asyncio.create_task(limiter.acquire(1))
    await spin()
    assert not waiting.done()  # 4 out: no room under what the 429 taught
    await limiter.settle(out[4], 1)
    await spin()
    assert waiting.done()


async def test_429s_of_a_burst_halve_once_then_settle_at_what_was_let_through() -> None:
    """Ten calls at once, six refused: the first refusal halves the concurrency, the other
    five (the same news) bring it down to the four the provider let through, not to 1."""
    clock = FakeClock()
    limiter = make(clock, concurrent_requests=10)
    out = [await limiter.acquire(1) for _ in range(10)]
    for res in out[:6]:
        await limiter.note_429(res, "concurrency")
        await limiter.settle(res, 0)
    assert limiter.stats().learned_concurrency == 4
    await limiter.settle(out[6], 1)
    again = await limiter.acquire(1)  # granted after the fall: its 429 is news
    await limiter.note_429(again, "concurrency")
    assert limiter.stats().learned_concurrency == 2  # half of the 4 it had learned


async def test_a_rate_limit_429_lowers_concurrency_only_when_nothing_explains_it() -> None:
    """A 429 while every tier has room lowers the concurrency; one at a full tier does not."""
    clock = FakeClock()
    limiter = make(clock, requests_per_minute=4, concurrent_requests=20)
    first = [await limiter.acquire(1) for _ in range(2)]
    await limiter.note_429(first[0], "rate_limit")  # 2 of 4 requests used: unexplained
    assert limiter.stats().learned_concurrency == 1
    full = make(clock, requests_per_minute=2, concurrent_requests=20)
    out = [await full.acquire(1) for _ in range(2)]
    await full.note_429(out[1], "rate_limit")  # the minute's requests are all used
    assert full.stats().learned_concurrency is None
    await full.note_429(out[0], "quota")  # money, not load
    assert full.stats().learned_concurrency is None
    assert full.stats().rate_limited == 2


async def test_concurrency_recovers_one_per_window_at_full_use_never_past_the_cap() -> None:
    """After a fall, each CONCURRENCY_RECOVERY_CALLS calls answered while the key ran at
    its learned concurrency raise it by one; calls with room to spare vouch for nothing;
    reaching the configured cap, the configured cap stands again."""
    from aoe.ratelimit import CONCURRENCY_RECOVERY_CALLS

    clock = FakeClock()
    limiter = make(clock, concurrent_requests=3)
    out = [await limiter.acquire(1) for _ in range(3)]
    await limiter.note_429(out[0], "concurrency")
    for res in out:
        await limiter.settle(res, 1)
    assert limiter.stats().learned_concurrency == 1
    for _ in range(2 * CONCURRENCY_RECOVERY_CALLS):  # one at a time: at the learned value
        await limiter.settle(await limiter.acquire(1), 1)
    assert limiter.stats().learned_concurrency == 2
    for _ in range(2 * CONCURRENCY_RECOVERY_CALLS):  # one at a time: room to spare at 2
        await limiter.settle(await limiter.acquire(1), 1)
    assert limiter.stats().learned_concurrency == 2
    for _ in range(CONCURRENCY_RECOVERY_CALLS):
        pair = [await limiter.acquire(1), await limiter.acquire(1)]
        for res in pair:
            await limiter.settle(res, 1)
    assert limiter.stats().learned_concurrency is None  # back at the configured 3
    assert limiter.stats().concurrency_limit == 3


async def test_a_retry_after_past_the_retry_cap_closes_the_key_and_ends_every_waiter() -> None:
    """A 429 asking for 300 s: the agents waiting on the key fail at once, saying when it
    opens again; new calls fail at once until then; then the key works again."""
    from aoe.errors import RateLimitClosedError

    clock = FakeClock()
    limiter = make(clock, concurrent_requests=1)
    refused = await limiter.acquire(1)
    waiters = [asyncio.create_task(limiter.acquire(1)) for _ in range(3)]
    await spin()
    await limiter.note_429(refused, "rate_limit", retry_after_s=300)
    await spin()
    assert all(t.done() for t in waiters)
    for task in waiters:
        error = task.exception()
        assert isinstance(error, RateLimitClosedError)
        assert "opens again at 2026-01-01 00:05:00 UTC" in str(error)
        assert error.retry_after_s == pytest.approx(300)
    await limiter.settle(refused, 0)
    await clock.advance(200)
    with pytest.raises(RateLimitClosedError, match="00:05:00 UTC") as raised:
        await limiter.acquire(1)
    assert raised.value.retry_after_s == pytest.approx(100)
    assert limiter.stats().closed_for_s == pytest.approx(100)
    await clock.advance(100)
    assert (await limiter.acquire(1)).granted_at == pytest.approx(300)
    assert clock.slept == []  # nobody waited for the key to open


# -- what headers teach ------------------------------------------------------------------------


async def test_a_key_without_limits_learns_the_tiers_its_headers_describe() -> None:
    """No limits configured: headers saying 3 requests a minute become a tier of 3 a minute."""
    clock = FakeClock()
    limiter = make(clock)
    await limiter.observe(RateLimitSnapshot(limit_requests=3, limit_tokens=1000))
    assert [(t.name, t.limit) for t in limiter.stats().tiers] == [
        ("requests_per_minute (learned)", 3),
        ("tokens_per_minute (learned)", 1000),
    ]
    for _ in range(3):
        await limiter.settle(await limiter.acquire(10), 10)
    with pytest.raises(RateLimitTimeoutError, match=r"requests_per_minute \(learned\) 3/3"):
        await limiter.acquire(10, timeout_s=0)
    with pytest.raises(ConfigError, match="the provider's headers say so"):
        await limiter.acquire(2000)
    await limiter.observe(RateLimitSnapshot(limit_requests=6))  # the provider raised it
    await limiter.acquire(10, timeout_s=0)


async def test_a_reading_without_a_reset_holds_nothing() -> None:
    """Limit 3, remaining 1 and no reset time: nothing is held for a guessed minute; the
    learned tier of 3 a minute still counts what was sent."""
    clock = FakeClock()
    limiter = make(clock)
    await limiter.observe(RateLimitSnapshot(limit_requests=3, remaining_requests=0))
    for _ in range(3):
        await limiter.acquire(0, timeout_s=0)
    with pytest.raises(RateLimitTimeoutError):
        await limiter.acquire(0, timeout_s=0)


async def test_a_reading_for_one_model_never_holds_another_of_the_same_key(
    tmp_path: Path,
) -> None:
    """A gateway says model A has 0 calls left for 30 s: calls to model B of the same key
    go at once; calls to A wait for the reset."""
    config = Config(providers={"gw": ProviderConfig("gw", "openai")})
    clock = FakeClock()
    registry = RateLimiterRegistry(config, clock=clock)
    model_a, model_b = registry.for_model("gw", "a"), registry.for_model("gw", "b")
    await model_a.observe(
        RateLimitSnapshot(limit_requests=3, remaining_requests=0, reset_requests_s=30)
    )
    for _ in range(5):
        await model_b.settle(await model_b.acquire(1, timeout_s=0), 1)
    waiting = asyncio.create_task(model_a.acquire(1))
    await clock.advance(29)
    assert not waiting.done()
    await clock.advance(1)
    assert (await waiting).granted_at == pytest.approx(30)
    names = [s.name for s in registry.all_stats()]
    assert names == ["gw", "gw/a (headers)"]  # b learned nothing: no row of its own


class _IdleSkipClock(FakeClock):
    """A FakeClock that knows which sleeps are pending, so a test can skip ahead the way a
    clock driving a run does: to the earliest pending sleep, while nothing is in flight.
    A sleep whose task was told to stop is not pending: it can no longer wake anyone."""

    def __init__(self) -> None:
        super().__init__()
        self._sleeps: list[tuple[float, asyncio.Task[object]]] = []

    @property
    def pending(self) -> list[float]:
        return [deadline for deadline, task in self._sleeps if not task.cancelling()]

    async def sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        entry = (self.now() + max(0.0, seconds), task)
        self._sleeps.append(entry)
        try:
            await super().sleep(seconds)
        finally:
            self._sleeps.remove(entry)

    async def skip_ahead(self) -> None:
        if self.pending:
            await self.advance(min(self.pending) - self.now())


async def test_a_slot_given_back_leaves_no_alarm_a_skipping_clock_could_jump() -> None:
    """The last call in flight settles while a waiter is queued: the waiter is granted at
    once. No sleep is left on the clock in the meantime, so a clock that skips to the next
    sleep whenever nothing is in flight (as a run's test clock does) cannot jump past the
    grant to the waiter's deadline and fail it after 600 s with every slot free."""
    clock = _IdleSkipClock()
    limiter = make(clock, concurrent_requests=1)
    first = await limiter.acquire(1)
    waiting = asyncio.create_task(limiter.acquire(1, timeout_s=600))
    await spin()
    assert clock.pending == [pytest.approx(600)]  # the waiter loop's alarm: the deadline
    await limiter.settle(first, 1)
    assert limiter.stats().in_flight == 0
    assert clock.pending == []  # the slot came back: the alarm ended with its round
    await clock.skip_ahead()
    granted = await asyncio.wait_for(waiting, 1)
    assert (granted.granted_at, granted.waited_s) == (0, 0)
