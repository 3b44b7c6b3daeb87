"""The one call a run makes: the Redis-backed services when a coordinator is configured.

``open_fleet`` returns None without a Redis URL (one process: in-memory limits and
budgets, the ledger's lease) and otherwise connects, proving the server answers before a
cent is spent (``CoordinationUnavailableError``, exit 2), and hands back the limiters
(``RedisLimiters``) to use instead of the in-memory ones. ``on_lost`` tells the run when
Redis goes away mid-run, so it stops admitting calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from aoe.clock import Clock
from aoe.coordination.connection import (
    Connection,
    CoordinationLostError,
    connect,
    settings_for,
)
from aoe.coordination.limiter import RedisLimiters
from aoe.coordination.wake import Wakeups
from aoe.spec.models import Config

__all__ = ["Fleet", "open_fleet"]


@dataclass(slots=True)
class Fleet:
    """The services of a run that shares its limits with other processes through Redis."""

    conn: Connection
    wakeups: Wakeups
    limiters: RedisLimiters

    def on_lost(self, callback: Callable[[CoordinationLostError], None]) -> None:
        """``callback`` is called once, when Redis first fails to answer mid-run."""
        self.conn.on_lost(callback)

    @property
    def lost(self) -> CoordinationLostError | None:
        return self.conn.lost_error

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # a lost server: nothing left to tidy there
            await self.limiters.aclose()
            await self.wakeups.aclose()
        await self.conn.aclose()


async def open_fleet(config: Config, *, clock: Clock) -> Fleet | None:
    """The fleet's services, or None when no Redis is configured (see the module)."""
    settings = settings_for(config)
    if settings is None:
        return None
    conn = await connect(settings)
    wakeups = Wakeups(conn)
    return Fleet(conn, wakeups, RedisLimiters(conn, config, clock=clock, wakeups=wakeups))
