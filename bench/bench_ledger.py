"""Ledger overhead per recorded call, in microseconds amortised over 10,000 calls.

    python3 bench/bench_ledger.py [--calls 10000] [--rounds 3] [--db PATH|URL]...
    python3 bench/bench_ledger.py --no-start-postgres   # SQLite alone
    python3 bench/bench_ledger.py --json --quick        # the bench/run_all.py protocol

Each ``--db`` is one ledger measured, beside a temporary SQLite file. A ``postgresql://``
URL (or, when none is given and Debian's ``postgresql`` package is installed, a throwaway
cluster the script starts on a free loopback port, as the tests do) is measured in the
same run as SQLite, the two alternating round by round, the fastest round of each kept,
and PostgreSQL is reported as a ratio to SQLite.

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
import glob
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


SHAPES = (("sequential", _sequential), ("concurrent", _concurrent))


async def _round(ledger: Ledger, calls: int, tag: str) -> dict[tuple[str, bool], float]:
    """One round of every shape on ``ledger``: µs per call."""
    found = {}
    for name, run in SHAPES:
        for started in (False, True):
            elapsed = await run(ledger, calls, started, f"{tag}-{started}")
            found[(name, started)] = elapsed / calls * 1e6
    return found


async def main(
    calls: int, rounds: int, targets: list[str]
) -> dict[str, dict[tuple[str, bool], float]]:
    """Every target, round by round alternating; the fastest round of each."""
    best: dict[str, dict[tuple[str, bool], float]] = {t: {} for t in targets}
    ledgers = {t: await asyncio.to_thread(Ledger.open, _target(t)) for t in targets}
    try:
        for ledger in ledgers.values():
            await ledger.start_run(RunStart("bench", time.time(), "bench", (), True, None))
        for r in range(rounds):
            for t in targets if r % 2 == 0 else reversed(targets):
                for key, us in (await _round(ledgers[t], calls, f"r{r}")).items():
                    best[t][key] = min(us, best[t].get(key, us))
        for ledger in ledgers.values():
            total = ledger.cost_report("workflow").total
            assert total.calls == 4 * calls * rounds, total
            assert total.unconfirmed_usd == 0, total  # every started row was completed
    finally:
        for ledger in ledgers.values():
            await ledger.aclose()
    return best


def _target(text: str) -> str | Path:
    return text if text.startswith(("postgresql://", "postgres://")) else Path(text)


def _name(text: str) -> str:
    return "postgresql" if text.startswith(("postgresql://", "postgres://")) else "sqlite"


def _rows(best: dict[str, dict[tuple[str, bool], float]]) -> list[dict[str, object]]:
    sqlite = next((v for t, v in best.items() if _name(t) == "sqlite"), None)
    rows: list[dict[str, object]] = []
    for t, found in best.items():
        backend = _name(t)
        for (shape, started), us in found.items():
            label = "start + end" if started else "end only"
            base = sqlite if backend != "sqlite" else None
            rows.append(
                {
                    "what": f"ledger {backend}, {shape}, {label}: per call",
                    "value": round(us, 1),
                    "unit": "µs",
                    "baseline": None if base is None else f"sqlite, {shape}, {label}",
                    "baseline_value": None if base is None else round(base[(shape, started)], 1),
                    "goal": "< 500 µs per call (DESIGN.md)",
                }
            )
    return rows


if __name__ == "__main__":
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--db", action="append", default=[], help="a file or postgresql:// URL (repeatable)"
    )
    parser.add_argument(
        "--start-postgres",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure a throwaway PostgreSQL too (default: when no URL is given and Debian's"
        " postgresql package is installed)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 1000, 1
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        targets = [str(Path(tmp) / "bench.db")]
        targets += [d for d in args.db if d not in targets]
        if args.start_postgres is None:
            args.start_postgres = not any(_name(d) == "postgresql" for d in args.db) and bool(
                glob.glob("/usr/lib/postgresql/*/bin/initdb")
            )
        if args.start_postgres:
            from tests.ledger.pg import PgCluster

            cluster = PgCluster(fsync=True)  # commits on disk, as in production
            cluster.start()
            targets.append(cluster.new_database())
        try:
            best = asyncio.run(main(args.calls, args.rounds, targets))
        finally:
            if cluster is not None:
                cluster.stop()
    rows = _rows(best)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        print(f"{args.calls} calls per shape, fastest of {args.rounds} rounds")
        for row in rows:
            ratio = ""
            if row["baseline_value"]:
                ratio = f"  ({float(row['value']) / float(row['baseline_value']):.2f}x sqlite)"  # type: ignore[arg-type]
            print(f"{row['what']:<55} {row['value']:>8} {row['unit']}{ratio}")
