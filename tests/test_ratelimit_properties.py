"""Properties of the rate limiter over any sequence of calls, with a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aoe.clock import FakeClock
from aoe.errors import RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.ratelimit import RateLimiter, Reservation
from aoe.spec.models import LimitsSpec

LIMITS = LimitsSpec(
    requests_per_minute=5, requests_per_hour=20, tokens_per_minute=200, concurrent_requests=4
)
# The limiter treats a moment as reached 1 microsecond early (float time lines round).
WINDOW_SLACK_S = 2e-6

Op = tuple[Any, ...]  # (kind, *arguments), drawn by ops_strategy

acquire_op = st.tuples(
    st.just("acquire"),
    st.integers(0, 120),
    st.one_of(st.none(), st.sampled_from([0.0, 1.0, 5.0, 30.0, 90.0])),
    st.integers(0, 2),
)
advance_op = st.tuples(
    st.just("advance"),
    st.one_of(
        st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0, 20.0, 29.5, 30.0, 31.0, 59.5, 60.0, 61.0]),
        st.floats(0, 70),
    ),
)
settle_op = st.tuples(st.just("settle"), st.integers(0, 10), st.floats(0, 1))
# A whole call: acquire, then settle as soon as it is granted.
call_op = st.tuples(st.just("call"), st.integers(0, 120), st.floats(0, 1))
# Acquisitions, settlements and time steps dominate, so windows fill up and turn over.
ops_strategy = st.lists(
    st.one_of(
        acquire_op,
        acquire_op,
        call_op,
        call_op,
        call_op,
        call_op,
        call_op,
        settle_op,
        settle_op,
        advance_op,
        advance_op,
        st.tuples(st.just("release"), st.integers(0, 10)),
        st.tuples(st.just("cancel"), st.integers(0, 10)),
        st.tuples(st.just("pause"), st.sampled_from([1.0, 10.0, 45.0])),
        st.tuples(st.just("observe"), st.integers(0, 5), st.sampled_from([1.0, 20.0, 60.0])),
    ),
    min_size=30,
    max_size=80,
)


@dataclass
class Grant:
    reservation: Reservation
    op_index: int
    requests: int = 1
    tokens: int = 0


@dataclass
class World:
    """Drives one limiter through ops and keeps what a checker needs."""

    clock: FakeClock = field(default_factory=FakeClock)
    limiter: RateLimiter = field(init=False)
    op_index: int = 0
    grants: list[Grant] = field(default_factory=list)
    open: list[Grant] = field(default_factory=list)
    pending: list[asyncio.Task[Reservation]] = field(default_factory=list)
    settle_at_once: dict[asyncio.Task[Reservation], float] = field(default_factory=dict)
    pauses: list[tuple[int, float, float]] = field(default_factory=list)
    observations: list[tuple[int, float, float, int]] = field(default_factory=list)
    timeouts: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(LIMITS, clock=self.clock, name="key", window_margin_s=0)

    def _on_done(self, task: asyncio.Task[Reservation]) -> None:
        if task in self.pending:
            self.pending.remove(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, RateLimitTimeoutError):
            self.timeouts += 1
            return
        assert exc is None, exc
        res = task.result()
        grant = Grant(res, self.op_index, tokens=res.tokens)
        self.grants.append(grant)
        self.open.append(grant)
        self.max_in_flight = max(self.max_in_flight, len(self.open))
        fraction = self.settle_at_once.pop(task, None)
        if fraction is not None:
            self.settle(grant, fraction)

    def settle(self, grant: Grant, fraction: float) -> None:
        """Settle at once, from a done callback: the in-memory limiter's ``settle`` never
        suspends, so its coroutine finishes on its first step (or this fails)."""
        self.open.remove(grant)
        grant.tokens = int(grant.reservation.tokens * fraction)
        step = self.limiter.settle(grant.reservation, grant.tokens)
        with pytest.raises(StopIteration):
            step.send(None)

    async def run(self, op: Op) -> None:
        kind = op[0]
        if kind in ("acquire", "call"):
            timeout, priority = (op[2], op[3]) if kind == "acquire" else (None, 0)
            task = asyncio.ensure_future(
                self.limiter.acquire(int(op[1]), timeout_s=timeout, priority=int(priority))
            )
            if kind == "call":
                self.settle_at_once[task] = float(op[2])
            task.add_done_callback(self._on_done)
            self.pending.append(task)
        elif kind == "advance":
            await self.clock.advance(float(op[1]))
        elif kind == "settle" and self.open:
            self.settle(self.open[int(op[1]) % len(self.open)], float(op[2]))
        elif kind == "release" and self.open:
            grant = self.open.pop(int(op[1]) % len(self.open))
            grant.requests = grant.tokens = 0
            await self.limiter.release(grant.reservation)
        elif kind == "cancel" and self.pending:
            self.pending[int(op[1]) % len(self.pending)].cancel()
        elif kind == "pause":
            seconds = float(op[1])
            self.pauses.append((self.op_index, self.clock.now(), seconds))
            await self.limiter.pause(seconds)
        elif kind == "observe":
            remaining, reset = int(op[1]), float(op[2])
            self.observations.append((self.op_index, self.clock.now(), reset, remaining))
            await self.limiter.observe(
                RateLimitSnapshot(
                    limit_requests=5, remaining_requests=remaining, reset_requests_s=reset
                )
            )
        for _ in range(12):
            await asyncio.sleep(0)
        assert len(self.open) <= 4, "more calls in flight than concurrent_requests"
        self.op_index += 1

    async def finish(self, *, settle: bool = False) -> None:
        for task in list(self.pending):
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)
        while settle and self.open:
            grant = self.open.pop()
            await self.limiter.settle(grant.reservation, grant.tokens)


def window_totals(grants: list[Grant], period_s: float, attr: str) -> int:
    """The most any window of one period holds, counting what each call finally used."""
    worst = 0
    for g in grants:
        end = g.reservation.granted_at
        start = end - period_s + WINDOW_SLACK_S
        total = sum(getattr(h, attr) for h in grants if start < h.reservation.granted_at <= end)
        worst = max(worst, total)
    return worst


async def play(ops: list[Op]) -> World:
    world = World()
    for op in ops:
        await world.run(op)
    await world.finish()
    return world


def check_windows(world: World) -> None:
    """No 60 s (or 1 h) window holds more requests or tokens than allowed."""
    assert window_totals(world.grants, 60, "requests") <= 5
    assert window_totals(world.grants, 3600, "requests") <= 20
    assert window_totals(world.grants, 60, "tokens") <= 200
    assert world.max_in_flight <= 4


def check_pauses(world: World) -> None:
    """After a 429's pause no call is granted before the pause ends, for any caller."""
    for op_index, start, seconds in world.pauses:
        for g in world.grants:
            if g.op_index >= op_index:
                assert g.reservation.granted_at >= start + seconds - WINDOW_SLACK_S


def check_observations(world: World, op_count: int) -> None:
    """After headers say r requests are left until a reset, at most r are granted before it.

    A released call never reached the provider, so it does not count.
    """
    ends = [o[0] for o in world.observations[1:]] + [op_count + 1]
    ends = ends[: len(world.observations)]
    for (op_index, at, reset, remaining), replaced_at in zip(world.observations, ends, strict=True):
        held = [
            g
            for g in world.grants
            if op_index <= g.op_index < replaced_at  # a newer reading replaces this one
            and g.reservation.granted_at < at + reset - WINDOW_SLACK_S
        ]
        assert sum(g.requests for g in held) <= remaining


# One world per example is checked for all three properties: drawing a 30-80 step program
# costs Hypothesis about 10 ms, three times what playing it does, so each property still
# gets 300 programs for the price of one test. Every program ends with a 429's pause that
# a caller waits out, so each checks a pause.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_strategy)
def test_no_window_pause_or_provider_reading_is_ever_overrun(ops: list[Op]) -> None:
    """Whatever agents do: no window holds more than its limits, no call is granted during a
    429's pause, and no more than the provider's remaining are granted before its reset."""
    ops = [*ops, ("pause", 10.0), ("acquire", 1, None, 0), ("advance", 11.0)]
    world = asyncio.run(play(ops))
    check_windows(world)
    check_pauses(world)
    check_observations(world, len(ops))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops_strategy,
    st.integers(1, 200),
    st.sampled_from([0.5, 5.0, 20.0, 59.0]),
)
def test_a_timed_out_acquisition_leaves_no_trace(
    ops: list[Op], tokens: int, timeout: float
) -> None:
    """A world where an acquisition timed out is the same, afterwards, as one where it never ran."""

    async def scenario() -> tuple[object, object, bool]:
        with_wait, without = World(), World()
        for op in ops:
            await with_wait.run(op)
            await without.run(op)
        await with_wait.finish(settle=True)
        await without.finish(settle=True)
        timed_out = False
        try:
            extra = asyncio.ensure_future(with_wait.limiter.acquire(tokens, timeout_s=timeout))
            for _ in range(5):
                await asyncio.sleep(0)
            await with_wait.clock.advance(timeout)
            await without.clock.advance(timeout)
            await with_wait.limiter.release(await extra)  # it fitted after all: give it back
        except RateLimitTimeoutError:
            timed_out = True
        follow = []
        for world in (with_wait, without):
            task = asyncio.ensure_future(world.limiter.acquire(50))
            for _ in range(3):
                await world.clock.advance(30)
            follow.append((await task).granted_at - world.clock.now())
        a, b = with_wait.limiter.stats(), without.limiter.stats()
        return (a.tiers, a.in_flight, follow[0]), (b.tiers, b.in_flight, follow[1]), timed_out

    seen_with, seen_without, timed_out = asyncio.run(scenario())
    event(f"timed out: {timed_out}")
    assert seen_with == seen_without
