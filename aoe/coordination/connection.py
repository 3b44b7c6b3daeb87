"""How aoe reaches the coordinator: redis-py's client, and what its failures become.

The settings and errors are in ``aoe.coordination.config`` (no redis-py there). ``connect``
opens redis-py's asyncio client and proves the server answers before a cent is spent:
a server that does not is ``CoordinationUnavailableError`` (exit 2), saying which server
(the URL with its password masked), what went wrong and how to fix it. A run never falls
back to per-process limits: with a URL configured, Redis is the only place limits live.

A server lost while a run runs is ``CoordinationLostError`` (exit 5, see the package
docstring): every store method that cannot reach it raises it, through ``Connection.lost``
so the run hears of it once and stops admitting calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aoe.clock import Clock, SystemClock
from aoe.coordination.config import (
    REDIS_URL_ENV,
    CoordinationLostError,
    CoordinationSettings,
    CoordinationUnavailableError,
    redact_url,
    settings_for,
)

__all__ = [
    "REDIS_URL_ENV",
    "Connection",
    "CoordinationLostError",
    "CoordinationSettings",
    "CoordinationUnavailableError",
    "connect",
    "key_hash",
    "redact_url",
    "settings_for",
]

#: Every key aoe writes starts with this, so a shared Redis can hold other data beside it.
KEY_PREFIX: Final = "aoe"

#: Seconds to connect and to wait for any answer. Loopback answers in well under 1 ms and a
#: LAN in a few; a server that takes seconds is down or overloaded, and a run that waits
#: on it longer only holds its calls back.
SOCKET_TIMEOUT_S: Final = 5.0

#: Connections one process may open; past this many, round trips queue for a connection.
#: Measured at 100 calls in flight (bench/bench_redis.py): 16 connections answered an
#: acquire in half the time 64 or 200 did (fewer sockets for the server and the loop).
MAX_CONNECTIONS: Final = 16

#: A command that fails on a broken connection is tried again this many times, backing off
#: from 50 ms to 0.5 s (about 2.5 s in all): what a Redis restart or failover takes.
RECONNECT_RETRIES: Final = 6


def key_hash(*parts: str) -> str:
    """A key name part that says nothing of what it names (provider, API key, model)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:24]


class Connection:
    """The client of one run, and who to tell when the server is lost.

    ``on_lost`` callbacks run once, on the first failure, in the order added.
    """

    def __init__(self, client: aioredis.Redis, settings: CoordinationSettings) -> None:
        self.client = client
        self.settings = settings
        self._on_lost: list[Callable[[CoordinationLostError], None]] = []
        self.lost_error: CoordinationLostError | None = None
        self.server_offset_s = 0.0  # the server's TIME minus this host's, at connect

    def server_wall(self, local_wall: float) -> float:
        """This host's wall time ``local_wall`` on the server's clock (periods of shared
        budgets follow the server, not each host)."""
        return local_wall + self.server_offset_s

    def on_lost(self, callback: Callable[[CoordinationLostError], None]) -> None:
        self._on_lost.append(callback)

    def lost(self, exc: BaseException, doing: str) -> CoordinationLostError:
        """The error for a failure while ``doing``; the first one is told to ``on_lost``."""
        if self.lost_error is not None:
            return self.lost_error
        error = CoordinationLostError(
            f"lost Redis at {self.settings.shown_url} while {doing} ({_reason(exc)}): the run "
            "admits no more calls, so that no process runs past the shared limits and budgets",
            where=self.settings.source,
            hint="bring Redis back (check `redis-cli -u URL ping`), then resume the run with "
            "`aoe run --resume RUN_ID`; calls in flight stay counted as unconfirmed",
        )
        self.lost_error = error
        for callback in self._on_lost:
            callback(error)
        return error

    async def aclose(self) -> None:
        await self.client.aclose()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def client_for(settings: CoordinationSettings) -> aioredis.Redis:
    """redis-py's asyncio client for ``settings`` (no I/O yet).

    Its pool blocks a caller while all ``MAX_CONNECTIONS`` are busy (instead of failing),
    and a command that fails on a broken connection is retried on a new one for about
    ``RECONNECT_S``: a server restart rides through; a longer outage is a lost server.
    """
    try:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RECONNECT_RETRIES),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, BusyLoadingError],
        )
    except ValueError as exc:
        raise CoordinationUnavailableError(
            f"the Redis URL {settings.shown_url} is not valid: {_reason(exc)}",
            where=settings.source,
            hint="write redis://HOST:PORT/DB (rediss:// for TLS, unix:///PATH for a socket)",
        ) from None
    return aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it


async def connect(settings: CoordinationSettings, *, clock: Clock | None = None) -> Connection:
    """Open the client and ping the server; ``CoordinationUnavailableError`` if it is not up.

    Also reads the server's ``TIME`` against ``clock``'s wall time (``server_offset_s``).
    """
    wall = (clock or SystemClock()).wall
    client = client_for(settings)
    try:
        await client.ping()
        info = await client.info("server")
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await client.aclose()
        raise CoordinationUnavailableError(
            f"cannot reach Redis at {settings.shown_url}: {_reason(exc)}; the run needs it to "
            "share rate limits, budgets and run leases with other processes, and does not "
            "start without it (nothing was spent)",
            where=settings.source,
            hint=f"start Redis there (`redis-server`), fix the URL, or unset {REDIS_URL_ENV} and "
            "coordination.redis_url to run on this process's own limits",
        ) from None
    except RedisError as exc:  # refused: auth, ACL, protocol
        await client.aclose()
        raise CoordinationUnavailableError(
            f"Redis at {settings.shown_url} refused aoe: {_reason(exc)}",
            where=settings.source,
            hint="check the user and password in the URL and the server's ACL",
        ) from None
    version = str(info.get("redis_version", "0"))
    if int(version.split(".", maxsplit=1)[0] or 0) < 6:
        await client.aclose()
        raise CoordinationUnavailableError(
            f"Redis at {settings.shown_url} is version {version}; aoe needs 6.2 or newer "
            "(its scripts read the server's TIME and then write)",
            where=settings.source,
            hint="upgrade Redis (Debian 12 ships 7.0)",
        )
    conn = Connection(client, settings)
    before = wall()
    seconds, micros = await client.time()
    conn.server_offset_s = seconds + micros / 1e6 - (before + wall()) / 2
    return conn
