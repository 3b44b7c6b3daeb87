"""Ledger overhead per recorded call, in microseconds amortised over 10,000 calls.

    python3 bench/bench_ledger.py [--calls 10000] [--db PATH]

Two shapes: ``sequential`` is a chain, one agent's call after another's, ``concurrent``
has 100 agents recording at once (writes that arrive together share a commit). The
DESIGN.md target is under 500 µs.

Each shape is measured twice: ``end only`` records each call once, when it ends, queued
(nobody waits, as for a call that cannot cost money); ``start + end`` records it as
started and waits for that commit (as the engine does before a request leaves), then
queues its end. Each shape ends with ``flush``, so every write is committed inside the
time measured. The difference is what waiting for the started-call record costs per
call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoe.ledger import CallRecord, CallStart, Ledger, RunStart


def _call(turn: int, agent: str) -> CallRecord:
    now = time.time()
    return CallRecord(
        "bench",
        "wf",
        agent,
        1,
        turn,
        "openai",
        "gpt-4o-mini",
        1200,
        300,
        0,
        0,
        0,
        Decimal("0.00036"),
        True,
        now,
        now + 0.4,
        "ok",
        "req_x",
        (),
        1500,
    )


def _start(turn: int, agent: str) -> CallStart:
    return CallStart(
        "bench", "wf", agent, 1, turn, "openai", "gpt-4o-mini", Decimal("0.0012"), 1500, time.time()
    )


async def _one_call(ledger: Ledger, turn: int, agent: str, started: bool) -> None:
    if started:
        await ledger.start_call(_start(turn, agent))
    await ledger.record_call(_call(turn, agent))


async def _sequential(ledger: Ledger, calls: int, started: bool, tag: str) -> float:
    start = time.perf_counter()
    for k in range(calls):  # a chain: one agent's call after another's
        await _one_call(ledger, 1, f"seq-{tag}-{k}", started)
    await ledger.flush()
    return time.perf_counter() - start


async def _concurrent(
    ledger: Ledger, calls: int, started: bool, tag: str, agents: int = 100
) -> float:
    async def agent(k: int) -> None:
        for turn in range(calls // agents):
            await _one_call(ledger, turn, f"agent-{k}-{tag}", started)

    start = time.perf_counter()
    await asyncio.gather(*(agent(k) for k in range(agents)))
    await ledger.flush()
    return time.perf_counter() - start


async def main(calls: int, db: Path) -> None:
    async with Ledger.open(db) as ledger:
        await ledger.start_run(RunStart("bench", time.time(), "bench", (), True, None))
        for name, run in (("sequential", _sequential), ("concurrent", _concurrent)):
            for started in (False, True):
                elapsed = await run(ledger, calls, started, f"{started}")
                label = "start + end" if started else "end only"
                print(
                    f"{name:>10}, {label:<11}: {elapsed / calls * 1e6:7.1f} µs per call "
                    f"({calls} calls in {elapsed:.2f} s)"
                )
        total = ledger.cost_report("workflow").total
        assert total.calls == 4 * calls, total
        assert total.unconfirmed_usd == 0, total  # every started row was completed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--db", type=Path, default=None, help="default: a temporary file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(args.calls, args.db or Path(tmp) / "bench.db"))
