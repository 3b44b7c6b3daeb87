"""One clock for the engine, the rate limiter, backoff and budgets, so tests move time.

It tells two times: ``now()`` is monotonic seconds, for waits, deadlines and durations
(never jumps); ``wall()`` is epoch seconds, for the stamps in events, results and the
ledger. A run reads both from the one clock it was given, never ``time.time()`` beside it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds with an awaitable sleep on the same time line, and wall time."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


#: Where a FakeClock's wall time starts: 2026-01-01T00:00:00Z, so stamps read as dates.
FAKE_EPOCH_S = 1_767_225_600.0


class FakeClock:
    """A clock that only moves when a test says so.

    ``sleep`` parks the caller until ``advance`` moves time past its deadline. With
    ``autojump=True`` time moves by itself: once every task has had ``AUTOJUMP_ROUNDS``
    turns of the event loop to react to the last wake-up, time jumps to the earliest
    sleeper's deadline. Code under test that waits runs instantly, and concurrent sleepers
    overlap as they would in real time: two tasks that each sleep 1 s both wake at 1 s.
    Wall time moves with it, from ``epoch_s``.
    """

    # Turns of the event loop each task gets before time jumps: enough for a wake-up to
    # ripple through many awaits (a finished call starting the next agent takes a few).
    AUTOJUMP_ROUNDS = 100

    def __init__(
        self, start: float = 0.0, *, autojump: bool = False, epoch_s: float = FAKE_EPOCH_S
    ) -> None:
        self._now = start
        self._epoch_s = epoch_s - start
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._jumper: asyncio.Task[None] | None = None
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch_s + self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        if self._autojump and seconds == 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        jumper = self._jumper
        if self._autojump and (jumper is None or jumper.done() or jumper.get_loop() is not loop):
            self._jumper = loop.create_task(self._jump_while_asleep())
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        self._wake_due()
        for _ in range(3):
            await asyncio.sleep(0)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def _jump_while_asleep(self) -> None:
        """Autojump: let everyone react, then move time to the next deadline; repeat."""
        while True:
            for _ in range(self.AUTOJUMP_ROUNDS):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled sleepers wait for nothing
            if not self._sleepers:
                return
            self._now = max(self._now, self._sleepers[0][0])
            self._wake_due()
