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

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, NoScriptError, RedisError
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

    #: False sends every script run on its own round trip (bench/bench_redis.py measures
    #: what batching buys against it).
    batching: ClassVar[bool] = True

    def __init__(self, client: aioredis.Redis, settings: CoordinationSettings) -> None:
        self.client = client
        self.settings = settings
        self._on_lost: list[Callable[[CoordinationLostError], None]] = []
        self.lost_error: CoordinationLostError | None = None
        self.server_offset_s = 0.0  # the server's TIME minus this host's, at connect
        self.round_trips = 0  # network round trips that ran scripts (pipelines count once)
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run_script(
        self, script: AsyncScript, keys: Sequence[str | bytes], args: Sequence[str | bytes]
    ) -> Any:
        """Run ``script`` on the server, sharing one round trip with every other script run
        asked for in the same turn of the event loop.

        Each script still runs whole and alone on the server (Redis runs a script to
        completion before any other command), so batching changes no guarantee: it only
        sends the scripts of one loop turn (e.g. the settles of 30 calls that ended
        together) as one non-transactional pipeline, one write and one read instead of one
        each. Each caller gets its own script's answer or error: a script that fails does
        not fail the others; a connection that fails (after redis-py's retries) fails every
        script of the batch with that error, as it would have failed each alone.
        """
        if not self.batching:
            self.round_trips += 1
            return await script(keys=list(keys), args=list(args))
        loop = asyncio.get_running_loop()
        entry = _Pending(script, keys, args, loop.create_future())
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(entry)
        return await entry.future

    def _flush(self) -> None:
        batch = [e for e in self._pending if not e.future.done()]  # cancelled: never sent
        self._pending = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        self.round_trips += 1
        results: list[Any]
        try:
            if len(batch) == 1:
                e = batch[0]
                results = [await e.script(keys=list(e.keys), args=list(e.args))]
            else:
                results = await self._pipeline(batch)
        except BaseException as exc:  # the connection failed: every script of it fails
            for e in batch:
                if not e.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        e.future.cancel()
                    else:
                        e.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for e, result in zip(batch, results, strict=True):
            if e.future.done():
                continue
            if isinstance(result, Exception):
                e.future.set_exception(result)
            else:
                e.future.set_result(result)

    async def _pipeline(self, batch: list[_Pending]) -> list[Any]:
        """One pipeline of EVALSHA; scripts the server does not know yet (a restarted
        server forgot them; NOSCRIPT means the script did not run) are loaded and sent
        again, the rest keep their answers."""
        pipe = self.client.pipeline(transaction=False)
        for e in batch:
            pipe.evalsha(e.script.sha, len(e.keys), *e.keys, *e.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for script in {id(batch[i].script): batch[i].script for i in missing}.values():
                await self.client.script_load(script.script)
            pipe = self.client.pipeline(transaction=False)
            for i in missing:
                e = batch[i]
                pipe.evalsha(e.script.sha, len(e.keys), *e.keys, *e.args)
            again: list[Any] = await pipe.execute(raise_on_error=False)
            self.round_trips += 1
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

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
        """Let the round trips already sent finish, then close the client."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await self.client.aclose()


class _Pending:
    __slots__ = ("args", "future", "keys", "script")

    def __init__(
        self,
        script: AsyncScript,
        keys: Sequence[str | bytes],
        args: Sequence[str | bytes],
        future: asyncio.Future[Any],
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.future = future


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
