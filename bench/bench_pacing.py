"""Throughput under a binding rate limit, end to end against the loopback provider server.

    python bench/bench_pacing.py [AGENTS] [RPM]      # defaults: 3600 agents, 600 rpm (~5 min)
    python bench/bench_pacing.py --json --quick     # 660 agents: the rows for run_all.py

``--quick`` runs 660 agents at 600 requests per minute: the 60 beyond the first minute's
allowance must wait for it, so the limit binds, but a minute has to pass first (about
65 s, longer than other quick passes: no shorter run can show a per-minute limit
binding). It reports the violations only: 60 calls say nothing about steady throughput.

The loopback server (tests/fakeprovider.py) enforces RPM itself with its own sliding
60 s window over arrival times, says so in its rate-limit headers, and answers 429 to any
call over it: each 429 is a limit violation by aoe. `aoe run` (a child process, real
HTTP, the ledger) is configured with the same limit; it has far more agents than the
limit lets through in a minute, each answered after 50 ms.

Throughput is the steady rate after the first minute's allowance, from the moments aoe
let each call go (the ledger's call start times): (calls - RPM) / (minutes between the
first and the last call), against RPM. A sliding window cannot do better than RPM per
window; aoe's windows are 1 s longer than a minute (see ``aoe.ratelimit.WINDOW_MARGIN_S``),
which caps it at 60/61 = 98.4 %. The same figure from the server's arrival times is
printed too: it is lower by the seconds this 2-core machine needs to send a burst of
calls, an end effect that shrinks as the run gets longer.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakeprovider import FakeProvider


def measure(count: int, rpm: int) -> dict[str, float]:
    """One run of ``count`` agents at ``rpm``: calls, 429s, steady throughput, wall time."""
    server = FakeProvider(latency_s=0.05)
    # headers: the server's rate-limit headers tell its real limit, as a provider's do (its
    # default headers claim 500 a minute, which aoe would learn and pace to instead)
    server.enforce(requests_per_minute=rpm, headers=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "aoe.yaml").write_text(
                "providers:\n"
                f"  openai: {{type: openai, api_key_env: OPENAI_API_KEY,"
                f" base_url: '{server.openai_base_url}',"
                f" limits: {{requests_per_minute: {rpm}, tokens_per_minute: 100000000}}}}\n"
            )
            agents = "".join(
                f"  a{i:05d}:\n    prompt: 'Post journal entry {i}.'\n" for i in range(count)
            )
            (work / "wf.yaml").write_text(
                "version: 1\nname: pacing\ndefaults: {model: openai/gpt-4o-mini, max_tokens: 50}\n"
                "agents:\n" + agents
            )
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "AOE_DB": str(work / "l.db")}
            started = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "aoe", "run", "wf.yaml", "--no-live", "--json"],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wall = time.monotonic() - started
            with sqlite3.connect(work / "l.db") as db:
                grants = [r[0] for r in db.execute("select started_at from calls order by 1")]
    finally:
        server.stop()
    arrivals = [at for at, _ in server.limit_log]  # every call, when the server checked it

    def steady(times: list[float]) -> float:
        span_min = (times[-1] - times[0]) / 60
        return (len(times) - rpm) / span_min if span_min else float("nan")

    return {
        "code": code,
        "wall_s": wall,
        "calls": len(arrivals),
        "violations": server.limit_429s,
        "granted": steady(grants),
        "arrived": steady(arrivals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("agents", nargs="?", type=int, help="default 3600 (quick: 660)")
    parser.add_argument("rpm", nargs="?", type=int, default=600, help="default 600")
    parser.add_argument("--quick", action="store_true", help="660 agents: violations only")
    parser.add_argument("--json", action="store_true", help="the rows as JSON, last line")
    args = parser.parse_args()
    count = args.agents or (args.rpm * 11 // 10 if args.quick else 3600)
    rpm = args.rpm
    run = measure(count, rpm)
    limit = f"{count} agents at a server-enforced {rpm} requests/min"
    rows = [
        {
            "what": f"429s (limit violations), {limit}",
            "value": run["violations"],
            "unit": "429s",
            "baseline": None,
            "baseline_value": None,
            "goal": "= 0",
        },
    ]
    if not args.quick:
        rows.append(
            {
                "what": f"steady throughput (aoe's start times), {limit}",
                "value": round(run["granted"] / rpm * 100, 1),
                "unit": "%",
                "baseline": None,
                "baseline_value": None,
                "goal": ">= 95 %",
            }
        )
    if args.json:
        print(json.dumps(rows))
        return
    print(f"agents, limit              {count} agents, {rpm} requests per minute")
    print(f"exit code, wall time       {run['code']}, {run['wall_s']:.1f} s")
    print(f"calls seen by the server   {run['calls']}")
    print(f"429s (limit violations)    {run['violations']}")
    granted, arrived = run["granted"], run["arrived"]
    print(
        f"steady throughput          {granted:.1f} per minute = {granted / rpm:.1%} of the limit "
        "(target >= 95 %)"
    )
    print(f"  by server arrival times  {arrived:.1f} per minute = {arrived / rpm:.1%}")


if __name__ == "__main__":
    main()
