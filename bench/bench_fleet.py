"""Four aoe processes sharing one key's limits and one budget through Redis (issue 13).

    python bench/bench_fleet.py                 # the table: a 3-minute fleet run, ~5 min
    python bench/bench_fleet.py --json --quick  # rows for bench/run_all.py, under 60 s

Starts its own redis-server (Debian's ``redis-server``, which .ci/run installs) on a free
loopback port in a temporary directory and the loopback provider (``tests/fakeprovider.py``)
enforcing requests and tokens per minute, and measures:

- **limits**: 4 real ``aoe run`` processes, each configured at the server's exact limits
  (600 requests and 20 400 tokens a minute: about as many tokens as 600 calls use, so
  either can bind) with the same ``coordination.redis_url`` and far more work than the
  limits allow, stopped (SIGTERM) after 3 minutes (``--quick``: once their first minute
  is used up). Reported: the server's 429s for the two limits (goal 0) and how much of
  each limit was used: the sliding minute's fill, averaged over every tenth of a second
  after the first minute (``--quick``: the first minute's fill). Goal: >= 95 % of the
  binding one. Baseline, in the same run: the same fleet with a Redis database per process
  (four separate limiters, as before the coordinator): its 429s.
- **budget**: 200 randomized trials (``--quick``: 50) of four budget books on four
  connections racing on one shared budget, the bench billing each call (see
  ``tests/coordination/test_fleet_budget.py``), and 5 trials (``--quick``: 1) of four real
  ``aoe run`` processes on one shared budget against the loopback server, which bills them.
  Reported: the worst bill / budget (goal <= 1) and the utilisation (billed / budget).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aoe.coordination.connection import CoordinationSettings, connect
from aoe.coordination.wake import Wakeups
from tests.coordination.conftest import RedisServer
from tests.coordination.test_fleet_budget import TrialResult, book_trial, process_trial
from tests.coordination.test_fleet_limits import FleetResult, run_fleet
from tests.fakeprovider import FakeProvider

RPM = 600
TPM = 600 * 34  # the server bills about 34 tokens a call of this workflow


def _fleet(
    server: RedisServer, folder: Path, *, seconds: float | None, shared: bool
) -> FleetResult:
    server.flush()
    provider = FakeProvider()
    provider.start()
    try:
        minutes = 1 if seconds is None else seconds / 60
        agents = int(RPM * (minutes + 1) * 1.2 / 4)  # more than the limits let through
        return run_fleet(
            provider, folder, server.url, rpm=RPM, tpm=TPM, agents=agents, seconds=seconds,
            deadline_s=50.0, shared=shared,
        )  # fmt: skip
    finally:
        provider.stop()


async def _book_trials(url: str, count: int) -> list[TrialResult]:
    conns = [await connect(CoordinationSettings(url, "bench")) for _ in range(4)]
    wakes = [Wakeups(conn) for conn in conns]
    try:
        return [await book_trial(url, conns, wakes, seed) for seed in range(count)]
    finally:
        for wake in wakes:
            await wake.aclose()
        for conn in conns:
            await conn.aclose()


async def _process_trials(server: RedisServer, folder: Path, count: int) -> list[TrialResult]:
    results = []
    for seed in range(count):
        server.flush()
        results.append(await process_trial(folder, server.url, seed))
    return results


def _row(what: str, value: float, unit: str, goal: str, baseline: str | None = None,
         baseline_value: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "what": what, "value": round(value, 4), "unit": unit, "baseline": baseline,
        "baseline_value": None if baseline_value is None else round(baseline_value, 4),
        "goal": goal,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print rows as JSON (last line)")
    parser.add_argument("--quick", action="store_true", help="the first minute only, fewer trials")
    parser.add_argument("--seconds", type=float, default=180.0, help="fleet run length (180)")
    args = parser.parse_args()
    if args.seconds < 10:
        parser.error("--seconds must be at least 10")
    seconds = None if args.quick else args.seconds
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aoe-bench-fleet-") as tmp:
        root = Path(tmp)
        server = RedisServer(root)
        server.start()
        try:
            (root / "shared").mkdir()
            (root / "alone").mkdir()
            (root / "budget").mkdir()
            fleet = _fleet(server, root / "shared", seconds=seconds, shared=True)
            alone = _fleet(server, root / "alone", seconds=None, shared=False)
            server.flush()
            books = asyncio.run(_book_trials(server.url, 50 if args.quick else 200))
            procs = asyncio.run(_process_trials(server, root / "budget", 1 if args.quick else 5))
        finally:
            server.stop()
    limit_429s = fleet.refused.get("requests", 0) + fleet.refused.get("tokens", 0)
    alone_429s = alone.refused.get("requests", 0) + alone.refused.get("tokens", 0)
    binding = max(fleet.requests_use, fleet.tokens_use)
    book_uses = [r.utilisation for r in books]
    proc_uses = [r.utilisation for r in procs]
    span = "first minute" if seconds is None else f"{fleet.seconds:.0f} s"
    rows = [
        _row(f"4 processes at a key's exact RPM+TPM ({span}): 429s from those limits",
             limit_429s, "429s", "0", "4 separate limiters (first minute)", alone_429s),
        _row("  share of the binding limit used", 100 * binding, "%", ">= 95 %"),
        _row("  requests per minute used", 100 * fleet.requests_use, "%", "(not binding)"
             if fleet.requests_use < fleet.tokens_use else ">= 95 %"),
        _row("  tokens per minute used", 100 * fleet.tokens_use, "%", "(not binding)"
             if fleet.tokens_use < fleet.requests_use else ">= 95 %"),
        _row(f"{len(books)} trials of 4 racing budget books: worst bill / budget",
             max(float(r.billed / r.budget) for r in books), "x", "<= 1"),
        _row("  budget used, median", 100 * statistics.median(book_uses), "%", "reported"),
        _row("  budget used, lowest", 100 * min(book_uses), "%", "reported"),
        _row(f"{len(procs)} trials of 4 aoe processes on one budget: worst bill / budget",
             max(float(r.billed / r.budget) for r in procs), "x", "<= 1"),
        _row("  budget used, mean", 100 * statistics.fmean(proc_uses), "%", "reported"),
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return
    print(f"bench_fleet: {time.monotonic() - started:.0f} s; fleet exit codes {fleet.exit_codes}")
    print(f"  fleet: {fleet.calls} calls, {fleet.tokens} tokens, 429s {fleet.refused or 0}")
    print(f"  alone: {alone.calls} calls, {alone.tokens} tokens, 429s {alone.refused or 0}")
    for row in rows:
        base = f"  (baseline {row['baseline']}: {row['baseline_value']})" if row["baseline"] else ""
        print(f"{row['what']:<78} {row['value']:>9} {row['unit']:<5} goal {row['goal']}{base}")


if __name__ == "__main__":
    main()
