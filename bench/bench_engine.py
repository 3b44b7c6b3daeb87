"""Engine benchmarks (issue 3): overhead per agent, makespan vs critical path.

    python bench/bench_engine.py            # all of them
    python bench/bench_engine.py overhead   # one of: overhead, makespan

overhead  10,000 agents with zero simulated latency, the simulator as the model, no
          ledger and no limits: wall time per agent is the engine's own overhead
          (scheduling, prompt rendering, request building, token estimate, events).
          Also the same with the SQLite ledger attached, every call recorded.
makespan  500 agents in a layered DAG with varied simulated latencies and no
          concurrency cap: the run's wall time against its critical-path length (the
          lower bound). Target: within 5 %.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob
from aoe.graph import WorkflowGraph
from aoe.ledger.store import Ledger
from aoe.providers.sim import SimulatorClient
from aoe.services import NullRecorder
from aoe.spec.models import (
    AgentSpec,
    Location,
    ModelRef,
    RetrySpec,
    SimulateSpec,
    WorkflowSpec,
)


class _Sim:
    def __init__(self) -> None:
        self.client = SimulatorClient()

    def client_for(self, model: ModelRef) -> SimulatorClient:
        return self.client

    async def aclose(self) -> None:
        return None


def layered(n: int, *, latency: tuple[float, float] | None, seed: int = 7) -> WorkflowSpec:
    """A layered DAG: levels of ~sqrt(n) agents, each needing 1-3 agents of earlier levels."""
    rnd = random.Random(seed)
    width = max(1, round(math.sqrt(n)))
    agents: dict[str, AgentSpec] = {}
    ids: list[str] = []
    for i in range(n):
        level = i // width
        agent_id = f"a{i:05d}"
        needs: tuple[str, ...] = ()
        if level:
            lo = max(0, (level - 3) * width)
            pool = ids[lo : level * width]
            needs = tuple(sorted(set(rnd.sample(pool, min(len(pool), rnd.randint(1, 3))))))
        lat = 0.0 if latency is None else round(rnd.uniform(*latency), 3)
        prompt = "Check batch {{ inputs.batch }}" + "".join(
            f" {{{{ agents.{d}.output }}}}" for d in needs[:1]
        )
        agents[agent_id] = AgentSpec(
            id=agent_id,
            model=ModelRef("openai", "gpt-4o-mini"),
            prompt=prompt,
            location=Location("bench", i + 1, 1),
            needs=needs,
            max_tokens=64,
            retry=RetrySpec(max_retries=0),
            simulate=SimulateSpec(latency_s=lat, output_tokens=8),
        )
        ids.append(agent_id)
    return WorkflowSpec(name=f"layered-{n}", path=Path("bench.yaml"), agents=agents)


async def _run(spec: WorkflowSpec, *, ledger_path: Path | None = None) -> float:
    ledger = Ledger.open(ledger_path) if ledger_path is not None else None
    runtime = Runtime(clients=_Sim(), recorder=ledger or NullRecorder())
    engine = Engine(runtime, EngineOptions())
    job = WorkflowJob.of(spec.name, spec, {"batch": "B-1"})  # the graph validation builds
    started = time.perf_counter()
    result = await engine.run([job])
    elapsed = time.perf_counter() - started
    if ledger is not None:
        await ledger.aclose()
    assert result.exit_code == 0, result.state
    return elapsed


def overhead(n: int = 10_000) -> list[tuple[str, str]]:
    spec = layered(n, latency=None)
    asyncio.run(_run(layered(200, latency=None)))  # warm up: tokenizer, templates
    bare = asyncio.run(_run(spec))
    with tempfile.TemporaryDirectory() as tmp:
        with_ledger = asyncio.run(_run(spec, ledger_path=Path(tmp) / "bench.db"))
    return [
        (f"{n} agents, no ledger", f"{bare:.2f} s total, {bare / n * 1000:.3f} ms/agent"),
        (
            f"{n} agents, SQLite ledger",
            f"{with_ledger:.2f} s total, {with_ledger / n * 1000:.3f} ms/agent",
        ),
    ]


def makespan(n: int = 500) -> list[tuple[str, str]]:
    spec = layered(n, latency=(0.05, 0.5))
    graph = WorkflowGraph.build(spec)
    elapsed = asyncio.run(_run(spec))
    ratio = elapsed / graph.critical_path_s
    return [
        (
            f"{n} agents, critical path",
            f"{graph.critical_path_s:.3f} s ({len(graph.critical_path)} agents)",
        ),
        (f"{n} agents, makespan", f"{elapsed:.3f} s, ratio {ratio:.3f} (target <= 1.05)"),
    ]


def main(argv: list[str]) -> None:
    wanted = argv or ["overhead", "makespan"]
    rows: list[tuple[str, str]] = []
    for name in wanted:
        rows.extend({"overhead": overhead, "makespan": makespan}[name]())
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
