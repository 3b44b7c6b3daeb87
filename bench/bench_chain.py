"""A chain of agents per step, the engine per agent, and bytes per agent (issue 12).

    python bench/bench_chain.py                 # the table, about a minute
    python bench/bench_chain.py --json --quick  # rows for bench/run_all.py, under 60 s

chain     200 agents, each needing the one before (its prompt reads that output), on the
          simulator with zero latency, run as ``aoe run --simulate --events F`` runs it
          (``prepare`` + ``RunHandle``: the SQLite ledger, the run's lease, prices,
          budgets, events to a JSON Lines file). Per step is the span from the first
          agent's start to the last agent's end over the number of agents. Also with the
          ledger off (``--no-ledger``: no recorder, no lease). Baseline, in the same run:
          a plain asyncio chain of 200 tasks, each awaiting the one before.
engine    10,000 agents in the layered DAG of ``bench_engine.py`` (levels of 100) through
          the engine with the SQLite ledger, per agent; baseline the same run without a
          ledger.
memory    bytes per pending, running and finished agent: tracemalloc over 10,000 agents of
          one workflow (``memory`` below says what each state holds).

Every variant runs alternately, round by round, and the fastest round of each counts, so
that all of them see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench_engine  # noqa: E402

from aoe.app.prepare import RunOptions, prepare  # noqa: E402
from aoe.app.run import RunHandle  # noqa: E402
from aoe.engine.results import RunResult  # noqa: E402
from aoe.engine.runtime import Runtime  # noqa: E402
from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob  # noqa: E402
from aoe.monitor.jsonl import JsonlSink  # noqa: E402
from aoe.spec.models import (  # noqa: E402
    AgentSpec,
    Location,
    ModelRef,
    RetrySpec,
    SimulateSpec,
    WorkflowSpec,
)


def chain_yaml(n: int) -> str:
    lines = [
        "version: 1",
        "name: chain",
        "defaults:",
        "  model: openai/gpt-4o-mini",
        "  max_tokens: 64",
        "  retry: {max_retries: 0}",
        "  simulate: {latency_s: 0, output_tokens: 8}",
        "agents:",
    ]
    for i in range(n):
        lines.append(f"  s{i:04d}:")
        if i:
            lines.append(f"    needs: [s{i - 1:04d}]")
            lines.append(f"    prompt: 'step {i} after {{{{ agents.s{i - 1:04d}.output }}}}'")
        else:
            lines.append("    prompt: 'step 0'")
    return "\n".join(lines) + "\n"


async def _chain_run(work: Path, n: int, *, ledger: bool, events: bool) -> float:
    """Seconds per step of one ``aoe run --simulate`` of the chain of ``n``."""
    options = RunOptions(
        files=(work / "chain.yaml",),
        simulate=True,
        db_path=work / f"aoe-{time.monotonic_ns()}.db",
        use_ledger=ledger,
        command="aoe run chain.yaml --simulate",
    )
    prepared = await asyncio.to_thread(prepare, options)
    sinks = [JsonlSink.open(work / "events.jsonl")] if events else []
    try:
        result = await RunHandle(prepared, sinks).execute()
    finally:
        for sink in sinks:
            sink.close()
    assert result.exit_code == 0, result.state
    agents = result.workflows[0].agents.values()
    first = min(a.started_at for a in agents)
    last = max(a.ended_at for a in agents)
    return (last - first) / n


async def _plain_chain(n: int) -> float:
    """Seconds per step of a plain asyncio chain: ``n`` tasks, each awaiting the last."""

    async def step(before: asyncio.Task[int] | None, i: int) -> int:
        value = 0 if before is None else await before
        return value + i

    started = time.perf_counter()
    task: asyncio.Task[int] | None = None
    for i in range(n):
        task = asyncio.ensure_future(step(task, i))
    assert task is not None
    await task
    return (time.perf_counter() - started) / n


def best_of(rounds: int, variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every variant once per round, rotating the order; the fastest round of each."""
    best = dict.fromkeys(variants, math.inf)
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            best[name] = min(best[name], variants[name]())
    return best


def chain(rounds: int, n: int = 200) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "chain.yaml").write_text(chain_yaml(n))
        asyncio.run(_chain_run(work, n, ledger=True, events=True))  # warm up
        return best_of(
            rounds,
            {
                "plain": lambda: asyncio.run(_plain_chain(n)),
                "ledger+events": lambda: asyncio.run(_chain_run(work, n, ledger=True, events=True)),
                "no ledger, events": lambda: asyncio.run(
                    _chain_run(work, n, ledger=False, events=True)
                ),
                "ledger, no events": lambda: asyncio.run(
                    _chain_run(work, n, ledger=True, events=False)
                ),
            },
        )


def engine(rounds: int, n: int) -> dict[str, float]:
    spec = bench_engine.layered(n, latency=None)
    asyncio.run(bench_engine._run(bench_engine.layered(200, latency=None)))  # warm up
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))
        return {
            k: v / n
            for k, v in best_of(
                rounds,
                {
                    "bare": lambda: asyncio.run(bench_engine._run(spec)),
                    "ledger": lambda: asyncio.run(
                        bench_engine._run(spec, ledger_path=Path(tmp) / f"{next(counter)}.db")
                    ),
                },
            ).items()
        }


def _flat(n: int, latency_s: float, *, chain: bool = False) -> WorkflowSpec:
    """``n`` agents, independent or (``chain``) each needing the one before."""
    agents = {}
    for i in range(n):
        agent_id = f"a{i:05d}"
        needs = (f"a{i - 1:05d}",) if chain and i else ()
        agents[agent_id] = AgentSpec(
            id=agent_id,
            model=ModelRef("openai", "gpt-4o-mini"),
            prompt="Check batch {{ inputs.batch }}",
            location=Location("bench", i + 1, 1),
            needs=needs,
            max_tokens=64,
            retry=RetrySpec(max_retries=0),
            simulate=SimulateSpec(latency_s=0.0 if chain and i else latency_s, output_tokens=8),
        )
    return WorkflowSpec(name=f"flat-{n}", path=Path("bench.yaml"), agents=agents)


async def _held(n: int, *, chain: bool) -> int:
    """Bytes the engine holds while ``n`` agents are running (or, ``chain``, one runs and
    the others are pending): traced after they started, less before the run."""
    spec = _flat(n, 3600.0, chain=chain)
    job = WorkflowJob.of("mem", spec, {"batch": "B-1"})
    engine = Engine(Runtime(clients=bench_engine._Sim()), EngineOptions(run_id="mem"))
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    running = asyncio.create_task(engine.run([job]))
    want = 1 if chain else n
    while engine._running_total < want:  # noqa: ASYNC110 - the engine has no such event
        await asyncio.sleep(0.01)
    for _ in range(20):  # let every started agent reach its (simulated) call
        await asyncio.sleep(0)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    engine.cancel()
    await running
    return held


async def _finished(n: int) -> tuple[int, RunResult]:
    """Bytes a finished run of ``n`` agents keeps (its result: states, outputs, usage)."""
    spec = _flat(n, 0.0)
    job = WorkflowJob.of("mem", spec, {"batch": "B-1"})
    engine = Engine(Runtime(clients=bench_engine._Sim()), EngineOptions(run_id="mem"))
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    result = await engine.run([job])
    del engine
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, result


def memory(n: int) -> dict[str, float]:
    """Bytes per pending, running and finished agent, by tracemalloc over ``n`` agents."""
    asyncio.run(bench_engine._run(bench_engine.layered(200, latency=None)))  # warm up
    tracemalloc.start()
    try:
        pending = asyncio.run(_held(n, chain=True))
        running = asyncio.run(_held(n, chain=False))
        finished, result = asyncio.run(_finished(n))
        assert result.exit_code == 0
    finally:
        tracemalloc.stop()
    return {"pending": pending / n, "running": running / n, "finished": finished / n}


def row(
    what: str,
    value: float,
    unit: str,
    goal: str,
    baseline: str | None = None,
    baseline_value: float | None = None,
) -> dict[str, Any]:
    return {
        "what": what,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "goal": goal,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON, last")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, under 60 s")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    agents = 2_000 if args.quick else 10_000
    c = chain(rounds)
    e = engine(max(2, rounds - 2), agents)
    m = memory(agents)
    rows = [
        row(
            "chain of 200, per step, ledger and events on",
            c["ledger+events"] * 1e3,
            "ms",
            "<= 0.15 ms",
            "plain asyncio chain of 200 tasks",
            c["plain"] * 1e3,
        ),
        row(
            "chain of 200, per step, ledger off, events on",
            c["no ledger, events"] * 1e3,
            "ms",
            "<= 0.15 ms",
            "plain asyncio chain of 200 tasks",
            c["plain"] * 1e3,
        ),
        row(
            "chain of 200, per step, ledger on, events off",
            c["ledger, no events"] * 1e3,
            "ms",
            "(what the JSON Lines sink costs: the difference)",
            "plain asyncio chain of 200 tasks",
            c["plain"] * 1e3,
        ),
        row(
            f"engine, {agents} agents, SQLite ledger, per agent",
            e["ledger"] * 1e3,
            "ms",
            "<= 0.25 ms (through the CLI)",
            "the same run without a ledger",
            e["bare"] * 1e3,
        ),
    ]
    goals = {"pending": "documented", "running": "documented", "finished": "documented"}
    rows += [
        row(f"bytes per {state} agent (engine, {agents} agents)", m[state], "B", goals[state])
        for state in ("pending", "running", "finished")
    ]
    if args.json:
        print(json.dumps(rows))
        return
    width = max(len(r["what"]) for r in rows)
    for r in rows:
        base = (
            f"  ({r['baseline']}: {r['baseline_value']:.4f} {r['unit']})" if r["baseline"] else ""
        )
        value = f"{r['value']:.0f}" if r["unit"] == "B" else f"{r['value']:.4f}"
        print(f"{r['what']:<{width}}  {value} {r['unit']}{base}  goal {r['goal']}")


if __name__ == "__main__":
    main(sys.argv[1:])
