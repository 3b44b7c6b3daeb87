"""Limits, budgets and run leases shared by many processes and machines, kept in Redis.

DESIGN.md section 5: when ``coordination: {redis_url: ...}`` is in aoe.yaml (or
``AOE_REDIS_URL`` is set), a run's rate limiters, budget book and run lease live in Redis
instead of in the process, behind the same protocols (``aoe.services``), so the engine
does not know which it runs on:

    config       settings, CoordinationUnavailableError / CoordinationLostError
    connection   redis-py's client, reached and lost
    scripts      the Lua scripts in lua/ (one per concern, one script run per operation)
    limiter      RedisLimiter / RedisLimiters: aoe.ratelimit's semantics, shared
    budgets      RedisBudgets: run, workflow, agent and named shared budgets, in pico-dollars
    lease        RedisRunLease / FleetLease: one process on any machine runs a run
    wake         pub/sub wake-ups, so waiters neither poll nor storm
    fleet        open_fleet: the one call a run makes (aoe.app.run)

Only ``config`` and ``fleet`` are imported here: redis-py (the ``[redis]`` extra) is
imported once a Redis URL is configured, never by a run without one.

Exit codes (DESIGN.md section 1 plus one): a Redis that does not answer when the run
starts is exit 2 (bad configuration, nothing spent); a Redis lost mid-run is exit **5**:
the run admits no new call, ends and records the calls already out (their spend stays
counted as unconfirmed where the outcome is unknown), is recorded as ``CANCELLED`` in the
ledger, and says which server it lost. It never falls back to per-process limits.
"""

from aoe.coordination.config import (
    REDIS_URL_ENV,
    CoordinationLostError,
    CoordinationSettings,
    CoordinationUnavailableError,
    settings_for,
)
from aoe.coordination.fleet import BUDGET_NAME_ENV, Fleet, open_fleet

__all__ = [
    "BUDGET_NAME_ENV",
    "REDIS_URL_ENV",
    "CoordinationLostError",
    "CoordinationSettings",
    "CoordinationUnavailableError",
    "Fleet",
    "open_fleet",
    "settings_for",
]
