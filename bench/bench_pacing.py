"""Throughput under a binding rate limit, end to end against the loopback provider server.

    python bench/bench_pacing.py [AGENTS] [RPM]      # defaults: 3600 agents, 600 rpm (~5 min)

The loopback server (tests/fakeprovider.py) enforces RPM itself with its own sliding
60 s window over arrival times and answers 429 to any call over it: each 429 is a limit
violation by aoe. `aoe run` (a child process, real HTTP, the ledger) is configured with
the same limit; it has far more agents than the limit lets through in a minute, each
answered after 50 ms.

Throughput is the steady rate after the first minute's allowance, from the moments aoe
let each call go (the ledger's call start times): (calls - RPM) / (minutes between the
first and the last call), against RPM. A sliding window cannot do better than RPM per
window; aoe's windows are 1 s longer than a minute (see ``aoe.ratelimit.WINDOW_MARGIN_S``),
which caps it at 60/61 = 98.4 %. The same figure from the server's arrival times is
printed too: it is lower by the seconds this 2-core machine needs to send a burst of
calls, an end effect that shrinks as the run gets longer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakeprovider import FakeProvider


def main(count: int = 3600, rpm: int = 600) -> None:
    server = FakeProvider(latency_s=0.05)
    server.enforce(requests_per_minute=rpm)
    arrivals: list[float] = []
    original = server._over_limit

    def counted() -> bool:
        arrivals.append(time.monotonic())
        return original()

    server._over_limit = counted  # type: ignore[method-assign]
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
            agents = "".join(f"  a{i:05d}:\n    prompt: 'Post journal entry {i}.'\n"
                             for i in range(count))
            (work / "wf.yaml").write_text(
                "version: 1\nname: pacing\ndefaults: {model: openai/gpt-4o-mini, max_tokens: 50}\n"
                "agents:\n" + agents
            )
            env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "AOE_DB": str(work / "l.db")}
            started = time.monotonic()
            code = subprocess.call(
                [sys.executable, "-m", "aoe", "run", "wf.yaml", "--no-live", "--json"],
                cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            wall = time.monotonic() - started
            import sqlite3

            with sqlite3.connect(work / "l.db") as db:
                grants = [r[0] for r in db.execute("select started_at from calls order by 1")]
    finally:
        server.stop()
    def steady(times: list[float]) -> float:
        span_min = (times[-1] - times[0]) / 60
        return (len(times) - rpm) / span_min if span_min else float("nan")

    print(f"agents, limit              {count} agents, {rpm} requests per minute")
    print(f"exit code, wall time       {code}, {wall:.1f} s")
    print(f"calls seen by the server   {len(arrivals)}")
    print(f"429s (limit violations)    {server.limit_429s}")
    granted, arrived = steady(grants), steady(arrivals)
    print(f"steady throughput          {granted:.1f} per minute = {granted / rpm:.1%} of the limit "
          "(target >= 95 %)")
    print(f"  by server arrival times  {arrived:.1f} per minute = {arrived / rpm:.1%}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
