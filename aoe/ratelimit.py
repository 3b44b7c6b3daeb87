"""Multi-tier rate limits per provider key: one acquisition takes from every tier, or from none.

Each tier (requests per minute/hour/day, tokens per minute/day) is a **sliding-window log**:
it remembers what it granted, when, and never lets any window of one period hold more than
the limit. A token bucket (or GCRA) of capacity L refilling at L per period would allow up to
2L in one window (a full bucket spent at once, then the refill); a provider that counts by
window would answer 429. The log is exact, never looser than the provider's own bucket, and
reaches 100 % of the limit in steady use. It keeps one entry per grant (not per token), and
settling adjusts that entry, so a window is judged by what calls really used.

One ``RateLimiter`` per provider key (or per model, see ``RateLimiterRegistry``):

- ``acquire(tokens)`` takes 1 request, ``tokens`` tokens and a concurrency slot from every
  tier at once. It never holds one tier while waiting on another, so a wait that times out
  leaves every tier exactly as it was.
- Waiters are served strictly in order of priority (higher first), then arrival, by one
  waiter loop that sleeps on the injected clock until the head can fit, a deadline passes,
  or capacity comes back. No polling.
- ``settle`` corrects the token tiers with the true usage; ``release`` gives everything back.
- ``observe`` lowers the local tiers to what the provider's headers say is left; ``pause``
  (a 429 with retry-after) blocks every caller of the key.

Everything runs on one event loop and no method but ``acquire`` ever suspends: the others
are ``async`` only because a limiter shared through a network store (``aoe.services``)
must round-trip for them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass

from aoe.clock import Clock
from aoe.errors import ConfigError, RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.spec.models import Config, LimitsSpec

__all__ = [
    "LimiterStats",
    "RateLimiter",
    "RateLimiterRegistry",
    "Reservation",
    "TierStats",
]

# Float time lines round (a monotonic clock of weeks, FakeClock steps of 0.1), so a moment
# counts as reached _EPS_S before it: an entry leaves its window at ``granted_at + period -
# _EPS_S``, and the waiter loop wakes half of that earlier, so a sleep to exactly the expiry
# (or a FakeClock advanced to it) always finds it expired, and every sleep is > 0.
_EPS_S = 1e-6

# A grant reaches the provider a little after we make it (network, queueing), so the
# provider's window sees it later than ours did. Each window is this much longer than its
# period so that no provider-side window ever holds more than the limit; it costs about
# 1.6 % of a per-minute limit's throughput.
WINDOW_MARGIN_S = 1.0

# (field of LimitsSpec, period in seconds, counts tokens?), shortest period first per kind.
_TIERS: tuple[tuple[str, float, bool], ...] = (
    ("requests_per_minute", 60.0, False),
    ("requests_per_hour", 3600.0, False),
    ("requests_per_day", 86400.0, False),
    ("tokens_per_minute", 60.0, True),
    ("tokens_per_day", 86400.0, True),
)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one ``acquire`` granted; hand it back to ``settle`` or ``release`` exactly once."""

    id: int
    limiter: str
    tokens: int
    granted_at: float
    waited_s: float


@dataclass(frozen=True, slots=True)
class TierStats:
    """One tier's use in the current window."""

    name: str
    used: int
    limit: int
    period_s: float


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """A limiter's readout for the live view: tiers, waiting and the 429s the key got."""

    name: str
    tiers: tuple[TierStats, ...]
    in_flight: int
    concurrency_limit: int | None
    queued: int
    waits: int
    wait_s_total: float
    rate_limited: int
    paused_for_s: float


class _Entry:
    """One grant in a tier's log; ``amount`` changes when the call is settled.

    ``hold`` is the generation of the provider hold it was counted against (0: none).
    """

    __slots__ = ("amount", "hold", "t")

    def __init__(self, t: float, amount: int, hold: int) -> None:
        self.t = t
        self.amount = amount
        self.hold = hold


class _Tier:
    """A sliding-window log (``used``: amounts granted in the last period), plus the
    provider's word: at most ``hold_left`` more until ``hold_until`` (-inf: no hold)."""

    __slots__ = (
        "counts_tokens",
        "hold_gen",
        "hold_left",
        "hold_until",
        "limit",
        "log",
        "name",
        "period_s",
        "used",
    )

    def __init__(self, name: str, limit: int, period_s: float, counts_tokens: bool) -> None:
        self.name = name
        self.limit = limit
        self.period_s = period_s
        self.counts_tokens = counts_tokens
        self.log: deque[_Entry] = deque()
        self.used = 0
        self.hold_until = -math.inf
        self.hold_left = 0
        self.hold_gen = 0

    def refresh(self, now: float) -> None:
        """Drop grants that left the window and a hold that reached its reset."""
        cutoff = now - self.period_s + _EPS_S
        log = self.log
        while log and log[0].t <= cutoff:
            self.used -= log.popleft().amount
        if self.hold_until <= now + _EPS_S:
            self.hold_until = -math.inf

    def in_use(self, now: float) -> int:
        """What counts against the limit at ``now``, without touching the log: ``stats`` may
        be read from another thread (a metrics scrape) while the loop changes it."""
        cutoff = now - self.period_s + _EPS_S
        expired = 0
        for entry in self.log:
            if entry.t > cutoff:
                break
            expired += entry.amount
        room = self.limit - (self.used - expired)
        if self.hold_until > now + _EPS_S and self.hold_left < room:
            room = self.hold_left
        return self.limit - room

    def room(self) -> int:
        """What may still be granted now (call ``refresh`` first)."""
        room = self.limit - self.used
        if self.hold_until != -math.inf and self.hold_left < room:
            return self.hold_left
        return room

    def take(self, now: float, amount: int) -> _Entry:
        held = self.hold_until != -math.inf
        entry = _Entry(now, amount, self.hold_gen if held else 0)
        self.log.append(entry)
        self.used += amount
        if held:
            self.hold_left -= amount
        return entry

    def set_hold(self, until: float, left: int) -> None:
        self.hold_gen += 1
        self.hold_until, self.hold_left = until, left

    def live(self, entry: _Entry, now: float) -> bool:
        return entry.t > now - self.period_s + _EPS_S

    def ready_at(self, amount: int) -> float:
        """When ``amount`` fits by time alone (call ``refresh`` first)."""
        at = -math.inf
        if self.hold_until != -math.inf and amount > self.hold_left:
            at = self.hold_until
        excess = self.used + amount - self.limit
        if excess <= 0:
            return at
        freed = 0
        for entry in self.log:
            freed += entry.amount
            if freed >= excess:
                return max(at, entry.t + self.period_s)
        return math.inf


class _Waiter:
    __slots__ = ("deadline", "enqueued_at", "future", "tokens")

    def __init__(
        self, tokens: int, enqueued_at: float, deadline: float, future: asyncio.Future[Reservation]
    ) -> None:
        self.tokens = tokens
        self.enqueued_at = enqueued_at
        self.deadline = deadline
        self.future = future


class RateLimiter:
    """All the limits of one provider key (or model), taken atomically."""

    def __init__(
        self,
        limits: LimitsSpec,
        *,
        clock: Clock,
        name: str,
        window_margin_s: float = WINDOW_MARGIN_S,
    ) -> None:
        """``window_margin_s`` lengthens every window (see ``WINDOW_MARGIN_S``); 0 is exact."""
        self.name = name
        self._clock = clock
        tiers = [
            _Tier(field, limit, period + window_margin_s, counts_tokens)
            for field, period, counts_tokens in _TIERS
            if (limit := getattr(limits, field)) is not None
        ]
        self._tiers: tuple[_Tier, ...] = tuple(tiers)
        self._request_tiers = tuple(t for t in tiers if not t.counts_tokens)
        self._token_tiers = tuple(t for t in tiers if t.counts_tokens)
        self._max_concurrent = limits.concurrent_requests
        self._in_flight = 0
        self._paused_until = -math.inf
        self._open: dict[int, tuple[_Entry, ...]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._queue: list[tuple[int, int, _Waiter]] = []  # (-priority, seq, waiter)
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._waits = 0
        self._wait_s_total = 0.0
        self._rate_limited = 0

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation:
        """Take 1 request, ``tokens`` tokens and a concurrency slot from every tier, or wait.

        Raises ``ConfigError`` at once when the request can never fit a tier (more tokens
        than a tier's whole limit), and ``RateLimitTimeoutError`` when it has not fitted
        after ``timeout_s`` (nothing is taken in either case).
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        self._check_can_ever_fit(tokens)
        now = self._clock.now()
        if not self._queue and now + _EPS_S >= self._paused_until and self._fits(now, tokens):
            return self._grant(now, tokens, 0.0)
        if timeout_s is not None and (timeout_s <= 0 or self._paused_until > now + timeout_s):
            # no capacity can come back before the deadline: say so now, not at the deadline
            raise self._timeout_error(tokens, 0.0)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout_s is None else now + timeout_s
        waiter = _Waiter(tokens, now, deadline, loop.create_future())
        seq = next(self._seq)
        heapq.heappush(self._queue, (-priority, seq, waiter))
        if timeout_s is not None:
            heapq.heappush(self._deadlines, (deadline, seq, waiter))
        self._waits += 1
        self._kick_or_start()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(fut.result())  # granted just as we were cancelled
            else:
                fut.cancel()
                self._kick()
            raise

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Correct the token tiers to what the call really used and free its slot.

        A refund lowers the grant's entry; extra usage raises it (the tier may run over its
        limit, and new grants wait until that usage leaves the window). If the grant already
        left the window, extra usage is charged now, a refund changes nothing.
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
        entries = self._close(reservation)
        delta = actual_tokens - reservation.tokens
        if delta and self._token_tiers:
            now = self._clock.now()
            base = len(self._request_tiers)
            for i, tier in enumerate(self._token_tiers):
                entry = entries[base + i]
                tier.refresh(now)
                if delta > 0 and tier.hold_until != -math.inf:
                    tier.hold_left -= delta  # the provider counts it too; refunds stay held
                if tier.live(entry, now):
                    entry.amount += delta
                    tier.used += delta
                elif delta > 0:
                    tier.take(now, delta)
        if self._queue:
            self._kick()

    async def release(self, reservation: Reservation) -> None:
        """Give back everything a call took that never reached the provider."""
        self._give_back(reservation)

    def _give_back(self, reservation: Reservation) -> None:
        entries = self._close(reservation)
        now = self._clock.now()
        for tier, entry in zip(self._request_tiers + self._token_tiers, entries, strict=True):
            tier.refresh(now)
            if tier.hold_until != -math.inf and entry.hold == tier.hold_gen:
                tier.hold_left += entry.amount  # the provider never counted it either
            if tier.live(entry, now):
                tier.used -= entry.amount
                entry.amount = 0
        if self._queue:
            self._kick()

    # -- what the provider says ----------------------------------------------------------------

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        """Grant at most the provider's ``remaining`` until its reset, on top of our window.

        Applies to the tier whose limit matches the header's (else the shortest one). The
        newest reading replaces an older hold (the provider has refilled since); the
        window log still applies, so a hold only ever tightens. Grants under a hold count
        against it; a release gives back to it (that call never reached the provider), a
        refund on settle does not (the conservative side). Calls in flight when the
        headers arrive are taken as already counted by the provider.
        """
        now = self._clock.now()
        self._tighten(
            self._request_tiers,
            snapshot.limit_requests,
            snapshot.remaining_requests,
            snapshot.reset_requests_s,
            now,
        )
        self._tighten(
            self._token_tiers,
            snapshot.limit_tokens,
            snapshot.remaining_tokens,
            snapshot.reset_tokens_s,
            now,
        )
        if self._queue:
            self._kick()  # a fresher reading may have dropped a hold the queue waits on

    async def pause(self, seconds: float) -> None:
        """Block every acquire on this key for ``seconds`` (a 429's retry-after)."""
        self._paused_until = max(self._paused_until, self._clock.now() + max(0.0, seconds))

    async def note_429(self, retry_after_s: float | None = None) -> None:
        """Count a 429 for the stats; with ``retry_after_s``, also pause the key."""
        self._rate_limited += 1
        if retry_after_s is not None:
            await self.pause(retry_after_s)

    def stats(self) -> LimiterStats:
        """A frozen readout of every tier, the queue, waits and 429s; changes nothing."""
        now = self._clock.now()
        tiers = [TierStats(t.name, t.in_use(now), t.limit, t.period_s) for t in self._tiers]
        return LimiterStats(
            name=self.name,
            tiers=tuple(tiers),
            in_flight=self._in_flight,
            concurrency_limit=self._max_concurrent,
            queued=sum(1 for _, _, w in self._queue if not w.future.done()),
            waits=self._waits,
            wait_s_total=self._wait_s_total,
            rate_limited=self._rate_limited,
            paused_for_s=max(0.0, self._paused_until - now),
        )

    # -- internals -------------------------------------------------------------------------------

    def _check_can_ever_fit(self, tokens: int) -> None:
        for tier in self._tiers:
            amount = tokens if tier.counts_tokens else 1
            if amount > tier.limit:
                raise ConfigError(
                    f"a call to {self.name} needs {amount} from {tier.name} but its limit is "
                    f"{tier.limit} ({amount - tier.limit} over): it can never be sent",
                    hint=f"lower max_tokens or raise {tier.name} for {self.name} in aoe.yaml",
                )
        if self._max_concurrent is not None and self._max_concurrent < 1:
            raise ConfigError(
                f"concurrent_requests for {self.name} is {self._max_concurrent}: "
                "no call can ever be sent",
                hint=f"set concurrent_requests for {self.name} to at least 1 in aoe.yaml",
            )

    def _fits(self, now: float, tokens: int) -> bool:
        if self._max_concurrent is not None and self._in_flight >= self._max_concurrent:
            return False
        for tier in self._tiers:
            tier.refresh(now)
            if (tokens if tier.counts_tokens else 1) > tier.room():
                return False
        return True

    def _grant(self, now: float, tokens: int, waited_s: float) -> Reservation:
        entries = [tier.take(now, 1) for tier in self._request_tiers]
        entries += [tier.take(now, tokens) for tier in self._token_tiers]
        self._in_flight += 1
        rid = next(self._ids)
        self._open[rid] = tuple(entries)
        return Reservation(rid, self.name, tokens, now, waited_s)

    def _close(self, reservation: Reservation) -> tuple[_Entry, ...]:
        entries = self._open.pop(reservation.id, None)
        if entries is None or reservation.limiter != self.name:
            raise ValueError(f"reservation {reservation.id} is not open on {self.name}")
        self._in_flight -= 1
        return entries

    def _ready_at(self, now: float, tokens: int) -> float | None:
        """When the head could fit by time alone; None if only a freed slot can help."""
        if self._max_concurrent is not None and self._in_flight >= self._max_concurrent:
            return None
        at = self._paused_until
        for tier in self._tiers:
            tier.refresh(now)
            at = max(at, tier.ready_at(tokens if tier.counts_tokens else 1))
        return at

    def _tighten(
        self,
        tiers: tuple[_Tier, ...],
        limit: int | None,
        remaining: int | None,
        reset_s: float | None,
        now: float,
    ) -> None:
        if remaining is None or not tiers:
            return
        tier = next((t for t in tiers if t.limit == limit), tiers[0])
        tier.refresh(now)
        hold_s = tier.period_s if reset_s is None else min(max(0.0, reset_s), tier.period_s)
        if hold_s > _EPS_S:
            tier.set_hold(now + hold_s, max(0, remaining))
        else:  # already reset: an older hold is stale
            tier.hold_until = -math.inf

    def _timeout_error(self, tokens: int, waited_s: float) -> RateLimitTimeoutError:
        now = self._clock.now()
        busy = []
        for tier in self._tiers:
            tier.refresh(now)
            busy.append(f"{tier.name} {tier.limit - tier.room()}/{tier.limit}")
        if self._max_concurrent is not None:
            busy.append(f"concurrent_requests {self._in_flight}/{self._max_concurrent}")
        if self._paused_until > now + _EPS_S:
            busy.append(f"paused for {self._paused_until - now:.1f} s after a 429")
        return RateLimitTimeoutError(
            f"waited {waited_s:.1f} s for {self.name} rate limits (1 request + {tokens} tokens); "
            f"in use: {', '.join(busy) or 'nothing'}",
            hint="raise the limits in aoe.yaml if your account allows, or lower the parallelism",
        )

    def _kick_or_start(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._pump_task
        if task is None or task.done() or task.get_loop() is not loop:
            self._pump_task = loop.create_task(self._pump())
        else:
            self._kick()

    def _kick(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _pump(self) -> None:
        """The one waiter loop: grant the head when it fits, fail waiters past their deadline."""
        try:
            while True:
                now = self._clock.now()
                self._expire(now)
                queue = self._queue
                while queue and queue[0][2].future.done():
                    heapq.heappop(queue)
                if not queue:
                    return
                head = queue[0][2]
                if now + _EPS_S >= self._paused_until and self._fits(now, head.tokens):
                    heapq.heappop(queue)
                    waited = now - head.enqueued_at
                    self._wait_s_total += waited
                    head.future.set_result(self._grant(now, head.tokens, waited))
                    continue
                wake = self._ready_at(now, head.tokens)
                while self._deadlines and self._deadlines[0][2].future.done():
                    heapq.heappop(self._deadlines)
                if self._deadlines:
                    first = self._deadlines[0][0]
                    wake = first if wake is None else min(wake, first)
                await self._sleep_until(now, wake)
        except Exception as exc:  # never strand waiters on a bug
            for _, _, waiter in self._queue:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
            self._queue.clear()
            raise

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now + _EPS_S:
            _, _, waiter = heapq.heappop(deadlines)
            if not waiter.future.done():
                waited = now - waiter.enqueued_at
                self._wait_s_total += waited
                waiter.future.set_exception(self._timeout_error(waiter.tokens, waited))

    async def _sleep_until(self, now: float, wake: float | None) -> None:
        """Until ``wake`` on the clock, or until a kick (capacity back, a new head, a cancel)."""
        loop = asyncio.get_running_loop()
        self._wakeup = wakeup = loop.create_future()
        sleeper: asyncio.Task[None] | None = None
        if wake is not None and wake < math.inf:
            sleeper = loop.create_task(self._alarm(wake - now - _EPS_S / 2, wakeup))
        try:
            await wakeup
        finally:
            self._wakeup = None
            if sleeper is not None and not sleeper.done():
                sleeper.cancel()

    async def _alarm(self, seconds: float, wakeup: asyncio.Future[None]) -> None:
        """Set this round's future (never a later one's) when the time comes."""
        await self._clock.sleep(seconds)
        if not wakeup.done():
            wakeup.set_result(None)


class RateLimiterRegistry:
    """One limiter per provider key, or per model where ``model_limits`` names it; built lazily."""

    def __init__(self, config: Config, *, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}

    def for_model(self, provider: str, model: str) -> RateLimiter:
        """The limiter a call to ``provider/model`` must acquire."""
        pc = self._config.providers.get(provider)
        if pc is None:
            known = ", ".join(sorted(self._config.providers)) or "none"
            raise ConfigError(
                f"no provider {provider!r} is configured (known: {known})",
                hint="add it under providers: in aoe.yaml",
            )
        if model in pc.model_limits:
            key, limits = f"{provider}/{model}", pc.model_limits[model]
        else:
            key, limits = provider, pc.limits
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = RateLimiter(limits, clock=self._clock, name=key)
        return limiter

    def all_stats(self) -> tuple[LimiterStats, ...]:
        """Every limiter built so far, by name."""
        return tuple(self._limiters[k].stats() for k in sorted(self._limiters))
