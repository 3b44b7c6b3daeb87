"""Real aoe processes sharing one provider key through Redis, against the loopback server
that enforces the key's limits as a provider would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.clock import SystemClock
from aoe.coordination.budgets import RedisBudgets
from aoe.coordination.connection import CoordinationSettings, connect
from aoe.coordination.limiter import WAKE_POLL_S, RedisLimiter
from aoe.coordination.wake import Wakeups
from aoe.errors import BudgetExceededError, RateLimitTimeoutError
from aoe.spec.models import LimitsSpec, SharedBudgetSpec
from tests.fakeprovider import FakeProvider, fake_provider
from tests.integration.test_learned_limits import _write

__all__ = ["fake_provider"]

ROOT = Path(__file__).resolve().parents[2]
HOLDER = Path(__file__).with_name("holder.py")


def _start(
    folder: Path, wf: Path, redis_url: str, key: str = "sk-test-fleet"
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "OPENAI_API_KEY": key,
        "AOE_DB": str(folder / "aoe.db"),
        "AOE_REDIS_URL": redis_url,
        "CI": "true",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aoe", "run", str(wf), "--json", "--no-live"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_two_processes_at_a_keys_exact_limits_see_no_429(
    fake_provider: FakeProvider, tmp_path: Path, redis_url: str
) -> None:
    """Two aoe processes, each configured at the key's exact limits (4 at once), share them
    through Redis: together they never send a fifth call at once, so the server refuses
    none of 2 x 150 calls (each process on its own limiter drew dozens of 429s)."""
    fake_provider.latency_s = 0.03
    fake_provider.enforce(
        requests_per_minute=3000, concurrent=4, headers=True, say_which=True, retry_after=None
    )
    procs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        wf = _write(
            folder,
            fake_provider.openai_base_url,
            150,
            limits="requests_per_minute: 3000, concurrent_requests: 4",
            retry="{max_retries: 8, strategy: constant, base_delay_s: 0.05, jitter: false}",
        )
        procs.append(_start(folder, wf, redis_url))
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=50)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    refused = [r for _, r in fake_provider.limit_log]
    assert len(refused) == 300  # no call was sent twice
    assert sum(refused) == 0
    for doc in docs:
        states = [a["state"] for a in doc["workflows"][0]["agents"].values()]
        assert states.count("COMPLETED") == 150


async def test_a_killed_process_gives_back_its_permit_and_its_spend_stays_counted(
    redis_url: str,
) -> None:
    """A process SIGKILLed holding the key's only slot and $4 of a shared $10 budget: the
    slot comes back to another process within the permit expiry (2 s), and the $4 stays
    counted as unconfirmed spend (its call may have been billed)."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, str(HOLDER), redis_url, "2.0", stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 20)
        assert line.strip() == b"held"
        conn = await connect(CoordinationSettings(redis_url, "test", permit_ttl_s=2.0))
        wakeups = Wakeups(conn)
        clock = SystemClock()
        limiter = RedisLimiter(
            conn, LimitsSpec(concurrent_requests=1, requests_per_minute=100), name="openai",
            key_id="k", lane_id="l", clock=clock, wakeups=wakeups, permit_ttl_s=2.0,
        )  # fmt: skip
        budgets = RedisBudgets(
            conn, run_id="alive", run_limit_usd=None,
            named=[SharedBudgetSpec("team", Decimal(10), "none")], clock=clock, wakeups=wakeups,
        )  # fmt: skip
        with pytest.raises(RateLimitTimeoutError):
            await limiter.acquire(1, timeout_s=0)  # the holder is alive: its slot is held
        holder.kill()
        await holder.wait()
        killed_at = time.monotonic()
        permit = await asyncio.wait_for(limiter.acquire(1), 10)
        assert time.monotonic() - killed_at < 2.0 + WAKE_POLL_S + 0.5
        await limiter.settle(permit, 1)
        (state,) = await budgets.refresh(budgets.named_scopes)
        assert (state.unconfirmed_usd, state.reserved_usd) == (Decimal(4), Decimal(0))
        with pytest.raises(BudgetExceededError, match=r"unconfirmed \$4\.0000"):
            await budgets.reserve(budgets.named_scopes, Decimal("6.01"))
        await limiter.aclose()
        await budgets.aclose()
        await wakeups.aclose()
        await conn.aclose()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
