"""Rate limits of a provider key shared by every process: ``aoe.ratelimit`` kept in Redis.

The semantics are the in-memory limiter's (``aoe.ratelimit``, read it first): sliding-window
logs per tier, all tiers taken at once or none, ``settle`` corrects tokens, ``release``
gives everything back, provider headers hold a tier to its ``remaining`` or teach a
per-minute tier of the model's own lane, a 429's retry-after pauses or closes the key,
concurrency is learned from 429s (halved, then raised by one every 100 clean calls). What
changes is where the state lives: in Redis, under keys named by a hash of the provider,
its endpoint and its API key (never the key itself), changed only by ``lua/limiter.lua``,
one round trip per operation. So every process on a key sees every other's grants, pauses,
closures and learned concurrency at its next operation.

- **One script, all tiers.** ``acquire`` runs the script once: it drops what left each
  window, checks concurrency, the pause and every tier, and either takes from all of them
  or answers how long to wait (or that only a freed slot can help). The model's lane (the
  tiers its headers taught) is part of the same script, so key and lane are taken together
  (the in-memory ``ModelLimiter`` needs two steps for that; one script needs none).
- **The server's clock.** Windows, pauses and permit expiries are stamped with Redis
  ``TIME``, so hosts whose clocks disagree still share one window. (Tests pass a clock.)
- **Permits that expire.** A grant is a concurrency permit held until ``settle`` or
  ``release``, with an expiry ``permit_ttl_s`` ahead that this process renews every third of
  it while the call runs. A process killed mid-call stops renewing; its permits free
  themselves at expiry. What it took from the windows stays counted (the provider may have
  counted it too).
- **Waiting without a storm.** Within a process, waiters are served by priority, then
  arrival, by one pump per key that runs the script for the head only. It sleeps until the
  script's answer says the head could fit, or until a message on the key's wake channel
  (published by every settle, release and header reading of any process), or at most
  ``WAKE_POLL_S`` (a lost message, a pub/sub connection down) — never a tight loop.
- **Redis lost.** ``acquire`` raises ``CoordinationLostError`` (no call is admitted without
  the shared limits); ``settle``, ``release`` and the rest record the loss and return, so the
  call that already ran is still recorded; its permit expires on the server by itself.

``stats()`` is a synchronous readout for the live view: the key's state as of this
process's last round trip (every script answers with it), with this process's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from redis.exceptions import RedisError

from aoe.clock import Clock
from aoe.coordination.connection import KEY_PREFIX, Connection, CoordinationLostError, key_hash
from aoe.coordination.scripts import lua_source
from aoe.coordination.wake import Wakeups
from aoe.errors import ConfigError, RateLimitClosedError, RateLimitKind, RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.ratelimit import (
    _TIERS as TIERS,  # the same tiers, in the same order, as the in-memory limiter
)
from aoe.ratelimit import (
    LEARNED_PERIOD_S,
    WINDOW_MARGIN_S,
    LimiterStats,
    Reservation,
    TierStats,
    Waiter,
)
from aoe.retry import MAX_RETRY_AFTER_S
from aoe.spec.models import Config, LimitsSpec

__all__ = ["WAKE_POLL_S", "RedisLimiter", "RedisLimiters"]

#: The longest a waiter sleeps without asking Redis again: what a lost wake message (or a
#: pub/sub connection being re-made) can cost it. One round trip a second per waiting key
#: and process is no storm.
WAKE_POLL_S: Final = 1.0

_EPS_S = 1e-6


def _text(value: float | int | None) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one script run said: its head, then the key's readout."""

    head: tuple[str, ...]
    status: tuple[str, ...]


class RedisLimiter:
    """The limits of one provider key (or a model with ``model_limits``) and one model's lane.

    ``key_id`` and ``lane_id`` are hashes: the key's state is shared by every model of it,
    the lane's by every process calling that model on it.
    """

    def __init__(
        self,
        conn: Connection,
        limits: LimitsSpec,
        *,
        name: str,
        key_id: str,
        lane_id: str,
        clock: Clock,
        wakeups: Wakeups,
        permit_ttl_s: float = 30.0,
        window_margin_s: float = WINDOW_MARGIN_S,
        close_over_s: float = MAX_RETRY_AFTER_S,
        server_time: bool = True,
    ) -> None:
        """``server_time`` False stamps with ``clock.now()`` instead of Redis ``TIME`` (tests
        that drive every process from one fake clock)."""
        self.name = name
        self._conn = conn
        self._clock = clock
        self._ttl = permit_ttl_s
        self._close_over_s = close_over_s
        self._server_time = server_time
        self._limits = limits
        self._configured = [
            (field, limit, period + window_margin_s, counts_tokens)
            for field, period, counts_tokens in TIERS
            if (limit := getattr(limits, field)) is not None
        ]
        base = f"{KEY_PREFIX}:{{{key_id}}}"  # {hash tag}: one cluster slot for a key's script
        lane = f"{base}:lane:{lane_id}"
        self._keys = [
            f"{base}:state",
            f"{base}:entries",
            f"{base}:permits",
            f"{base}:refused",
            f"{lane}:state",
            f"{lane}:entries",
            *(f"{base}:log:{field}" for field, *_ in self._configured),
            f"{lane}:log:rl",
            f"{lane}:log:tl",
        ]
        self._channel = f"{base}:wake"
        tiers: list[str] = [str(len(self._configured))]
        for field, limit, period, counts_tokens in self._configured:
            tiers += [field, str(limit), repr(period), "1" if counts_tokens else "0"]
        self._argv_tail = [
            *tiers,
            _text(limits.concurrent_requests),
            repr(LEARNED_PERIOD_S + window_margin_s),
        ]
        # Encoded once: every round trip sends them (about 20 arguments a script run), and
        # redis-py encodes bytes for free.
        self._keys_b = [k.encode() for k in self._keys]
        self._argv_fixed: list[bytes] = [
            self._channel.encode(),
            *(a.encode() for a in self._argv_tail),
        ]
        self._script = conn.client.register_script(lua_source("limiter"))
        self._wakeups = wakeups
        self._open: dict[int, int] = {}  # grant id -> tokens, renewed while held
        self._seq = itertools.count()
        self._queue: list[tuple[int, int, Waiter]] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._alarm: asyncio.Future[None] | None = None  # the waiter loop's pending timer
        self._waits = 0
        self._wait_s_total = 0.0
        self._status: tuple[str, ...] = ()
        self._status_at = 0.0
        wakeups.subscribe(self._channel, self._kick)

    # -- the protocol ----------------------------------------------------------------------

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation:
        """As ``RateLimiter.acquire``; ``CoordinationLostError`` if Redis does not answer."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        self._check_can_ever_fit(tokens)
        now = self._clock.now()
        if not self._queue:
            answer = await self._try(tokens)
            if answer.head[0] == "granted":
                return self._granted(answer, tokens, 0.0)
            self._raise_final(answer)
            if timeout_s is not None and (
                timeout_s <= 0 or (answer.head[1] == "paused" and float(answer.head[2]) > timeout_s)
            ):
                raise self._timeout_error(tokens, 0.0)
        elif timeout_s is not None and timeout_s <= 0:
            raise self._timeout_error(tokens, 0.0)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout_s is None else now + timeout_s
        waiter = Waiter(tokens, now, deadline, loop.create_future())
        heapq.heappush(self._queue, (-priority, next(self._seq), waiter))
        self._waits += 1
        self._start_pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                await self.release(fut.result())  # granted just as we were cancelled
            else:
                fut.cancel()
                self._kick()
            raise

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """As ``RateLimiter.settle``: correct the token tiers, free the permit, vouch."""
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
        self._close(reservation)
        await self._quiet(
            "settle", str(reservation.id), str(reservation.tokens), str(actual_tokens)
        )
        self._kick()

    async def release(self, reservation: Reservation) -> None:
        """Give back everything a call took that never reached the provider."""
        self._close(reservation)
        await self._quiet("release", str(reservation.id))
        self._kick()

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        """As ``RateLimiter.observe``, for every process on this key and model at once."""
        await self._quiet(
            "observe",
            _text(snapshot.limit_requests),
            _text(snapshot.remaining_requests),
            _text(snapshot.reset_requests_s),
            _text(snapshot.limit_tokens),
            _text(snapshot.remaining_tokens),
            _text(snapshot.reset_tokens_s),
        )
        self._kick()

    async def pause(self, seconds: float) -> None:
        """Pause (or, past ``close_over_s``, close) the key for every process."""
        await self._quiet("pause", repr(float(seconds)), repr(self._close_over_s))
        self._after_pause()

    async def note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind = "rate_limit",
        retry_after_s: float | None = None,
    ) -> None:
        """As ``RateLimiter.note_429``: count it, maybe lower the shared concurrency, pause."""
        await self._quiet(
            "note429",
            str(reservation.id),
            kind,
            _text(retry_after_s),
            repr(self._close_over_s),
            "0",
        )
        self._after_pause()

    def stats(self) -> LimiterStats:
        """The key as of this process's last round trip, with this process's queue."""
        s = self._status
        queued = sum(1 for _, _, w in self._queue if not w.future.done())
        if not s:
            return LimiterStats(
                self.name, (), len(self._open), self._limits.concurrent_requests, queued,
                self._waits, self._wait_s_total, 0, 0.0,
            )  # fmt: skip
        since = self._clock.now() - self._status_at
        tiers = tuple(
            TierStats(s[i], int(s[i + 1]), int(s[i + 2]), float(s[i + 3]))
            for i in range(5, len(s) - 3, 4)
        )
        return LimiterStats(
            name=self.name,
            tiers=tiers,
            in_flight=int(s[0]),
            concurrency_limit=self._limits.concurrent_requests,
            queued=queued,
            waits=self._waits,
            wait_s_total=self._wait_s_total,
            rate_limited=int(s[4]),
            paused_for_s=max(0.0, float(s[2]) - since),
            learned_concurrency=int(s[1]) if s[1] else None,
            closed_for_s=max(0.0, float(s[3]) - since),
        )

    async def refresh_stats(self) -> LimiterStats:
        """Read the key's state now (one round trip) and return ``stats()``."""
        await self._run("stats")
        return self.stats()

    async def aclose(self) -> None:
        """Stop this process's tasks (its permits expire on the server if still open)."""
        for task in (self._pump_task, self._renew_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._wakeups.unsubscribe(self._channel, self._kick)

    # -- round trips -----------------------------------------------------------------------

    async def _run(self, op: str, *args: str) -> _Answer:
        if self._conn.lost_error is not None:  # the run is stopping: no more round trips
            raise self._conn.lost_error
        now = "" if self._server_time else repr(self._clock.now())
        argv: list[str | bytes] = [op, now, *self._argv_fixed, *args]
        try:
            raw: Sequence[bytes] = await self._conn.run_script(self._script, self._keys_b, argv)
        except (RedisError, OSError) as exc:
            raise self._conn.lost(exc, f"{op} on the rate limits of {self.name}") from exc
        reply = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
        size = {"ok": 1, "never": 4}.get(reply[0], 3)
        self._status, self._status_at = reply[size:], self._clock.now()
        return _Answer(reply[:size], reply[size:])

    async def _quiet(self, op: str, *args: str) -> None:
        """A round trip after the call: a lost server was reported, the run goes on."""
        with contextlib.suppress(CoordinationLostError):
            await self._run(op, *args)

    async def _try(self, tokens: int) -> _Answer:
        return await self._run("acquire", str(tokens), repr(self._ttl))

    def _granted(self, answer: _Answer, tokens: int, waited_s: float) -> Reservation:
        rid = int(answer.head[1])
        self._open[rid] = tokens
        if self._renew_task is None or self._renew_task.done():
            self._renew_task = asyncio.get_running_loop().create_task(self._renew())
        return Reservation(rid, self.name, tokens, self._clock.now(), waited_s)

    def _close(self, reservation: Reservation) -> None:
        if reservation.limiter != self.name or self._open.pop(reservation.id, None) is None:
            raise ValueError(f"reservation {reservation.id} is not open on {self.name}")

    async def _renew(self) -> None:
        """Push the expiry of this process's open permits while they are held."""
        while self._open:
            await self._clock.sleep(self._ttl / 3)
            if self._open:
                try:
                    await self._run("renew", repr(self._ttl), *map(str, self._open))
                except CoordinationLostError:
                    return

    # -- waiting ---------------------------------------------------------------------------

    def _raise_final(self, answer: _Answer) -> None:
        kind = answer.head[0]
        if kind == "closed":
            left = float(answer.head[1])
            raise RateLimitClosedError(
                self.name, opens_at=self._clock.wall() + left, retry_after_s=left
            )
        if kind == "never":
            raise ConfigError(
                f"a call to {self.name} needs {answer.head[3]} from {answer.head[1]} but its "
                f"limit is {answer.head[2]} (the provider's headers say so): it can never be "
                "sent",
                hint="lower max_tokens",
            )

    def _start_pump(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._pump_task
        if task is None or task.done() or task.get_loop() is not loop:
            self._pump_task = loop.create_task(self._pump())
        else:
            self._kick()

    def _kick(self) -> None:
        """Wake the waiter loop, and end its timer at once: a timer left to run until the
        loop's next turn is a sleeper a skipping test clock could jump to."""
        self._wake.set()
        if self._alarm is not None and not self._alarm.done():
            self._alarm.cancel()

    def _after_pause(self) -> None:
        s = self._status
        if s and float(s[3]) > 0:  # closed: every waiter here fails now, as in memory
            self._kick()

    async def _pump(self) -> None:
        """The waiter loop: run the script for the head; sleep until told or it could fit."""
        try:
            while True:
                now = self._clock.now()
                self._expire(now)
                queue = self._queue
                while queue and queue[0][2].future.done():
                    heapq.heappop(queue)
                if not queue:
                    return
                entry = queue[0]
                head = entry[2]
                self._wake.clear()
                answer = await self._try(head.tokens)
                if answer.head[0] == "granted":
                    if entry in queue:  # a higher priority may have arrived meanwhile
                        queue.remove(entry)
                        heapq.heapify(queue)
                    waited = self._clock.now() - head.enqueued_at
                    grant = self._granted(answer, head.tokens, waited)
                    if head.future.done():  # cancelled or timed out during the round trip
                        await self.release(grant)
                    else:
                        self._wait_s_total += waited
                        head.future.set_result(grant)
                    continue
                try:
                    self._raise_final(answer)
                except RateLimitClosedError as closed:
                    self._fail_all(closed)
                    continue
                except ConfigError as never:
                    if not head.future.done():
                        head.future.set_exception(never)
                    continue
                wait = float(answer.head[2])
                sleep = WAKE_POLL_S if wait < 0 else min(wait, WAKE_POLL_S)
                first = min(
                    (w.deadline for _, _, w in queue if not w.future.done()), default=math.inf
                )
                sleep = max(_EPS_S, min(sleep, first - self._clock.now()))
                await self._sleep(sleep)
        except BaseException as exc:  # never strand waiters (Redis lost, a bug, cancelled)
            if isinstance(exc, asyncio.CancelledError):
                self._fail_all(exc)
                raise
            self._fail_all(exc)
            if not isinstance(exc, CoordinationLostError):
                raise

    def _fail_all(self, error: BaseException) -> None:
        for _, _, waiter in self._queue:
            if not waiter.future.done():
                if isinstance(error, asyncio.CancelledError):
                    waiter.future.cancel()
                else:
                    waiter.future.set_exception(error)
        self._queue.clear()

    def _expire(self, now: float) -> None:
        for _, _, waiter in self._queue:
            if waiter.deadline <= now + _EPS_S and not waiter.future.done():
                waited = now - waiter.enqueued_at
                self._wait_s_total += waited
                waiter.future.set_exception(self._timeout_error(waiter.tokens, waited))

    async def _sleep(self, seconds: float) -> None:
        """Until ``seconds`` pass on the clock or a kick (a wake message, a settle here)."""
        alarm = self._alarm = asyncio.ensure_future(self._clock.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((alarm, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._alarm = None
            for task in (alarm, woken):
                if not task.done():
                    task.cancel()

    # -- checks and messages ---------------------------------------------------------------

    def _check_can_ever_fit(self, tokens: int) -> None:
        for field, limit, _, counts_tokens in self._configured:
            amount = tokens if counts_tokens else 1
            if amount > limit:
                raise ConfigError(
                    f"a call to {self.name} needs {amount} from {field} but its limit is "
                    f"{limit} ({amount - limit} over): it can never be sent",
                    hint=f"lower max_tokens or raise {field} for {self.name} in aoe.yaml",
                )
        concurrent = self._limits.concurrent_requests
        if concurrent is not None and concurrent < 1:
            raise ConfigError(
                f"concurrent_requests for {self.name} is {concurrent}: no call can ever be sent",
                hint=f"set concurrent_requests for {self.name} to at least 1 in aoe.yaml",
            )

    def _timeout_error(self, tokens: int, waited_s: float) -> RateLimitTimeoutError:
        stats = self.stats()
        busy = [f"{t.name} {t.used}/{t.limit}" for t in stats.tiers]
        cap = stats.learned_concurrency or stats.concurrency_limit
        if cap is not None:
            busy.append(f"concurrent_requests {stats.in_flight}/{cap} (all processes)")
        if stats.paused_for_s > 0:
            busy.append(f"paused for {stats.paused_for_s:.1f} s after a 429")
        return RateLimitTimeoutError(
            f"waited {waited_s:.1f} s for {self.name} rate limits (1 request + {tokens} tokens), "
            f"shared through Redis; in use: {', '.join(busy) or 'nothing'}",
            hint="raise the limits in aoe.yaml if your account allows, or lower the parallelism "
            "of the processes sharing the key",
        )


class RedisLimiters:
    """``LimiterSource`` of a fleet: one ``RedisLimiter`` per provider key and model.

    A key is named by a hash of the provider's name, its endpoint and the value of its API
    key variable: processes with the same key share limits, another key has its own.
    """

    def __init__(
        self,
        conn: Connection,
        config: Config,
        *,
        clock: Clock,
        wakeups: Wakeups,
        environ: Callable[[str], str | None] = os.environ.get,
        server_time: bool = True,
        window_margin_s: float = WINDOW_MARGIN_S,
    ) -> None:
        self._conn = conn
        self._config = config
        self._clock = clock
        self._wakeups = wakeups
        self._env = environ
        self._server_time = server_time
        self._margin = window_margin_s
        self._views: dict[tuple[str, str], RedisLimiter] = {}

    def for_model(self, provider: str, model: str) -> RedisLimiter:
        view = self._views.get((provider, model))
        if view is not None:
            return view
        pc = self._config.providers.get(provider)
        if pc is None:
            known = ", ".join(sorted(self._config.providers)) or "none"
            raise ConfigError(
                f"no provider {provider!r} is configured (known: {known})",
                hint="add it under providers: in aoe.yaml",
            )
        secret = (self._env(pc.api_key_env) or "") if pc.api_key_env else ""
        key = key_hash(provider, pc.base_url or "", secret)
        if model in pc.model_limits:
            name, limits = f"{provider}/{model}", pc.model_limits[model]
            key_id, lane_id = key_hash(key, model), "own"
        else:
            name, limits = provider, pc.limits
            key_id, lane_id = key, key_hash(model)
        view = RedisLimiter(
            self._conn,
            limits,
            name=name,
            key_id=key_id,
            lane_id=lane_id,
            clock=self._clock,
            wakeups=self._wakeups,
            permit_ttl_s=self._conn.settings.permit_ttl_s,
            server_time=self._server_time,
            window_margin_s=self._margin,
        )
        self._views[(provider, model)] = view
        return view

    def all_stats(self) -> tuple[LimiterStats, ...]:
        """One readout per key (its freshest), by name."""
        best: dict[str, LimiterStats] = {}
        for view in self._views.values():
            stats = view.stats()
            if stats.name not in best or stats.waits > best[stats.name].waits:
                best[stats.name] = stats
        return tuple(best[name] for name in sorted(best))

    async def aclose(self) -> None:
        for view in self._views.values():
            await view.aclose()
