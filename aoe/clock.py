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

    ``sleep`` parks the caller until ``advance`` moves time past its deadline; with
    ``autojump=True`` a sleep moves time forward by itself, so code under test that waits
    runs instantly while still observing the waited time. Wall time moves with it.
    """

    def __init__(
        self, start: float = 0.0, *, autojump: bool = False, epoch_s: float = FAKE_EPOCH_S
    ) -> None:
        self._now = start
        self._epoch_s = epoch_s - start
        self._autojump = autojump
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch_s + self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        if self._autojump:
            self._now += seconds
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)
