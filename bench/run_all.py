"""Every benchmark, each beside its baseline measured in the same run: one table (issue 12).

    python bench/run_all.py                     # every benchmark at full size
    python bench/run_all.py --quick             # each one's quick pass (under a minute each)
    python bench/run_all.py --only scale --only http
    python bench/run_all.py --quick --markdown  # the table to paste into bench/README.md

Each script of ``SCRIPTS`` runs in turn as a child process, ``python bench/NAME.py --json``
(and ``--quick``), and speaks this protocol: its last line on stdout is one JSON list of
rows ``{"what": str, "value": number, "unit": str, "baseline": str|null,
"baseline_value": number|null, "goal": str}``; ``baseline_value`` is the baseline measured
by the same script in the same run, in the same unit. A script that is missing, fails,
times out or prints anything else gets one line in the table that says so, and the run
goes on. The table is: what | aoe | baseline in the same run | ratio (aoe / baseline) |
goal | met?, followed by the machine (cores, Python, load average before and after), the
date and each script's command and time. The exit code is 0 whenever the table was
printed: a goal missed is a finding, not an error; bad usage exits 2.

``met?`` reads the goal as ``OP NUMBER [x | % | UNIT] [words]``, OP one of ``<= ≤ < >= ≥
> = ==``, commas allowed in the number:
  ``<= 0.4 ms``, ``>= 2,000 calls/s``   the value itself (a unit named must be the row's);
  ``<= 1.02x baseline``                 the ratio value / baseline_value;
  ``>= 50 % of aiohttp``                the ratio as a percentage, when the row's own unit
                                        is not ``%`` (``>= 95 %`` of a row in % is direct).
Anything else, or a ratio goal on a row without a baseline, is ``?``: compare by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent

SCRIPTS = (
    "bench_http.py",  # calls/s through the HTTP transport at 1-500 in flight
    "bench_chain.py",  # a chain of agents per step: the ledger and the engine
    "bench_outputs.py",  # --json, events, progress lines; memory; start-up
    "bench_scale.py",  # 500 in flight, 100 workflows, sustained calls/s, CPU per call
    "bench_engine.py",  # overhead per agent, makespan
    "bench_budget.py",  # how close to a budget runs get
    "bench_limiter.py",  # limiter and budget overhead, throughput at a binding limit
    "bench_pacing.py",  # pacing at a limit the server enforces, end to end
    "bench_ledger.py",  # the ledger's writes per call
    "bench_cli.py",  # aoe --help, validate and plan on 10,000 agents
    "bench_redis.py",  # the Redis coordinator: round trips, added latency, calls/s
    "bench_fleet.py",  # four processes on one key and one budget through Redis
)

QUICK_TIMEOUT_S = 180.0  # the protocol asks under 60 s; a loaded machine gets slack
FULL_TIMEOUT_S = 1800.0
HEADERS = ("what", "aoe", "baseline in the same run", "ratio", "goal", "met?")
FIELDS: dict[str, tuple[type, ...]] = {
    "what": (str,),
    "value": (int, float),
    "unit": (str,),
    "baseline": (str, type(None)),
    "baseline_value": (int, float, type(None)),
    "goal": (str,),
}
TIMES = "\u00d7"  # the multiplication sign, as in 1.02x
UNITS = frozenset({"ns", "µs", "us", "ms", "s", "min", "B", "KB", "MB", "GB", "%"})
GOAL = re.compile(
    r"^\s*(<=|>=|==|≤|≥|<|>|=)\s*(\d[\d,]*(?:\.\d+)?|\.\d+)\s*(x|\u00d7|%)?\s*(\S*)",
    re.IGNORECASE,
)
COMPARE = {
    "<=": float.__le__,
    "≤": float.__le__,
    "<": float.__lt__,
    ">=": float.__ge__,
    "≥": float.__ge__,
    ">": float.__gt__,
    "=": float.__eq__,
    "==": float.__eq__,
}


@dataclass(frozen=True)
class Row:
    """One figure a benchmark reported."""

    what: str
    value: float
    unit: str
    baseline: str | None
    baseline_value: float | None
    goal: str

    @property
    def ratio(self) -> float | None:
        """value / baseline_value, or None without a (non-zero) baseline."""
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    def met(self) -> str:
        """``yes``, ``NO``, ``?`` (a goal this module cannot read: see the docstring), or
        ``—`` for a figure without a goal (an empty goal or ``—``)."""
        if self.goal.strip() in ("", "-", "\u2014"):
            return "\u2014"
        found = GOAL.match(self.goal)
        if found is None:
            return "?"
        op, number, scale, word = found.groups()
        target = float(number.replace(",", ""))
        value: float | None = self.value
        if scale in ("x", "X", TIMES) or (scale == "%" and self.unit != "%"):
            value = self.ratio
            if value is not None and scale == "%":
                value *= 100
        elif word in UNITS and word != self.unit:
            return "?"  # a goal in other units than the figure
        if value is None:
            return "?"
        return "yes" if COMPARE[op](float(value), target) else "NO"


@dataclass(frozen=True)
class Outcome:
    """What one script gave: its rows, or why there are none."""

    script: str
    command: str
    rows: tuple[Row, ...]
    problem: str | None
    seconds: float


def parse_rows(stdout: str) -> tuple[Row, ...]:
    """The rows of the protocol from a script's stdout; ValueError saying what is wrong."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("printed nothing")
    try:
        data = json.loads(lines[-1])
    except ValueError:
        raise ValueError(f"last line is not JSON: {_clip(lines[-1])}") from None
    if not isinstance(data, list):
        raise ValueError(f"last line is JSON but not a list: {_clip(lines[-1])}")
    rows = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ValueError(f"row {index} is not an object")
        for name, types in FIELDS.items():
            if name not in item:
                raise ValueError(f"row {index} has no {name!r}")
            value = item[name]
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"row {index}: {name!r} is {type(value).__name__}")
        numbers = (item["value"], item["baseline_value"])
        if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
            raise ValueError(f"row {index}: a value is not a finite number")
        rows.append(Row(**{name: item[name] for name in FIELDS}))
    return tuple(rows)


def run_script(path: Path, *, quick: bool, timeout_s: float) -> Outcome:
    """Run one benchmark script by the protocol; never raises for what the script does."""
    argv = [sys.executable, str(path), "--json", *(["--quick"] if quick else [])]
    command = " ".join(["python", _shown(path), *argv[2:]])
    if not path.is_file():
        return Outcome(path.name, command, (), "missing: not written yet", 0.0)
    started = time.monotonic()
    # a session of its own: a timeout ends the script with every process it started (the
    # servers and `aoe run` children of a benchmark), not the script alone
    with subprocess.Popen(
        argv,
        cwd=path.parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            seconds = time.monotonic() - started
            return Outcome(path.name, command, (), f"timed out after {timeout_s:g} s", seconds)
    done = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    seconds = time.monotonic() - started
    if done.returncode == 2 and "--json" in done.stderr:  # argparse: unrecognized arguments
        problem = "does not speak the protocol yet (no --json)"
        return Outcome(path.name, command, (), problem, seconds)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        last = f": {_clip(said[-1])}" if said else ""
        problem = f"failed (exit {done.returncode}){last}"
        return Outcome(path.name, command, (), problem, seconds)
    try:
        rows = parse_rows(done.stdout)
    except ValueError as exc:
        problem = f"does not speak the protocol yet ({exc})"
        return Outcome(path.name, command, (), problem, seconds)
    return Outcome(path.name, command, rows, None, seconds)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _clip(text: str, width: int = 100) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def _number(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def _ratio(ratio: float) -> str:
    """Three decimals where goals live (1.005 against 1.02), three digits elsewhere."""
    return f"{ratio:.3f}" if 0.1 <= ratio < 10 else f"{ratio:.3g}"


def _figure(value: float, unit: str) -> str:
    if unit == "%":
        return f"{_number(value)} %"
    return f"{_number(value)} {unit}".strip()


def table_cells(outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per row: a script's rows, or one line saying why not."""
    cells: list[tuple[str, ...]] = []
    for outcome in outcomes:
        if outcome.problem is not None:
            cells.append((outcome.script, outcome.problem, "", "", "", ""))
            continue
        for row in outcome.rows:
            baseline = "—"
            if row.baseline is not None or row.baseline_value is not None:
                said = (
                    _figure(row.baseline_value, row.unit) if row.baseline_value is not None else "?"
                )
                baseline = f"{row.baseline or 'baseline'}: {said}"
            ratio = "—" if row.ratio is None else f"{_ratio(row.ratio)}{TIMES}"
            cells.append(
                (row.what, _figure(row.value, row.unit), baseline, ratio, row.goal, row.met())
            )
    return cells


def render_text(cells: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(c[i]) for c in [HEADERS, *cells]) for i in range(len(HEADERS))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    return "\n".join(lines)


def render_markdown(cells: Sequence[tuple[str, ...]]) -> str:
    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    rule = "|---|---:|---|---:|---|---|"
    return "\n".join([line(HEADERS), rule, *(line(row) for row in cells)])


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    def load(values: tuple[float, ...]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        f" ({platform.python_implementation()}), load average (1, 5, 15 min)"
        f" before {load(load_before)}, after {load(load_after)}"
    )


def select(names: Sequence[str]) -> list[str]:
    """The scripts ``--only`` names (``scale``, ``bench_scale`` or ``bench_scale.py``)."""
    if not names:
        return list(SCRIPTS)
    chosen = []
    for name in names:
        stem = name.removesuffix(".py").removeprefix("bench_")
        script = f"bench_{stem}.py"
        if script not in SCRIPTS:
            known = ", ".join(s.removesuffix(".py").removeprefix("bench_") for s in SCRIPTS)
            raise ValueError(f"no benchmark named {name!r}; known: {known}")
        chosen.append(script)
    return sorted(set(chosen), key=SCRIPTS.index)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="each script's quick pass")
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="this script (repeatable)"
    )
    parser.add_argument("--markdown", action="store_true", help="a table for bench/README.md")
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"seconds per script (default {QUICK_TIMEOUT_S:g} quick, {FULL_TIMEOUT_S:g} full)",
    )
    parser.add_argument("--dir", type=Path, default=BENCH, help="where the scripts are")
    args = parser.parse_args(argv)
    try:
        scripts = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    timeout_s = args.timeout or (QUICK_TIMEOUT_S if args.quick else FULL_TIMEOUT_S)

    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    outcomes = []
    for script in scripts:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        outcomes.append(run_script(args.dir / script, quick=args.quick, timeout_s=timeout_s))
    load_after = os.getloadavg()

    cells = table_cells(outcomes)
    command = "python bench/run_all.py" + "".join(
        [" --quick" if args.quick else "", *(f" --only {n}" for n in args.only)]
    )
    ran = [
        (
            o.command,
            f"{o.seconds:.0f} s, "
            + (
                f"{len(o.rows)} row{'s' * (len(o.rows) != 1)}"
                if o.problem is None
                else o.problem.split(" (")[0]
            ),
        )
        for o in outcomes
        if o.seconds
    ]
    if args.markdown:
        print(f"`{command}`, {date}; {machine(load_before, load_after)}.\n")
        print(render_markdown(cells))
        print("\nScripts run:\n")
        print("\n".join(f"- `{cmd}`: {summary}" for cmd, summary in ran))
    else:
        print(render_text(cells))
        print(f"\n{command}  ({date})")
        print(machine(load_before, load_after))
        print("\n".join(f"{cmd}: {summary}" for cmd, summary in ran))
    return 0


if __name__ == "__main__":
    sys.exit(main())
