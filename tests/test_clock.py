"""The fake clock tests drive time with: concurrent sleepers overlap, nothing waits for real."""

from __future__ import annotations

import asyncio
import time

from aoe.clock import FakeClock


async def test_autojump_wakes_concurrent_sleepers_at_their_own_deadlines() -> None:
    """Two tasks that sleep 1 s and 3 s at once wake at 1 s and 3 s, not at 1 s and 4 s."""
    clock = FakeClock(autojump=True)
    woke: dict[str, float] = {}

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke[name] = clock.now()

    started = time.monotonic()
    await asyncio.gather(nap("long", 3.0), nap("short", 1.0), nap("same", 1.0))
    assert woke == {"short": 1.0, "same": 1.0, "long": 3.0}
    assert clock.slept == [3.0, 1.0, 1.0]
    assert time.monotonic() - started < 1.0


async def test_autojump_lets_a_woken_task_act_before_time_moves_on() -> None:
    """What a task does after waking (here: start a 1 s sleep) happens at its wake-up time."""
    clock = FakeClock(autojump=True)
    seen: list[tuple[str, float]] = []

    async def chain() -> None:
        await clock.sleep(1.0)
        for _ in range(5):  # a few awaits between waking and sleeping again
            await asyncio.sleep(0)
        seen.append(("chain slept again at", clock.now()))
        await clock.sleep(1.0)
        seen.append(("chain woke at", clock.now()))

    async def slow() -> None:
        await clock.sleep(1.5)
        seen.append(("slow woke at", clock.now()))

    await asyncio.gather(chain(), slow())
    assert seen == [
        ("chain slept again at", 1.0),
        ("slow woke at", 1.5),
        ("chain woke at", 2.0),
    ]


async def test_a_cancelled_sleeper_does_not_move_time() -> None:
    """Cancelling a long sleep leaves time where the other sleepers take it."""
    clock = FakeClock(autojump=True)
    long = asyncio.ensure_future(clock.sleep(100.0))
    await asyncio.sleep(0)
    long.cancel()
    await clock.sleep(2.0)
    assert clock.now() == 2.0


async def test_without_autojump_only_advance_moves_time() -> None:
    """A sleeper on a plain FakeClock wakes when the test advances past its deadline."""
    clock = FakeClock()
    task = asyncio.ensure_future(clock.sleep(5.0))
    await asyncio.sleep(0)
    assert clock.slept == [5.0]
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done()
    assert clock.now() == 5.0
