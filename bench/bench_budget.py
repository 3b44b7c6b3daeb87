"""How close to a budget runs get when the reservation is a bound (issue 10).

    python bench/bench_budget.py            # 60 runs per way of counting, about 30 s
    python bench/bench_budget.py --json --quick   # 15 runs each: the rows for run_all.py

The randomized runs of tests/integration/test_budget_bounds.py (random agents, prompts,
max tokens, output and budgets) against the loopback server counting tokens as
characters/4, as bytes, or with tiktoken, behind a base_url aoe cannot know the
tokenizer of, so every budget reserves the byte bound. For the runs a budget stopped
(exit 3), utilisation is what the server billed divided by the tightest budget: 1.0 would
be every cent used, and it can never pass 1.0 (the test asserts it). What is left unused
is what the bound reserves above what the server then billed, for the calls a budget
could no longer take.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakeprovider import FakeProvider
from tests.integration.test_budget_bounds import COUNTINGS, _one_run

RUNS = 60
QUICK_RUNS = 15


async def _utilisation(counting: str, runs: int) -> list[tuple[float, int]]:
    server = FakeProvider()
    server.start()
    used: list[tuple[float, int]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rng = random.Random(f"bench-{counting}")
            for index in range(runs):
                utilisation, result = await _one_run(
                    rng, Path(tmp), server, index, counting=counting
                )
                if result.exit_code == 3:
                    agents = sum(len(w.agents) for w in result.workflows)
                    used.append((utilisation, agents))
    finally:
        server.stop()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs per counting")
    parser.add_argument("--json", action="store_true", help="the rows as JSON, last line")
    args = parser.parse_args()
    runs = QUICK_RUNS if args.quick else RUNS
    rows: list[dict[str, object]] = []
    if not args.json:
        print(f"{runs} randomized runs per way of counting; utilisation of the runs a budget")
        print("stopped, all of them and those of 60 agents or more:")
        print(
            f"{'server counts':<16}{'stopped':>8}{'min':>7}{'median':>8}{'max':>7}"
            f"{'60+ median':>12}"
        )
    for counting in COUNTINGS:
        found = asyncio.run(_utilisation(counting, runs))
        used = [u for u, _ in found]
        large = [u for u, agents in found if agents >= 60]
        what = f"budget utilisation, server counts {counting}, {len(used)} runs stopped"
        rows.append(
            {
                "what": f"{what}: max",
                "value": round(max(used, default=0), 3),
                "unit": "",
                "baseline": None,
                "baseline_value": None,
                "goal": "<= 1",
            }
        )
        rows.append(
            {
                "what": f"{what}: median",
                "value": round(statistics.median(used or [0]), 3),
                "unit": "",
                "baseline": None,
                "baseline_value": None,
                "goal": "",
            }
        )
        if args.json:
            continue
        if not used:
            print(f"{counting:<16}{0:>8}")
            continue
        print(
            f"{counting:<16}{len(used):>8}{min(used):>7.2f}{statistics.median(used):>8.2f}"
            f"{max(used):>7.2f}{statistics.median(large) if large else 0:>12.2f}"
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
