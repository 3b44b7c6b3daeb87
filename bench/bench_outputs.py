"""What a run costs around the engine: outputs, memory and start-up (issue 12).

    python bench/bench_outputs.py                     # about 3 minutes
    python bench/bench_outputs.py --json --quick      # under 60 s; last line: JSON rows
    python bench/bench_outputs.py --tree /tmp/before  # measure another checkout of aoe

Every figure comes from fresh child processes (``python -m aoe`` with the tree on
PYTHONPATH), each beside its baseline measured in the same run; variants alternate round
by round and the best of the rounds is kept:

1. 10,000 agents (levels of 100, each needing one agent of the level before), zero
   simulated latency, ``aoe run --simulate --json --events --no-live`` with the SQLite
   ledger: CPU seconds of the whole process (user + system, from wait4) per agent, and
   its peak RSS. Baseline: the engine alone on the same file in a child process (the
   spec loaded, then ``Engine.run`` with no ledger and no sinks; CPU of the run only).
2. 500 agents in flight at once against the loopback server (tests/fakeprovider.py,
   which holds each call 2 s), ``openai/gpt-4o-mini`` with prices and ``--budget``:
   peak RSS of ``aoe run``. Baseline: the same run on ``local/llama-3.1-8b-instruct``.
3. ``aoe --help`` wall time. Baseline: ``python -c pass``.
4. ``aoe run`` of 5 agents against the loopback server: from the process's spawn to
   the first request the server sees. Baseline: ``python -c pass``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakeprovider import FakeProvider  # noqa: E402 - needs the path set just above

_ENGINE_ALONE = """
import asyncio, gc, resource, sys, time
from pathlib import Path
from aoe.app.validate import check_workflow
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob
from aoe.providers.sim import SimulatorClient
from aoe.spec.inputs import resolve_inputs

class Sim:
    client = SimulatorClient()
    def client_for(self, model):
        return self.client
    async def aclose(self):
        return None

checked = check_workflow(Path(sys.argv[1]))
job = WorkflowJob.of(checked.spec.name, checked.spec, resolve_inputs(checked.spec, {}))
engine = Engine(Runtime(clients=Sim()), EngineOptions(run_id="bench", simulate=True))
gc.freeze()
started = time.process_time()
result = asyncio.run(engine.run([job]))
cpu = time.process_time() - started
assert result.exit_code == 0, result.state
print(cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@dataclass(frozen=True, slots=True)
class Row:
    what: str
    value: float
    unit: str
    baseline: str | None
    baseline_value: float | None
    goal: str


def _layered(count: int, model: str, *, width: int = 100) -> str:
    lines = [
        "version: 1",
        f"name: lean-{count}",
        "inputs:",
        "  batch: {type: string, default: B-1}",
        "defaults:",
        f"  model: {model}",
        "  max_tokens: 64",
        "  retry: {max_retries: 0}",
        "  simulate: {latency_s: 0, output_tokens: 8}",
        "agents:",
    ]
    for i in range(count):
        lines.append(f"  a{i:05d}:")
        if i >= width:
            need = f"a{i - width + (i * 7) % width:05d}"
            lines.append(f"    needs: [{need}]")
            lines.append(
                f"    prompt: 'Check batch {{{{ inputs.batch }}}}: {{{{ agents.{need}.output }}}}'"
            )
        else:
            lines.append("    prompt: 'Check batch {{ inputs.batch }}'")
    return "\n".join(lines) + "\n"


def _env(tree: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), **extra}
    for name in ("AOE_DEBUG", "CI"):
        env.pop(name, None)
    return env


def _child(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, float, float, bytes]:
    """Exit code, CPU seconds (user + system), peak RSS MB and stdout of a child."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        return (
            os.waitstatus_to_exitcode(status),
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,
            out.read(),
        )


def many_agents(tree: Path, count: int, rounds: int) -> list[Row]:
    """Row 1: CPU per agent and peak RSS of the CLI with --json --events, and the engine."""
    cli_cpu = cli_rss = engine_cpu = engine_rss = math.inf
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "wf.yaml").write_text(_layered(count, "openai/gpt-4o-mini"), encoding="utf-8")
        for r in range(rounds):
            for variant in ("cli", "engine") if r % 2 == 0 else ("engine", "cli"):
                if variant == "engine":
                    code, _, _, out = _child(
                        [sys.executable, "-c", _ENGINE_ALONE, "wf.yaml"], cwd=work, env=_env(tree)
                    )
                    cpu, rss = (float(x) for x in out.split())
                    engine_cpu, engine_rss = min(engine_cpu, cpu), min(engine_rss, rss)
                else:
                    args = ["run", "wf.yaml", "--simulate", "--no-live", "--json"]
                    args += ["--events", f"events-{r}.jsonl", "--db", f"l-{r}.db"]
                    code, cpu, rss, out = _child(
                        [sys.executable, "-m", "aoe", *args], cwd=work, env=_env(tree)
                    )
                    cli_cpu, cli_rss = min(cli_cpu, cpu), min(cli_rss, rss)
                    assert len(json.loads(out)["workflows"][0]["agents"]) == count
                assert code == 0, f"{variant} exited {code}"
    label = f"{count:,} agents, aoe run --json --events"
    return [
        Row(
            f"{label}: CPU per agent",
            cli_cpu / count * 1000,
            "ms",
            "the engine alone, same file",
            engine_cpu / count * 1000,
            "<= 0.25 ms per agent",
        ),
        Row(
            f"{label}: peak RSS",
            cli_rss,
            "MB",
            "the engine alone, same file",
            engine_rss,
            "< 150 MB",
        ),
    ]


def _rss_in_flight(tree: Path, count: int, model: str) -> float:
    server = FakeProvider(latency_s=2.0)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            limits = (
                "limits: {requests_per_minute: 100000, tokens_per_minute: 100000000,"
                " concurrent_requests: 10000}"
            )
            provider = model.split("/", maxsplit=1)[0]
            (work / "aoe.yaml").write_text(
                "providers:\n"
                f"  {provider}: {{type: openai, api_key_env: OPENAI_API_KEY,"
                f" base_url: '{server.openai_base_url}', {limits}}}\n"
                f"pricing: {{{model}: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}\n"
            )
            agents = "".join(
                f"  a{i:04d}:\n    prompt: 'Match invoice {i} against its purchase order.'\n"
                for i in range(count)
            )
            (work / "wf.yaml").write_text(
                f"version: 1\nname: rss\ndefaults: {{model: {model}, max_tokens: 100}}\n"
                "agents:\n" + agents
            )
            env = _env(tree, OPENAI_API_KEY="sk-bench", AOE_DB=str(work / "l.db"))
            args = [sys.executable, "-m", "aoe", "run", "wf.yaml", "--no-live", "--json"]
            code, _, rss, _ = _child([*args, "--budget", "100"], cwd=work, env=env)
            assert code == 0, f"aoe run exited {code}"
            assert server.peak_in_flight >= min(count, 500) * 0.9, server.peak_in_flight
            return rss
    finally:
        server.stop()


def in_flight(tree: Path, count: int, rounds: int) -> list[Row]:
    """Row 2: peak RSS with ``count`` agents in flight, an OpenAI model and a budget."""
    best = {"openai/gpt-4o-mini": math.inf, "local/llama-3.1-8b-instruct": math.inf}
    for r in range(rounds):
        for model in list(best)[:: 1 if r % 2 == 0 else -1]:
            best[model] = min(best[model], _rss_in_flight(tree, count, model))
    return [
        Row(
            f"{count} agents in flight, openai/gpt-4o-mini, --budget: peak RSS",
            best["openai/gpt-4o-mini"],
            "MB",
            "same run, local/llama-3.1-8b-instruct",
            best["local/llama-3.1-8b-instruct"],
            "< 100 MB",
        ),
    ]


def _wall(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, check=True)
    return time.perf_counter() - started


def _first_call(tree: Path) -> float:
    server = FakeProvider()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "aoe.yaml").write_text(
                "providers:\n"
                "  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
                f" base_url: '{server.openai_base_url}'}}\n"
            )
            agents = "".join(f"  a{i}:\n    prompt: 'Say {i}.'\n" for i in range(5))
            (work / "wf.yaml").write_text(
                "version: 1\nname: start\ndefaults: {model: openai/gpt-4o-mini}\nagents:\n" + agents
            )
            # a private price cache, filled by a first run that is not timed: what a second
            # run of an install finds (another install's cache never stands in for it)
            env = _env(
                tree,
                OPENAI_API_KEY="sk-bench",
                AOE_DB=str(work / "l.db"),
                XDG_CACHE_HOME=str(work / "cache"),
            )
            command = [sys.executable, "-m", "aoe", "run", "wf.yaml", "--no-live"]
            subprocess.run(command, cwd=work, env=env, capture_output=True, check=True)
            first_billed = len(server.billed)
            started = time.monotonic()
            subprocess.run(command, cwd=work, env=env, capture_output=True, check=True)
            return min(b.at for b in server.billed[first_billed:]) - started
    finally:
        server.stop()


def start_up(tree: Path, rounds: int) -> list[Row]:
    """Rows 3 and 4: ``aoe --help`` and ``aoe run`` to its first call, against python."""
    env = _env(tree)
    best = {"pass": math.inf, "help": math.inf, "first": math.inf}
    for _ in range(rounds):
        best["pass"] = min(best["pass"], _wall([sys.executable, "-c", "pass"], env))
        best["help"] = min(best["help"], _wall([sys.executable, "-m", "aoe", "--help"], env))
        best["first"] = min(best["first"], _first_call(tree))
    return [
        Row("aoe --help", best["help"], "s", "python -c pass", best["pass"], "< 0.08 s"),
        Row(
            "aoe run, 5 agents: start to first call",
            best["first"],
            "s",
            "python -c pass",
            best["pass"],
            "< 0.25 s",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON last")
    parser.add_argument("--quick", action="store_true", help="smaller and fewer runs (< 60 s)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the aoe checkout to measure")
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    # Byte-compile the tree first, so no variant pays for compiling what another did not.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "aoe")], check=True)
    agents, rounds = (2_000, 1) if args.quick else (10_000, 3)
    rows = [
        *start_up(tree, 3 if args.quick else 7),
        *many_agents(tree, agents, rounds),
        *in_flight(tree, 500, rounds),
    ]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{tree}: python {sys.version.split()[0]}, {os.cpu_count()} cores, load {load}")
    for row in rows:
        base = f"{row.baseline_value:.3f} ({row.baseline})" if row.baseline else "-"
        print(f"{row.what:<62} {row.value:>9.3f} {row.unit:<3} baseline {base}; goal {row.goal}")
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
