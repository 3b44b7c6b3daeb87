"""Whether and when to try a failed call again, as data.

``decide`` turns an error, the attempt number and the agent's ``RetrySpec`` into a
``RetryDecision``; the one loop that acts on it is the engine's ``run_agent``.

- Only an ``AoeError`` whose class is ``retriable`` is retried (timeouts, connection
  errors, 429 rate limits, 5xx, 529, malformed answers, invalid structured output), and
  never when the provider said ``x-should-retry: false``; ``x-should-retry: true`` makes
  any provider error retriable, as the official SDKs do.
- ``attempt`` counts from 1: ``max_retries=3`` allows up to 4 attempts.
- A provider's ``retry_after_s`` (``retry-after-ms`` / ``retry-after``) replaces the
  computed delay, even above ``max_delay_s``, because the provider knows when capacity
  returns. Above ``MAX_RETRY_AFTER_S`` (120 s, as the OpenAI SDK) we stop instead: an
  agent waiting minutes for one call is better reported than silently parked.
- Jitter is "equal jitter": the delay ``d`` becomes ``d/2 + uniform(0, d/2)``. It spreads
  out agents that failed together while never waiting less than half the planned delay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from aoe.errors import AoeError
from aoe.spec.models import RetrySpec

MAX_RETRY_AFTER_S = 120.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry or not, after how many seconds, and why (for the attempt's record)."""

    retry: bool
    delay_s: float
    reason: str


def backoff_delay(spec: RetrySpec, retry_number: int, rng: random.Random) -> float:
    """The wait before retry ``retry_number`` (1 = the first retry), capped, then jittered."""
    n = max(1, retry_number)
    if spec.strategy == "immediate":
        return 0.0
    if spec.strategy == "constant":
        delay = spec.base_delay_s
    elif spec.strategy == "linear":
        delay = spec.base_delay_s * n
    else:
        try:
            delay = spec.base_delay_s * spec.exponential_base ** (n - 1)
        except OverflowError:
            delay = spec.max_delay_s
    delay = max(0.0, min(delay, spec.max_delay_s))
    if spec.jitter and delay > 0:
        delay = delay / 2 + rng.uniform(0, delay / 2)
    return delay


def decide(
    error: BaseException, *, attempt: int, spec: RetrySpec, rng: random.Random
) -> RetryDecision:
    """The retry decision for ``error`` raised by attempt number ``attempt`` (from 1)."""
    name = type(error).__name__
    said = getattr(error, "should_retry", None)  # the provider's x-should-retry, obeyed first
    if not isinstance(error, AoeError) or (not error.retriable and said is not True):
        return RetryDecision(False, 0.0, f"{name} is not retriable")
    if said is False:
        return RetryDecision(False, 0.0, "the provider said not to retry (x-should-retry: false)")
    if attempt > spec.max_retries:
        return RetryDecision(False, 0.0, f"gave up after {attempt} attempts")
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        if retry_after > MAX_RETRY_AFTER_S:
            return RetryDecision(
                False,
                0.0,
                f"the provider asked to wait {retry_after:g} s, more than {MAX_RETRY_AFTER_S:g} s",
            )
        return RetryDecision(True, float(retry_after), f"{name}; provider asked to wait")
    delay = backoff_delay(spec, attempt, rng)
    return RetryDecision(True, delay, f"{name}; {spec.strategy} backoff")
