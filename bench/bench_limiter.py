"""Rate limiter and budget overhead, and throughput under a binding limit.

    python bench/bench_limiter.py               # about 15 s
    python bench/bench_limiter.py --calls 20000 --periods 2
    python bench/bench_limiter.py --json --quick   # 20,000 calls, 2 periods: rows for run_all.py

1. acquire + settle with nothing waiting (every tier configured, none binding): µs per call.
2. budget reserve + settle against three scopes (run, workflow, agent): µs per call.
3. 600 requests/minute in real time, sped up (the clock runs ``--speed`` times faster, so a
   minute lasts 60/speed s): 200 tasks acquire as fast as they can, "call" for 0.5 s
   (simulated) and settle with 60-100 % of the tokens they reserved. Reports achieved
   throughput over whole periods against the limit, and the worst window of one period
   (from the recorded grant times) against the limit: a violation is any window above it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aoe.clock import SystemClock
from aoe.cost.budget import Budgets, BudgetScope
from aoe.ratelimit import RateLimiter, Reservation
from aoe.spec.models import LimitsSpec

BIG = 10**12
SLACK_S = 2e-6  # the limiter counts a moment as reached 1 µs early


class ScaledClock:
    """Real time, running ``speed`` times faster: limits of a minute play out in 60/speed s."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._start) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


async def limiter_overhead(calls: int) -> float:
    limits = LimitsSpec(BIG, BIG, BIG, BIG, BIG, BIG)
    limiter = RateLimiter(limits, clock=SystemClock(), name="bench")
    start = time.perf_counter()
    for _ in range(calls):
        res = await limiter.acquire(800)
        await limiter.settle(res, 600)
    return (time.perf_counter() - start) / calls * 1e6


def budget_overhead(calls: int) -> float:
    budgets = Budgets()
    scopes = [
        BudgetScope("run", Decimal(10**9)),
        BudgetScope("workflow:w", Decimal(10**9)),
        BudgetScope("agent:w/a", Decimal(10**9)),
    ]
    amount, actual = Decimal("0.000412"), Decimal("0.000318")
    start = time.perf_counter()
    for _ in range(calls):
        res = budgets.reserve(scopes, amount)
        budgets.settle(res, actual)
    return (time.perf_counter() - start) / calls * 1e6


async def binding_run(speed: float, periods: int, tasks: int) -> dict[str, float]:
    rpm, tpm, period = 600, 400_000, 60.0
    clock = ScaledClock(speed)
    limiter = RateLimiter(
        LimitsSpec(requests_per_minute=rpm, tokens_per_minute=tpm), clock=clock, name="bench"
    )
    duration = periods * period
    grants: list[tuple[Reservation, list[int]]] = []
    rng = random.Random(1)

    async def agent() -> None:
        while clock.now() < duration:
            tokens = rng.randint(200, 800)
            res = await limiter.acquire(tokens)
            used = [tokens]
            grants.append((res, used))
            await clock.sleep(rng.uniform(0.3, 0.7))
            used[0] = int(tokens * rng.uniform(0.6, 1.0))
            await limiter.settle(res, used[0])

    workers = [asyncio.create_task(agent()) for _ in range(tasks)]
    await clock.sleep(duration)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    times = [r.granted_at for r, _ in grants]
    in_time = sum(1 for t in times if t < duration)
    worst_requests = worst_tokens = 0
    lo = req_sum = tok_sum = 0
    # two-pointer sweep over grants in time order: window (t - period + slack, t]
    ordered = sorted(grants, key=lambda g: g[0].granted_at)
    for res, used in ordered:
        req_sum += 1
        tok_sum += used[0]
        while ordered[lo][0].granted_at <= res.granted_at - period + SLACK_S:
            req_sum -= 1
            tok_sum -= ordered[lo][1][0]
            lo += 1
        worst_requests = max(worst_requests, req_sum)
        worst_tokens = max(worst_tokens, tok_sum)
    stats = limiter.stats()
    return {
        "granted": in_time,
        "allowed": rpm * periods,
        "throughput": in_time / (rpm * periods),
        "worst_requests": worst_requests,
        "rpm": rpm,
        "worst_tokens": worst_tokens,
        "tpm": tpm,
        "waits": stats.waits,
        "wall_s": duration / speed,
    }


def _rows(
    limiter_us: float, budget_us: float, run: dict[str, float], violations: int
) -> list[dict[str, object]]:
    """The protocol's rows (see bench/run_all.py)."""

    def row(
        what: str,
        value: float,
        unit: str,
        goal: str,
        baseline: str | None = None,
        baseline_value: float | None = None,
    ) -> dict[str, object]:
        return {
            "what": what,
            "value": value,
            "unit": unit,
            "baseline": baseline,
            "baseline_value": baseline_value,
            "goal": goal,
        }

    rpm, tpm = run["rpm"], run["tpm"]
    return [
        row("limiter acquire + settle, nothing waiting", round(limiter_us, 2), "µs", "< 100 µs"),
        row("budget reserve + settle, 3 scopes", round(budget_us, 2), "µs", "< 100 µs"),
        row(
            f"throughput at {rpm:.0f} rpm, 200 tasks",
            round(run["throughput"] * 100, 1),
            "%",
            ">= 95 %",
        ),
        row(
            "worst 60 s window, requests",
            run["worst_requests"],
            "requests",
            "<= 1x baseline",
            "the limit",
            rpm,
        ),
        row(
            "worst 60 s window, tokens",
            run["worst_tokens"],
            "tokens",
            "<= 1x baseline",
            "the limit",
            tpm,
        ),
        row("window violations", violations, "windows", "= 0"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, help="default 100,000 (quick: 20,000)")
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--periods", type=int, help="default 4 (quick: 2)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="fewer calls and periods")
    parser.add_argument("--json", action="store_true", help="the rows as JSON, last line")
    args = parser.parse_args()
    args.calls = args.calls or (20_000 if args.quick else 100_000)
    args.periods = args.periods or (2 if args.quick else 4)

    limiter_us = asyncio.run(limiter_overhead(args.calls))
    budget_us = budget_overhead(args.calls)
    run = asyncio.run(binding_run(args.speed, args.periods, args.tasks))
    violations = int(run["worst_requests"] > run["rpm"]) + int(run["worst_tokens"] > run["tpm"])
    if args.json:
        print(json.dumps(_rows(limiter_us, budget_us, run, violations)))
        return

    print(f"python {sys.version.split()[0]}, {args.calls:,} calls, {args.tasks} tasks")
    print(f"{'measure':<52} {'value':>12} {'target':>10}")
    print(f"{'acquire+settle, nothing waiting (µs/call)':<52} {limiter_us:>12.1f} {'< 100':>10}")
    print(f"{'budget reserve+settle, 3 scopes (µs/call)':<52} {budget_us:>12.1f} {'< 100':>10}")
    label = f"throughput at 600 rpm ({run['granted']:.0f}/{run['allowed']:.0f} requests)"
    print(f"{label:<52} {run['throughput']:>11.1%} {'>= 95%':>10}")
    label = f"worst 60 s window, requests (limit {run['rpm']:.0f})"
    print(f"{label:<52} {run['worst_requests']:>12.0f} {'<= limit':>10}")
    label = f"worst 60 s window, tokens (limit {run['tpm']:.0f})"
    print(f"{label:<52} {run['worst_tokens']:>12.0f} {'<= limit':>10}")
    print(f"{'window violations':<52} {violations:>12d} {'0':>10}")
    print(f"{'acquisitions that waited':<52} {run['waits']:>12.0f}")
    print(f"{'wall time of the binding run (s)':<52} {run['wall_s']:>12.1f}")


if __name__ == "__main__":
    main()
