"""The engine's overhead per agent, this tree against another commit, side by side.

    python bench/compare_engine.py b621036          # 10,000 agents, 7 rounds
    python bench/compare_engine.py HEAD~3 --agents 5000 --rounds 5

Checks the other commit out into a temporary git worktree and runs each tree's own
``bench/bench_engine.py`` ``_run`` (the engine on the simulator, zero latency; with and
without the SQLite ledger), and a chain of 200 agents run as ``aoe run --simulate
--events`` (``bench_chain.py``'s, fastest of 3, ms per step), in fresh processes,
alternating between the trees so both see the same machine load. Reports the fastest
round of each (the least disturbed by other work on a shared machine) and the ratio
this / other: at most 1.0 means no slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: ``chain_yaml`` and ``_chain_run`` of this file run in both trees (an ``aoe run
#: --simulate`` of a chain of 200 with the ledger and events, ms per step).
CHAIN = ROOT / "bench" / "bench_chain.py"

DRIVER = """
import asyncio, json, sys, tempfile
from pathlib import Path
root, chain_py = Path(sys.argv[1]), sys.argv[3]
sys.path[:0] = [str(root), str(root / "bench")]
import bench_engine as b
n = int(sys.argv[2])
spec = b.layered(n, latency=None)
asyncio.run(b._run(b.layered(200, latency=None)))  # warm up: tokenizer, templates
bare = asyncio.run(b._run(spec))
with tempfile.TemporaryDirectory() as tmp:
    ledger = asyncio.run(b._run(spec, ledger_path=Path(tmp) / "bench.db"))
    chain = {"__file__": str(root / "bench" / "bench_chain.py"), "__name__": "chain"}
    exec(compile(open(chain_py).read(), chain_py, "exec"), chain)
    work = Path(tmp)
    (work / "chain.yaml").write_text(chain["chain_yaml"](200))
    run = chain["_chain_run"]
    asyncio.run(run(work, 200, ledger=True, events=True))  # warm up
    step = min(asyncio.run(run(work, 200, ledger=True, events=True)) for _ in range(3))
print(json.dumps({"bare": bare / n * 1000, "ledger": ledger / n * 1000, "chain": step * 1000}))
"""


def _round(tree: Path, agents: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tree), str(agents), str(CHAIN)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", help="the commit to compare with (e.g. b621036)")
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.other],
            check=True,
            capture_output=True,
        )
        try:
            best: dict[str, dict[str, float]] = {"this": {}, "other": {}}
            for _ in range(args.rounds):
                for name, tree in (("this", ROOT), ("other", other)):
                    for kind, ms in _round(tree, args.agents).items():
                        best[name][kind] = min(ms, best[name].get(kind, ms))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                check=False,
                capture_output=True,
            )
    print(f"{args.agents} agents, fastest of {args.rounds} rounds, ms per agent:")
    print(f"{'':<12}{'this':>8}{args.other[:12]:>14}{'ratio':>8}")
    labels = {"bare": "no ledger", "ledger": "SQLite", "chain": "chain/step"}
    for kind, label in labels.items():
        this, that = best["this"][kind], best["other"][kind]
        print(f"{label:<12}{this:>8.3f}{that:>14.3f}{this / that:>8.2f}")


if __name__ == "__main__":
    main()
