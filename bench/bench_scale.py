"""The seed's scale claims, measured end to end (issue 12).

    python bench/bench_scale.py                 # every claim, about 2 minutes
    python bench/bench_scale.py --quick         # smaller runs, under a minute
    python bench/bench_scale.py --json --quick  # the rows for bench/run_all.py

Every claim runs ``aoe run`` as a child process against the loopback server
(tests/fakeprovider.py), which runs in a process of its own, so its CPU and memory are
never counted as aoe's; what the server saw (calls, peak calls in flight, 429s) comes back
from it when it stops. The server sends no rate-limit headers (its defaults claim 500
requests a minute, which aoe would learn and pace to) except where a limit is enforced.
Peak RSS and CPU time are the ``aoe`` process's own, from wait4(2).

in flight   500 agents at once: the server holds every call (2 s; quick 1.5 s) so all are
            in flight together. Peak RSS with an OpenAI model (exact counts: the o200k
            vocabulary) and a budget, against the same run on a local model (bytes
            estimated) in the same run. Goal: under 100 MB.
workflows   100 workflow instances at once (``--each`` of 100 rows, ``--max-workflows
            100``), each a 5-agent diamond, 0.3 s per call: peak RSS and wall time, against
            one workflow holding the same 500 agents as 100 diamonds (same calls, same depth).
            Quick: 0.1 s per call.
sustained   calls per second under a limit the server enforces (8 calls at once and 6,000 a
            minute; 0.1 s per call, so at most 80 a second): aoe configured at those limits,
            for 30 s (quick 10 s). The rate is the calls the server accepted after the first
            2 s over the time they took; every 429 after the first 2 s is a violation.
cpu         CPU per call through ``aoe run`` at 1, 10 and 100 calls in flight, latency 0:
            (CPU of the run - CPU of a 1-agent run) / calls, so start-up is not counted.
            Baseline: a raw asyncio HTTP/1.1 client (keep-alive connections, the same
            request body) against the same server, measured the same way. Fastest of 3
            rounds (quick: 1, 200 calls), the variants alternated. Goal: at most 0.4 ms per call.
makespan    the layered 500-agent DAG of bench_engine.py (0.05-0.5 s simulated per agent)
            in process, at most 50 agents at once: the run's wall time against the bound,
            max(critical path, total work / 50), after a warm-up run that loads the
            tokenizer; fastest of 5 runs (quick: 1). Goal: at most 1.02 x the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024  # ru_maxrss is in KiB on Linux

# The loopback server in its own process: prints its port, serves until a line arrives on
# stdin, then prints what it saw as one JSON line.
SERVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.fakeprovider import FakeProvider
latency, rpm, concurrent = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
server = FakeProvider(latency_s=latency)
for model in sys.argv[5:]:
    server.headers_for_model(model, {})  # no rate-limit headers for aoe to learn from
if rpm or concurrent:
    server.enforce(requests_per_minute=rpm or None, concurrent=concurrent or None,
                   say_which=True)
server.start()
print(server.port, flush=True)
sys.stdin.readline()
server.stop()
print(json.dumps({"calls": server.calls(), "peak_in_flight": server.peak_in_flight,
                  "limit_429s": server.limit_429s, "limit_log": server.limit_log}))
"""

# The baseline client: raw asyncio streams, HTTP/1.1 keep-alive, one connection per call
# in flight, the body aoe sends for the same agent. Prints nothing; its CPU is measured.
CLIENT = """
import asyncio, json, sys
port, calls, in_flight = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

async def worker(share):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(share):
        body = json.dumps({"model": "llama", "max_tokens": 50, "messages": [
            {"role": "user", "content": f"Post journal entry {i}."}]}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\\r\\nhost: 127.0.0.1\\r\\n"
                     b"authorization: Bearer sk-bench\\r\\ncontent-type: application/json\\r\\n"
                     b"content-length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body)
        length = 0
        status = await reader.readline()
        while (line := await reader.readline()) not in (b"\\r\\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        answer = json.loads(await reader.readexactly(length))
        assert status.split()[1] == b"200" and answer["usage"], status
    writer.close()

async def main():
    shares = [calls // in_flight + (i < calls % in_flight) for i in range(in_flight)]
    await asyncio.gather(*(worker(s) for s in shares if s))

asyncio.run(main())
"""


@dataclass(frozen=True)
class Row:
    """One line of the protocol's JSON list (see bench/run_all.py)."""

    what: str
    value: float
    unit: str
    goal: str
    baseline: str | None = None
    baseline_value: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": self.baseline_value,
            "goal": self.goal,
        }


@dataclass(frozen=True)
class Usage:
    """What one child process cost: exit code, wall time, CPU time, peak RSS."""

    code: int
    wall_s: float
    cpu_s: float
    rss_mb: float


class Server:
    """The loopback server in a child process; ``stop`` returns what it saw."""

    def __init__(
        self, latency_s: float, *, rpm: int = 0, concurrent: int = 0, models: tuple[str, ...]
    ) -> None:
        argv = [str(ROOT), str(latency_s), str(rpm), str(concurrent), *models]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("stop\n", timeout=30)
        seen: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return seen


def measure(argv: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> Usage:
    """Run a child process to its end; its own CPU time and peak RSS from wait4(2)."""
    started = time.monotonic()
    with open(cwd / "stderr.txt", "w") as err:  # a file: a pipe would fill and block it
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > timeout_s:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Usage(
        proc.returncode,
        time.monotonic() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / MB,
    )


def aoe_run(work: Path, *args: str, timeout_s: float = 300) -> Usage:
    """``aoe run wf.yaml ARGS --no-live --json`` in ``work``, with its own ledger."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "AOE_DB": str(work / "ledger.db")}
    argv = [sys.executable, "-m", "aoe", "run", "wf.yaml", *args, "--no-live", "--json"]
    usage = measure(argv, cwd=work, env=env, timeout_s=timeout_s)
    if usage.code != 0:
        tail = (work / "stderr.txt").read_text()[-600:]
        raise RuntimeError(f"aoe run exited {usage.code} in {work}:\n{tail}")
    return usage


def write_config(work: Path, base_url: str, limits: str) -> None:
    """aoe.yaml: provider ``openai`` (OpenAI's models, exact counts) and ``local`` (an
    OpenAI-compatible server, bytes estimated), both at the loopback server."""
    (work / "aoe.yaml").write_text(
        "providers:\n"
        + "".join(
            f"  {name}: {{type: openai, api_key_env: OPENAI_API_KEY,"
            f" base_url: '{base_url}', limits: {{{limits}}}}}\n"
            for name in ("openai", "local")
        )
        + "pricing:\n  local/llama: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n"
    )


NO_LIMITS = (
    "requests_per_minute: 10000000, tokens_per_minute: 10000000000, concurrent_requests: 10000"
)


def _flat(name: str, model: str, count: int) -> str:
    agents = "".join(f"  a{i:05d}:\n    prompt: 'Post journal entry {i}.'\n" for i in range(count))
    return (
        f"version: 1\nname: {name}\ndefaults: {{model: {model}, max_tokens: 50}}\n"
        "agents:\n" + agents
    )


def in_flight(quick: bool) -> list[Row]:
    count, latency = 500, 1.5 if quick else 2.0
    rss: dict[str, float] = {}
    peak: dict[str, int] = {}
    for model in ("local/llama", "openai/gpt-4o-mini"):
        server = Server(latency, models=("llama", "gpt-4o-mini"))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            write_config(work, server.openai_base_url, NO_LIMITS)
            (work / "wf.yaml").write_text(_flat("inflight", model, count))
            try:
                usage = aoe_run(work, "--budget", "5")
            finally:
                seen = server.stop()
        rss[model], peak[model] = usage.rss_mb, seen["peak_in_flight"]
    return [
        Row(
            f"{count} agents in flight, OpenAI model, with a budget: peak RSS",
            round(rss["openai/gpt-4o-mini"], 1),
            "MB",
            "< 100 MB",
            "same run, local model",
            round(rss["local/llama"], 1),
        ),
        Row(
            f"{count} agents in flight: peak calls in flight at the server",
            min(peak.values()),
            "calls",
            f">= {count}",
        ),
    ]


DIAMOND = (
    ("extract", ()),
    ("match", ("extract",)),
    ("check", ("extract",)),
    ("reconcile", ("match", "check")),
    ("post", ("reconcile",)),
)


def _diamond(prefix: str, ref: str) -> str:
    lines = []
    for name, needs in DIAMOND:
        lines.append(f"  {prefix}{name}:\n    prompt: 'Invoice {ref}: {name}.'\n")
        if needs:
            lines.append(f"    needs: [{', '.join(prefix + n for n in needs)}]\n")
    return "".join(lines)


def workflows(quick: bool) -> list[Row]:
    count, latency = 100, 0.1 if quick else 0.3
    head = "version: 1\nname: {name}\ndefaults: {{model: local/llama, max_tokens: 50}}\n"
    variants = {
        "instances": (
            head.format(name="invoice")
            + "inputs:\n  invoice: {type: string}\nagents:\n"
            + _diamond("", "{{ inputs.invoice }}"),
            ("--each", "rows.jsonl", "--max-workflows", str(count)),
        ),
        "one workflow": (
            head.format(name="all")
            + "agents:\n"
            + "".join(_diamond(f"i{i:03d}_", f"INV-{i}") for i in range(count)),
            (),
        ),
    }
    usage: dict[str, Usage] = {}
    peak: dict[str, int] = {}
    for name, (text, args) in variants.items():
        server = Server(latency, models=("llama",))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            write_config(work, server.openai_base_url, NO_LIMITS)
            (work / "wf.yaml").write_text(text)
            (work / "rows.jsonl").write_text(
                "".join(json.dumps({"invoice": f"INV-{i}"}) + "\n" for i in range(count))
            )
            try:
                usage[name] = aoe_run(work, "--max-parallel", "1000", *args)
            finally:
                seen = server.stop()
        peak[name] = seen["peak_in_flight"]
        if seen["calls"] != count * len(DIAMOND):
            raise RuntimeError(f"{name}: the server saw {seen['calls']} calls")
    inst, one = usage["instances"], usage["one workflow"]
    baseline = f"same run, one workflow of the same {count * len(DIAMOND)} agents"
    return [
        Row(
            f"{count} workflows at once (--each): peak RSS",
            round(inst.rss_mb, 1),
            "MB",
            "< 100 MB",
            baseline,
            round(one.rss_mb, 1),
        ),
        Row(
            f"{count} workflows at once (--each): wall time",
            round(inst.wall_s, 2),
            "s",
            "<= 1.2x baseline",
            baseline,
            round(one.wall_s, 2),
        ),
        Row(
            f"{count} workflows at once (--each): peak calls in flight",
            peak["instances"],
            "calls",
            f">= {count}",
        ),
    ]


def sustained(quick: bool) -> list[Row]:
    duration_s, latency, concurrent, rpm, warmup_s = (10 if quick else 30), 0.1, 8, 6000, 2.0
    count = int(duration_s * concurrent / latency)  # at least duration_s at the ceiling
    server = Server(latency, rpm=rpm, concurrent=concurrent, models=("llama",))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        limits = (
            f"requests_per_minute: {rpm}, tokens_per_minute: 10000000000,"
            f" concurrent_requests: {concurrent}"
        )
        write_config(work, server.openai_base_url, limits)
        (work / "wf.yaml").write_text(_flat("sustained", "local/llama", count))
        try:
            aoe_run(work)
        finally:
            seen = server.stop()
    log: list[tuple[float, bool]] = [(t, refused) for t, refused in seen["limit_log"]]
    first = log[0][0]
    late = [(t, refused) for t, refused in log if t - first >= warmup_s]
    accepted = [t for t, refused in late if not refused]
    rate = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    span = accepted[-1] - first
    limit = f"limit {concurrent} at once, {rpm}/min"
    return [
        Row(
            f"calls/s sustained for {span:.0f} s under a server-enforced {limit}",
            round(rate, 1),
            "calls/s",
            ">= 50",
        ),
        Row(
            f"429s after the first {warmup_s:.0f} s of that run ({seen['limit_429s']} in all)",
            sum(refused for _, refused in late),
            "429s",
            "= 0",
        ),
    ]


def _cpu_aoe(calls: int, parallel: int) -> float:
    server = Server(0.0, models=("llama",))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_config(work, server.openai_base_url, NO_LIMITS)
        (work / "wf.yaml").write_text(_flat("cpu", "local/llama", calls))
        try:
            usage = aoe_run(work, "--max-parallel", str(parallel))
        finally:
            server.stop()
    return usage.cpu_s


def _cpu_client(calls: int, parallel: int) -> float:
    server = Server(0.0, models=("llama",))
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-c", CLIENT, str(server.port), str(calls), str(parallel)]
        try:
            usage = measure(argv, cwd=Path(tmp), env=dict(os.environ), timeout_s=300)
        finally:
            seen = server.stop()
    if usage.code != 0 or seen["calls"] != calls:
        raise RuntimeError(f"the baseline client exited {usage.code}, {seen['calls']} calls")
    return usage.cpu_s


def cpu(quick: bool) -> list[Row]:
    calls, rounds = (200, 1) if quick else (2000, 3)
    levels = (1, 10, 100)
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for variant, run in (("aoe", _cpu_aoe), ("raw", _cpu_client)):
            start = run(1, 1)  # start-up and a single call: not counted
            for parallel in levels:
                per_call = (run(calls, parallel) - start) / (calls - 1) * 1000
                key = (variant, parallel)
                best[key] = min(per_call, best.get(key, math.inf))
    return [
        Row(
            f"CPU per call through aoe run, {n} in flight, latency 0",
            round(best["aoe", n], 3),
            "ms",
            "<= 0.4 ms",
            "raw asyncio client, same run",
            round(best["raw", n], 3),
        )
        for n in levels
    ]


def makespan(quick: bool) -> list[Row]:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_engine import _Sim, layered  # noqa: PLC0415  (bench/ is not a package)

    from aoe.engine.runtime import Runtime  # noqa: PLC0415
    from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob  # noqa: PLC0415

    count, cap = 500, 50
    spec = layered(count, latency=(0.05, 0.5))
    job = WorkflowJob.of(spec.name, spec, {"batch": "B-1"})
    work_s = sum(a.simulate.latency_s for a in spec.agents.values() if a.simulate)
    bound = max(job.graph.critical_path_s, work_s / cap)

    async def run(job: WorkflowJob = job) -> float:
        engine = Engine(Runtime(clients=_Sim()), EngineOptions(run_id="b", max_parallel=cap))
        started = time.perf_counter()
        result = await engine.run([job])
        assert result.exit_code == 0, result.state
        return time.perf_counter() - started

    warm = layered(200, latency=None)  # load the tokenizer and templates before timing
    asyncio.run(run(WorkflowJob.of(warm.name, warm, {"batch": "B-1"})))
    elapsed = min(asyncio.run(run()) for _ in range(1 if quick else 5))
    return [
        Row(
            f"makespan, layered {count}-agent DAG, at most {cap} at once",
            round(elapsed, 3),
            "s",
            "<= 1.02x baseline",
            "critical-path bound max(path, work/cap)",
            round(bound, 3),
        ),
    ]


CLAIMS: dict[str, Callable[[bool], list[Row]]] = {
    "in-flight": in_flight,
    "workflows": workflows,
    "sustained": sustained,
    "cpu": cpu,
    "makespan": makespan,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("claims", nargs="*", help=f"any of {', '.join(CLAIMS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    parser.add_argument("--json", action="store_true", help="the rows as JSON, last line")
    args = parser.parse_args()
    unknown = [c for c in args.claims if c not in CLAIMS]
    if unknown:
        parser.error(f"unknown claim {unknown[0]!r}: choose from {', '.join(CLAIMS)}")
    rows: list[Row] = []
    for name in args.claims or CLAIMS:
        found = CLAIMS[name](args.quick)
        rows.extend(found)
        if not args.json:
            for row in found:
                base = (
                    f"  ({row.baseline}: {row.baseline_value:g})"
                    if row.baseline_value is not None
                    else ""
                )
                print(
                    f"{row.what:<72} {row.value:>10g} {row.unit:<8} {row.goal:<18}{base}",
                    flush=True,
                )
    if args.json:
        print(json.dumps([r.as_json() for r in rows]))


if __name__ == "__main__":
    main()
