"""Time the read-only commands as a user runs them: fresh processes, median of 5.

    python bench/bench_cli.py            # 10,000 agents, 5 runs each
    python bench/bench_cli.py --agents 2000 --runs 3

Runs ``python -m aoe`` with the repository on PYTHONPATH, so it measures this tree
whether or not aoe is installed. Prints a table with the targets of issue 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from gen_workflow import generate  # noqa: E402 - needs the path set just above


def _time(args: list[str], runs: int, env: dict[str, str]) -> tuple[float, float, int]:
    """Median and min wall seconds of ``python -m aoe ARGS``, and its exit code."""
    times = []
    code = 0
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "aoe", *args],
            env=env,
            capture_output=True,
            check=False,
        )
        times.append(time.perf_counter() - start)
        code = done.returncode
        if code != 0:
            sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
    return statistics.median(times), min(times), code


def main(argv: list[str] | None = None) -> int:
    """Generate the workflow, time each command, print the table; exit 1 if one failed."""
    parser = argparse.ArgumentParser(description="Time aoe --help, validate and plan.")
    parser.add_argument("--agents", type=int, default=10_000, help="agents in the workflow")
    parser.add_argument("--runs", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AOE_DEBUG", None)
    with tempfile.TemporaryDirectory() as tmp:
        workflow = Path(tmp) / f"w{args.agents}.yaml"
        workflow.write_text("\n".join(generate(args.agents)) + "\n", encoding="utf-8")
        cases = [
            ("aoe --help", ["--help"], 0.3),
            (f"aoe validate ({args.agents} agents)", ["validate", str(workflow)], 2.0),
            (
                f"aoe plan --format json ({args.agents} agents)",
                ["plan", "--format", "json", str(workflow)],
                2.0,
            ),
        ]
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {load}")
        print(f"{'command':<42} {'median s':>9} {'min s':>7} {'target s':>9}  result")
        failed = False
        for label, cli_args, target in cases:
            median, best, code = _time(cli_args, args.runs, env)
            if code != 0:
                verdict = f"FAILED (exit {code})"
            else:
                verdict = "ok" if median < target else "over target"
            failed |= code != 0
            print(f"{label:<42} {median:>9.3f} {best:>7.3f} {target:>9.1f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
