"""What sharing limits and budgets through Redis costs a run (issue 13).

    python bench/bench_redis.py                 # the table, about 60 s
    python bench/bench_redis.py --json --quick  # rows for bench/run_all.py, under 60 s

Starts its own redis-server (Debian's ``redis-server``, which .ci/run installs) on a free
loopback port in a temporary directory, with no persistence, and measures:

- **round trips**: Redis commands per limiter operation and per call, counted by the
  server (``INFO commandstats``), over many acquire + settle pairs and budget reserve +
  settle pairs. Target: 1 per operation (each is one script).
- **added latency**: one call at a time, acquire + settle on the Redis limiter against the
  in-memory ``RateLimiter``, alternated round by round, fastest round of each. Target:
  under 1 ms per call on loopback.
- **network round trips per call at 100 calls at once**: 100 tasks each making a call's
  four script runs (limiter acquire, budget reserve, both settles), counted by the client
  (``Connection.round_trips``): the scripts asked for in one loop turn share one
  pipeline. Target: 1.
- **calls/s at 100 in flight**: a simulated run (agents of 20 ms, then of 200 ms, 100 in
  flight, no ledger) on the coordinator (``AOE_REDIS_URL``: Redis limits, budgets, lease)
  against the same run in memory, and against the coordinator with every script run on
  its own round trip (``Connection.batching = False``: how it was before batching), all
  alternated, fastest of each. Target: at least 70 %. At 20 ms a call, the run is bound
  by the engine, the client's CPU and the server's (4 script runs per call: acquire,
  reserve, settle twice); at 200 ms (still far shorter than an LLM call) by the calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.clock import SystemClock
from aoe.coordination.budgets import RedisBudgets
from aoe.coordination.connection import Connection, CoordinationSettings, connect
from aoe.coordination.limiter import RedisLimiter
from aoe.coordination.wake import Wakeups
from aoe.ratelimit import RateLimiter
from aoe.spec.models import LimitsSpec, SharedBudgetSpec

LIMITS = LimitsSpec(
    requests_per_minute=10_000_000, tokens_per_minute=10**12, concurrent_requests=1000
)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server (.ci/run does)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(500):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.01)
        try:
            yield url
        finally:
            client.close()
            proc.terminate()
            proc.wait(10)


def _script_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats")
    client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def round_trips(url: str, n: int) -> tuple[float, float]:
    """Script runs per limiter operation and per budget operation."""
    conn = await connect(CoordinationSettings(url, "bench"))
    wakeups = Wakeups(conn)
    clock = SystemClock()
    limiter = RedisLimiter(
        conn, LIMITS, name="bench", key_id="rt", lane_id="l", clock=clock, wakeups=wakeups
    )
    budgets = RedisBudgets(
        conn, run_id="bench", run_limit_usd=None,
        named=[SharedBudgetSpec("bench", Decimal(10**9), "none")], clock=clock, wakeups=wakeups,
    )  # fmt: skip
    before = _script_calls(url)
    for _ in range(n):
        await limiter.settle(await limiter.acquire(100), 80)
    middle = _script_calls(url)
    for _ in range(n):
        await budgets.settle(
            await budgets.reserve(budgets.named_scopes, Decimal("0.01")), Decimal(0)
        )
    after = _script_calls(url)
    await limiter.aclose()
    await budgets.aclose()
    await wakeups.aclose()
    await conn.aclose()
    return (middle - before) / (2 * n), (after - middle) / (2 * n)


async def round_trips_per_call(url: str, calls: int, *, batching: bool) -> float:
    """Network round trips per call when ``calls`` calls make their four script runs at
    once (acquire, reserve, settle, settle), as a run at ``calls`` in flight does."""
    Connection.batching = batching
    conn = await connect(CoordinationSettings(url, "bench"))
    wakeups = Wakeups(conn)
    clock = SystemClock()
    limiter = RedisLimiter(
        conn, LIMITS, name="bench", key_id="rtc", lane_id="l", clock=clock, wakeups=wakeups
    )
    budgets = RedisBudgets(
        conn, run_id="bench", run_limit_usd=None,
        named=[SharedBudgetSpec("bench", Decimal(10**9), "none")], clock=clock, wakeups=wakeups,
    )  # fmt: skip

    async def call() -> None:
        permit = await limiter.acquire(100)
        hold = await budgets.reserve(budgets.named_scopes, Decimal("0.01"))
        await limiter.settle(permit, 80)
        await budgets.settle(hold, Decimal("0.005"))

    before = conn.round_trips
    await asyncio.gather(*(call() for _ in range(calls)))
    trips = conn.round_trips - before
    Connection.batching = True
    await limiter.aclose()
    await budgets.aclose()
    await wakeups.aclose()
    await conn.aclose()
    return trips / calls


async def added_latency(url: str, n: int, rounds: int) -> tuple[float, float]:
    """Seconds per acquire + settle, one at a time: (Redis, in memory), fastest round."""
    conn = await connect(CoordinationSettings(url, "bench"))
    wakeups = Wakeups(conn)
    clock = SystemClock()
    shared = RedisLimiter(
        conn, LIMITS, name="bench", key_id="lat", lane_id="l", clock=clock, wakeups=wakeups
    )
    local = RateLimiter(LIMITS, clock=clock, name="bench")
    best = {"redis": float("inf"), "memory": float("inf")}
    for _ in range(rounds):
        for name, limiter in (("redis", shared), ("memory", local)):
            started = time.perf_counter()
            for _ in range(n):
                await limiter.settle(await limiter.acquire(100), 80)
            best[name] = min(best[name], (time.perf_counter() - started) / n)
    await shared.aclose()
    await wakeups.aclose()
    await conn.aclose()
    return best["redis"], best["memory"]


def _workflow(folder: Path, agents: int, latency_s: float) -> Path:
    body = "".join(
        f"  a{i:05d}:\n    prompt: 'Check invoice {i}'\n    simulate: {{latency_s: {latency_s}}}\n"
        for i in range(agents)
    )
    path = folder / "many.yaml"
    path.write_text(
        "version: 1\nname: many\nmax_parallel_agents: 100\n"
        "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 50\n  retry: {max_retries: 0}\n"
        "agents:\n" + body
    )
    return path


async def _run_once(wf: Path) -> float:
    prepared = prepare(RunOptions(files=(wf,), simulate=True, use_ledger=False))
    started = time.perf_counter()
    result = await RunHandle(prepared).execute()
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.exit_code
    return elapsed


def throughput(url: str, agents: int, rounds: int, latency_s: float) -> tuple[float, float, float]:
    """Calls/s of a simulated run at 100 in flight, fastest round of each: (Redis,
    Redis with a round trip per script run, in memory)."""
    best = {"redis": float("inf"), "unbatched": float("inf"), "memory": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        wf = _workflow(Path(tmp), agents, latency_s)
        for _ in range(rounds):
            for name in ("redis", "unbatched", "memory"):
                if name == "memory":
                    os.environ.pop("AOE_REDIS_URL", None)
                else:
                    os.environ["AOE_REDIS_URL"] = url
                Connection.batching = name != "unbatched"
                best[name] = min(best[name], asyncio.run(_run_once(wf)))
    Connection.batching = True
    os.environ.pop("AOE_REDIS_URL", None)
    return agents / best["redis"], agents / best["unbatched"], agents / best["memory"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print rows as JSON (last line)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, under 60 s")
    args = parser.parse_args()
    n, rounds, agents = (300, 3, 1000) if args.quick else (2000, 5, 2000)
    with redis_server() as url:
        limiter_rt, budget_rt = asyncio.run(round_trips(url, n))
        per_call = asyncio.run(round_trips_per_call(url, 100, batching=True))
        per_call_before = asyncio.run(round_trips_per_call(url, 100, batching=False))
        redis_s, memory_s = asyncio.run(added_latency(url, n, rounds))
        redis_cps, before_cps, memory_cps = throughput(url, agents, rounds, 0.02)
        slow_redis, slow_before, slow_memory = throughput(url, agents // 2, max(1, rounds - 1), 0.2)
    added_ms = (redis_s - memory_s) * 1000
    ratio = redis_cps / memory_cps
    rows = [
        {"what": "Redis round trips per limiter operation (acquire, settle)",
         "value": round(limiter_rt, 3), "unit": "round trips", "baseline": None,
         "baseline_value": None, "goal": "1"},
        {"what": "Redis round trips per budget operation (reserve, settle)",
         "value": round(budget_rt, 3), "unit": "round trips", "baseline": None,
         "baseline_value": None, "goal": "1"},
        {"what": "network round trips per call, 100 calls at once (4 script runs each)",
         "value": round(per_call, 3), "unit": "round trips",
         "baseline": "a round trip per script run", "baseline_value": round(per_call_before, 3),
         "goal": "1"},
        {"what": "latency added per call by the Redis limiter (acquire + settle, loopback)",
         "value": round(added_ms, 3), "unit": "ms", "baseline": "in-memory limiter",
         "baseline_value": round(memory_s * 1000, 4), "goal": "< 1 ms"},
        {"what": "calls/s at 100 in flight, 20 ms calls, coordinated through Redis",
         "value": round(redis_cps, 1), "unit": "calls/s", "baseline": "in memory, same run",
         "baseline_value": round(memory_cps, 1), "goal": ">= 70 % of in memory"},
        {"what": "calls/s at 100 in flight, 200 ms calls, coordinated through Redis",
         "value": round(slow_redis, 1), "unit": "calls/s", "baseline": "in memory, same run",
         "baseline_value": round(slow_memory, 1), "goal": ">= 70 % of in memory"},
        {"what": "calls/s at 100 in flight, 20 ms calls, Redis batched vs a round trip per "
         "script run", "value": round(redis_cps, 1), "unit": "calls/s",
         "baseline": "Redis, one round trip per script run (before), same run",
         "baseline_value": round(before_cps, 1), "goal": "more than before"},
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return
    print(f"round trips per limiter operation: {limiter_rt:.3f} (target 1)")
    print(f"round trips per budget operation:  {budget_rt:.3f} (target 1)")
    print(
        f"network round trips per call, 100 at once: {per_call:.3f} batched, "
        f"{per_call_before:.3f} a round trip per script run (target 1)"
    )
    print(
        f"acquire + settle, one at a time:   Redis {redis_s * 1000:.3f} ms, in memory "
        f"{memory_s * 1000:.4f} ms: {added_ms:.3f} ms added (target < 1 ms)"
    )
    print(
        f"100 in flight, 20 ms calls:        Redis {redis_cps:.0f} calls/s ({ratio:.0%}), a "
        f"round trip per script run {before_cps:.0f} ({before_cps / memory_cps:.0%}), in "
        f"memory {memory_cps:.0f} calls/s (target >= 70 %)"
    )
    print(
        f"100 in flight, 200 ms calls:       Redis {slow_redis:.0f} calls/s "
        f"({slow_redis / slow_memory:.0%}), a round trip per script run {slow_before:.0f} "
        f"({slow_before / slow_memory:.0%}), in memory {slow_memory:.0f} calls/s "
        "(target >= 70 %)"
    )


if __name__ == "__main__":
    main()
