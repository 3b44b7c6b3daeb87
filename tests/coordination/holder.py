"""A process that takes a concurrency permit and a budget reservation, says so, and waits
to be killed (``test_fleet.py`` SIGKILLs it). Arguments: REDIS_URL TTL_S."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from aoe.clock import SystemClock
from aoe.coordination.budgets import RedisBudgets
from aoe.coordination.connection import CoordinationSettings, connect
from aoe.coordination.limiter import RedisLimiter
from aoe.coordination.wake import Wakeups
from aoe.spec.models import LimitsSpec, SharedBudgetSpec

LIMITS = LimitsSpec(concurrent_requests=1, requests_per_minute=100)
BUDGET = SharedBudgetSpec("team", Decimal(10), "none")


async def main(url: str, ttl_s: float) -> None:
    conn = await connect(CoordinationSettings(url, "test", permit_ttl_s=ttl_s))
    wakeups = Wakeups(conn)
    clock = SystemClock()
    limiter = RedisLimiter(
        conn, LIMITS, name="openai", key_id="k", lane_id="l", clock=clock, wakeups=wakeups,
        permit_ttl_s=ttl_s,
    )  # fmt: skip
    budgets = RedisBudgets(
        conn, run_id="killed", run_limit_usd=None, named=[BUDGET], clock=clock, wakeups=wakeups
    )
    await limiter.acquire(10)
    await budgets.reserve((budgets.run_scope, *budgets.named_scopes), Decimal(4))
    print("held", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
