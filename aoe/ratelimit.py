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

What the provider says tightens the limits:

- ``observe`` reads its rate-limit headers. A reading whose limit is a configured tier's
  holds that tier to the provider's ``remaining`` until its reset; a limit no configured
  tier has becomes a tier of its own, *learned* (per minute, as OpenAI, Anthropic and
  LiteLLM define ``x-ratelimit-limit-*``), so a key with no ``limits:`` still keeps to
  what its server says. A reading without a reset time holds nothing: when the provider
  refills would be a guess, and a guess of a minute stalls a run for a minute; the learned
  tier's own window still applies. Readings describe the model they came with, so the
  registry gives each model of a shared key a *lane* of its own for them
  (``ModelLimiter``): a gateway's word about model A never holds model B.
- ``note_429`` counts a 429 and learns concurrency from it (below). Its retry-after
  pauses the key for every caller; one longer than a retry ever waits
  (``MAX_RETRY_AFTER_S``) *closes* the key instead: every waiter fails at once with
  ``RateLimitClosedError``, which says when the key opens again, and so does every
  ``acquire`` until then. Nobody is parked for minutes on a key that will not open.

Concurrency is learned from 429s, as TCP learns a path's capacity from its losses
(additive increase, multiplicative decrease), because providers and gateways refuse
calls in flight beyond a limit nobody configured:

- A 429 that says it is about calls in flight, or any rate-limit 429 while every tier still
  has room (nothing aoe knows explains it), lowers the key's concurrency to
  ``CONCURRENCY_DECREASE`` of what was in flight (or of the learned value, if lower), never
  below 1. A key with no configured cap gets its first one this way.
- Only a 429 for a call granted after the last decrease halves it again: the calls granted
  before it were sent under the old limit, and their 429s are the same news. Each of those
  still brings the learned value down to the calls in flight beside it, if fewer: a refusal
  comes back at once while an accepted call takes its time, so once a burst's refusals are
  back, what is still out is what the provider let through.
- Every ``CONCURRENCY_RECOVERY_CALLS`` calls that come back without a 429, granted after the
  last decrease and settled while the key ran at its learned concurrency, raise it by one.
  A call that ran with room to spare vouches for nothing. The learned value never passes
  the configured cap: reaching it, the learned value is dropped.
- So in steady use past the provider's real limit, each rise costs about one 429: at most
  one call in ``CONCURRENCY_RECOVERY_CALLS`` is refused.

The learned concurrency is three numbers per key (the value, the last grant before it
fell, the calls that vouched for it since), changed only by ``note_429`` and ``settle`` from
what every process has (grant ids and the count in flight), so a shared store keeps them
beside the in-flight count and changes them in the script that frees the slot.

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
from aoe.errors import ConfigError, RateLimitClosedError, RateLimitKind, RateLimitTimeoutError
from aoe.providers.base import RateLimitSnapshot
from aoe.retry import MAX_RETRY_AFTER_S
from aoe.spec.models import Config, LimitsSpec

__all__ = [
    "LimiterStats",
    "ModelLimiter",
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

# A concurrency 429 leaves this fraction of what was in flight: TCP's multiplicative
# decrease. From any start S it finds a provider's limit N in log2(S/N) rounds of 429s.
CONCURRENCY_DECREASE = 0.5

# Calls that come back without a 429, at the learned concurrency, before it rises by one.
# A rise past the provider's real limit costs about one 429, so in steady use at most one
# call in this many is refused (1 %); rising from 1 to 10 at once takes 900 calls.
CONCURRENCY_RECOVERY_CALLS = 100

# What a tier learned from headers counts over: OpenAI, Anthropic and LiteLLM all report
# per-minute limits in their x-ratelimit-limit-* / *-limit headers.
LEARNED_PERIOD_S = 60.0

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
    learned_concurrency: int | None = None  # lowered by 429s below concurrency_limit (or none)
    closed_for_s: float = 0.0  # closed by a Retry-After longer than a retry waits


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
    provider's word: at most ``hold_left`` more until ``hold_until`` (-inf: no hold).
    A ``learned`` tier was read from the provider's headers, not configured."""

    __slots__ = (
        "counts_tokens",
        "hold_gen",
        "hold_left",
        "hold_until",
        "learned",
        "limit",
        "log",
        "name",
        "period_s",
        "used",
    )

    def __init__(
        self, name: str, limit: int, period_s: float, counts_tokens: bool, *, learned: bool = False
    ) -> None:
        self.name = name
        self.limit = limit
        self.period_s = period_s
        self.counts_tokens = counts_tokens
        self.learned = learned
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


class Waiter:
    """A call queued for a grant: what it needs, since when, until when, and its answer.
    (Also the Redis limiter's, in ``aoe.coordination.limiter``.)"""

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
        close_over_s: float = MAX_RETRY_AFTER_S,
    ) -> None:
        """``window_margin_s`` lengthens every window (see ``WINDOW_MARGIN_S``); 0 is exact.
        A 429's retry-after longer than ``close_over_s`` closes the key instead of pausing it.
        """
        self.name = name
        self._clock = clock
        self._window_margin_s = window_margin_s
        self._close_over_s = close_over_s
        self._tiers: tuple[_Tier, ...] = ()
        self._request_tiers: tuple[_Tier, ...] = ()
        self._token_tiers: tuple[_Tier, ...] = ()
        self._set_tiers(
            [
                _Tier(field, limit, period + window_margin_s, counts_tokens)
                for field, period, counts_tokens in _TIERS
                if (limit := getattr(limits, field)) is not None
            ]
        )
        self._max_concurrent = limits.concurrent_requests
        self._learned_concurrency: int | None = None
        self._fell_after_id = 0  # the last grant before the learned concurrency last fell
        self._vouched = 0  # calls that vouched for the learned concurrency since
        self._refused: set[int] = set()  # open grants the provider answered 429
        self._in_flight = 0
        self._paused_until = -math.inf
        self._closed_until = -math.inf
        self._open: dict[int, tuple[tuple[_Tier, _Entry], ...]] = {}
        self._ids = itertools.count(1)
        self._last_id = 0
        self._seq = itertools.count()
        self._queue: list[tuple[int, int, Waiter]] = []  # (-priority, seq, waiter)
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._alarm_task: asyncio.Task[None] | None = None
        self._waits = 0
        self._wait_s_total = 0.0
        self._rate_limited = 0

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation:
        """Take 1 request, ``tokens`` tokens and a concurrency slot from every tier, or wait.

        Raises ``ConfigError`` at once when the request can never fit a tier (more tokens
        than a tier's whole limit), ``RateLimitClosedError`` at once while the key is closed,
        and ``RateLimitTimeoutError`` when it has not fitted after ``timeout_s`` (nothing is
        taken in any case).
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        self._check_can_ever_fit(tokens)
        now = self._clock.now()
        if self._closed_until > now + _EPS_S:
            raise self._closed_error(now)
        if not self._queue and now + _EPS_S >= self._paused_until and self._fits(now, tokens):
            return self._grant(now, tokens, 0.0)
        if timeout_s is not None and (timeout_s <= 0 or self._paused_until > now + timeout_s):
            # no capacity can come back before the deadline: say so now, not at the deadline
            raise self._timeout_error(tokens, 0.0)
        loop = asyncio.get_running_loop()
        deadline = math.inf if timeout_s is None else now + timeout_s
        waiter = Waiter(tokens, now, deadline, loop.create_future())
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
        left the window, extra usage is charged now, a refund changes nothing. A call that
        came back without a 429 may vouch for the learned concurrency (see the module).
        """
        if actual_tokens < 0:
            raise ValueError(f"actual_tokens must be >= 0, got {actual_tokens}")
        self._vouch(reservation)
        entries = self._close(reservation)
        delta = actual_tokens - reservation.tokens
        if delta:
            now = self._clock.now()
            for tier, entry in entries:
                if not tier.counts_tokens:
                    continue
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
        self._refused.discard(reservation.id)
        entries = self._close(reservation)
        now = self._clock.now()
        for tier, entry in entries:
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

        A reading applies to the tier whose limit is the header's; a limit no configured
        tier has is learned as a per-minute tier of its own (its limit follows the newest
        reading); a reading without a limit applies to the shortest tier. The newest reading
        with a reset replaces an older hold (the provider has refilled since); one without
        a reset holds nothing. The window log still applies, so a hold only ever tightens.
        Grants under a hold count against it; a release gives back to it (that call never
        reached the provider), a refund on settle does not (the conservative side). Calls in
        flight when the headers arrive are taken as already counted by the provider.
        """
        now = self._clock.now()
        self._read(
            False,
            snapshot.limit_requests,
            snapshot.remaining_requests,
            snapshot.reset_requests_s,
            now,
        )
        self._read(
            True, snapshot.limit_tokens, snapshot.remaining_tokens, snapshot.reset_tokens_s, now
        )
        if self._queue:
            self._kick()  # a fresher reading may have dropped a hold the queue waits on

    async def pause(self, seconds: float) -> None:
        """Block every acquire on this key for ``seconds`` (a 429's retry-after); longer than
        ``close_over_s``, close the key: every waiter and every acquire until it opens again
        fails at once with ``RateLimitClosedError``."""
        now = self._clock.now()
        if seconds > self._close_over_s:
            self._closed_until = max(self._closed_until, now + seconds)
            self._fail_waiters(self._closed_error(now))
            return
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))

    async def note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind = "rate_limit",
        retry_after_s: float | None = None,
    ) -> None:
        """The provider answered the call of ``reservation`` with a 429 of ``kind``.

        Call it before settling the call. It counts for the stats, may lower the learned
        concurrency (see the module), and a ``retry_after_s`` pauses (or closes) the key.
        """
        self._note_429(reservation, kind, retry_after_s, explained=self._at_a_limit())
        if retry_after_s is not None and kind != "quota":
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
            learned_concurrency=self._learned_concurrency,
            closed_for_s=max(0.0, self._closed_until - now),
        )

    # -- learning concurrency ------------------------------------------------------------------

    def _note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind,
        retry_after_s: float | None,
        *,
        explained: bool,
    ) -> None:
        """Count the 429 and lower the concurrency when it says so or nothing explains it."""
        self._rate_limited += 1
        if reservation.id in self._open:
            self._refused.add(reservation.id)
        about_concurrency = kind == "concurrency" or (kind == "rate_limit" and not explained)
        if not about_concurrency:
            return  # a rate or quota limit: not about calls in flight
        in_flight = max(1, self._in_flight)  # this call included: it is settled after
        learned = self._learned_concurrency
        if reservation.id <= self._fell_after_id:
            # sent under the old limit: the same news, but the calls still out beside it
            # (a refusal comes back at once, an accepted call takes its time) are no more
            # than the provider let through, so the learned value need not stay above them
            if learned is not None and 1 <= in_flight - 1 < learned:
                self._learned_concurrency = in_flight - 1
            return
        cap = self._cap()
        base = in_flight if cap is None else min(cap, in_flight)
        self._learned_concurrency = max(1, int(base * CONCURRENCY_DECREASE))
        self._fell_after_id = self._last_id
        self._vouched = 0

    def _vouch(self, reservation: Reservation) -> None:
        """A call that came back, granted after the last fall, while the key ran at its
        learned concurrency, vouches for it; enough of them raise it by one."""
        if reservation.id in self._refused:
            self._refused.discard(reservation.id)
            return
        learned = self._learned_concurrency
        if learned is None or reservation.id <= self._fell_after_id or self._in_flight < learned:
            return
        self._vouched += 1
        if self._vouched < CONCURRENCY_RECOVERY_CALLS:
            return
        self._vouched = 0
        learned += 1
        configured = self._max_concurrent
        self._learned_concurrency = (
            None if configured is not None and learned >= configured else learned
        )
        if self._queue:
            self._kick()

    def _cap(self) -> int | None:
        """What may be in flight now: the configured cap, or lower, what 429s taught."""
        learned, configured = self._learned_concurrency, self._max_concurrent
        if learned is None:
            return configured
        return learned if configured is None else min(learned, configured)

    def _at_a_limit(self) -> bool:
        """Whether some tier has no room for one more call: a 429 then has a known cause."""
        now = self._clock.now()
        for tier in self._tiers:
            tier.refresh(now)
            if tier.room() < 1:
                return True
        return False

    # -- internals -------------------------------------------------------------------------------

    def _set_tiers(self, tiers: list[_Tier]) -> None:
        self._request_tiers = tuple(t for t in tiers if not t.counts_tokens)
        self._token_tiers = tuple(t for t in tiers if t.counts_tokens)
        self._tiers = self._request_tiers + self._token_tiers

    def _check_can_ever_fit(self, tokens: int) -> None:
        for tier in self._tiers:
            amount = tokens if tier.counts_tokens else 1
            if amount > tier.limit:
                said = " (the provider's headers say so)" if tier.learned else ""
                fix = "" if tier.learned else f" or raise {tier.name} for {self.name} in aoe.yaml"
                raise ConfigError(
                    f"a call to {self.name} needs {amount} from {tier.name} but its limit is "
                    f"{tier.limit}{said} ({amount - tier.limit} over): it can never be sent",
                    hint=f"lower max_tokens{fix}",
                )
        if self._max_concurrent is not None and self._max_concurrent < 1:
            raise ConfigError(
                f"concurrent_requests for {self.name} is {self._max_concurrent}: "
                "no call can ever be sent",
                hint=f"set concurrent_requests for {self.name} to at least 1 in aoe.yaml",
            )

    def _fits(self, now: float, tokens: int) -> bool:
        cap = self._cap()
        if cap is not None and self._in_flight >= cap:
            return False
        for tier in self._tiers:
            tier.refresh(now)
            if (tokens if tier.counts_tokens else 1) > tier.room():
                return False
        return True

    def _grant(self, now: float, tokens: int, waited_s: float) -> Reservation:
        entries = [
            (tier, tier.take(now, tokens if tier.counts_tokens else 1)) for tier in self._tiers
        ]
        self._in_flight += 1
        rid = self._last_id = next(self._ids)
        self._open[rid] = tuple(entries)
        return Reservation(rid, self.name, tokens, now, waited_s)

    def _close(self, reservation: Reservation) -> tuple[tuple[_Tier, _Entry], ...]:
        entries = self._open.pop(reservation.id, None)
        if entries is None or reservation.limiter != self.name:
            raise ValueError(f"reservation {reservation.id} is not open on {self.name}")
        self._in_flight -= 1
        return entries

    def _ready_at(self, now: float, tokens: int) -> float | None:
        """When the head could fit by time alone; None if only a freed slot can help."""
        cap = self._cap()
        if cap is not None and self._in_flight >= cap:
            return None
        at = self._paused_until
        for tier in self._tiers:
            tier.refresh(now)
            at = max(at, tier.ready_at(tokens if tier.counts_tokens else 1))
        return at

    def _read(
        self,
        counts_tokens: bool,
        limit: int | None,
        remaining: int | None,
        reset_s: float | None,
        now: float,
    ) -> None:
        """Apply one kind (requests or tokens) of a header reading; see ``observe``."""
        tiers = self._token_tiers if counts_tokens else self._request_tiers
        tier: _Tier | None
        if limit is None:
            tier = tiers[0] if tiers else None
        else:
            tier = next((t for t in tiers if t.limit == limit and not t.learned), None)
            if tier is None and limit > 0:
                tier = self._learn(counts_tokens, limit)
        if tier is None or remaining is None or reset_s is None:
            return  # no reset: when the provider refills would be a guess, so hold nothing
        tier.refresh(now)
        hold_s = min(max(0.0, reset_s), tier.period_s)
        if hold_s > _EPS_S:
            tier.set_hold(now + hold_s, max(0, remaining))
        else:  # already reset: an older hold is stale
            tier.hold_until = -math.inf

    def _learn(self, counts_tokens: bool, limit: int) -> _Tier:
        """The per-minute tier the provider's headers describe, made or brought up to date."""
        for tier in self._tiers:
            if tier.learned and tier.counts_tokens == counts_tokens:
                tier.limit = limit
                return tier
        name = "tokens_per_minute" if counts_tokens else "requests_per_minute"
        tier = _Tier(
            f"{name} (learned)",
            limit,
            LEARNED_PERIOD_S + self._window_margin_s,
            counts_tokens,
            learned=True,
        )
        self._set_tiers([*self._tiers, tier])
        return tier

    def _closed_error(self, now: float) -> RateLimitClosedError:
        left = self._closed_until - now
        return RateLimitClosedError(
            self.name, opens_at=self._clock.wall() + left, retry_after_s=left
        )

    def _fail_waiters(self, error: BaseException) -> None:
        """End every waiter at once with ``error`` (the key closed)."""
        for _, _, waiter in self._queue:
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self._queue.clear()
        self._deadlines.clear()
        self._kick()

    def _timeout_error(self, tokens: int, waited_s: float) -> RateLimitTimeoutError:
        now = self._clock.now()
        busy = []
        for tier in self._tiers:
            tier.refresh(now)
            busy.append(f"{tier.name} {tier.limit - tier.room()}/{tier.limit}")
        cap = self._cap()
        if cap is not None:
            learned = " (learned from 429s)" if cap != self._max_concurrent else ""
            busy.append(f"concurrent_requests {self._in_flight}/{cap}{learned}")
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
        """End the waiter loop's round now: wake it, and stop its alarm at once.

        The alarm's sleep belongs to the round; left running until the loop's next turn, it
        would be a sleep on the clock for a wake-up that no longer matters, and a clock that
        skips ahead while nothing is in flight could jump it (past the grant the loop is
        about to make, and past every waiter's deadline).
        """
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
            alarm = self._alarm_task
            if alarm is not None and not alarm.done():
                alarm.cancel()

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
        self._alarm_task = sleeper
        try:
            await wakeup
        finally:
            self._wakeup = self._alarm_task = None
            if sleeper is not None and not sleeper.done():
                sleeper.cancel()

    async def _alarm(self, seconds: float, wakeup: asyncio.Future[None]) -> None:
        """Set this round's future (never a later one's) when the time comes."""
        await self._clock.sleep(seconds)
        if not wakeup.done():
            wakeup.set_result(None)


class ModelLimiter:
    """What a call to one model of a shared key holds: the key, and the model's *lane*.

    The lane is a ``RateLimiter`` of the model's own with no configured limits: it keeps the
    tiers the provider's headers describe for this model (``observe`` goes there), so one
    model's reading never holds another's calls. The key keeps the configured limits, the
    concurrency, the pauses and the 429s, shared by every model of it.

    ``acquire`` waits until the lane has room (taking nothing), then waits for the key, then
    takes from the lane at once; if the lane filled meanwhile (a fresher reading), it gives
    the key back and waits for the lane again. So a call waiting for the key holds nothing
    of its model's lane (a reading counts exactly the calls sent), and a call waiting for
    its model's lane holds nothing of the key (other models go first). The reservation is
    the key's.
    """

    def __init__(self, key: RateLimiter, lane: RateLimiter) -> None:
        self.key = key
        self.lane = lane
        self._lanes: dict[int, Reservation] = {}  # key reservation id -> its lane grant

    @property
    def name(self) -> str:
        return self.key.name

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation:
        """Room in the lane, then the key, then the lane's share, within one ``timeout_s``."""
        clock = self.key._clock
        deadline = math.inf if timeout_s is None else clock.now() + timeout_s

        def left() -> float | None:
            return None if timeout_s is None else max(0.0, deadline - clock.now())

        while True:
            if self.lane._tiers:  # wait for room in the model's own limits, taking nothing
                self.lane._give_back(
                    await self.lane.acquire(tokens, timeout_s=left(), priority=priority)
                )
            permit = await self.key.acquire(tokens, timeout_s=left(), priority=priority)
            now = clock.now()
            if self.lane._fits(now, tokens):  # our turn in the lane came with the probe
                self._lanes[permit.id] = self.lane._grant(now, tokens, 0.0)
                return permit
            self.key._give_back(permit)  # the lane filled while we waited: not sent

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        await self.key.settle(reservation, actual_tokens)
        await self.lane.settle(self._lanes.pop(reservation.id), actual_tokens)

    async def release(self, reservation: Reservation) -> None:
        await self.key.release(reservation)
        await self.lane.release(self._lanes.pop(reservation.id))

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        await self.lane.observe(snapshot)

    async def pause(self, seconds: float) -> None:
        await self.key.pause(seconds)

    async def note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind = "rate_limit",
        retry_after_s: float | None = None,
    ) -> None:
        """As ``RateLimiter.note_429``; a full tier of the lane explains a 429 too."""
        explained = self.lane._at_a_limit() or self.key._at_a_limit()
        self.key._note_429(reservation, kind, retry_after_s, explained=explained)
        if retry_after_s is not None and kind != "quota":
            await self.key.pause(retry_after_s)

    def stats(self) -> LimiterStats:
        """The key's readout (its lane's tiers are in ``RateLimiterRegistry.all_stats``)."""
        return self.key.stats()


class RateLimiterRegistry:
    """One limiter per provider key, or per model where ``model_limits`` names it; built lazily.

    A model without ``model_limits`` shares its key's limiter through a ``ModelLimiter``
    whose lane keeps what the provider's headers say about that model alone; a model with
    them has a limiter of its own, which learns from its headers directly.
    """

    def __init__(self, config: Config, *, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}
        self._views: dict[tuple[str, str], RateLimiter | ModelLimiter] = {}

    def for_model(self, provider: str, model: str) -> RateLimiter | ModelLimiter:
        """The limiter a call to ``provider/model`` must acquire."""
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
        if model in pc.model_limits:
            view = self._limiter(f"{provider}/{model}", pc.model_limits[model])
        else:
            lane = self._limiter(f"{provider}/{model} (headers)", LimitsSpec())
            view = ModelLimiter(self._limiter(provider, pc.limits), lane)
        self._views[(provider, model)] = view
        return view

    def _limiter(self, key: str, limits: LimitsSpec) -> RateLimiter:
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = RateLimiter(limits, clock=self._clock, name=key)
        return limiter

    def all_stats(self) -> tuple[LimiterStats, ...]:
        """Every limiter built so far, by name; a model's lane once it has learned a tier."""
        stats = (self._limiters[k].stats() for k in sorted(self._limiters))
        return tuple(s for s in stats if s.tiers or not s.name.endswith(" (headers)"))
