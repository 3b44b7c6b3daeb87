"""bench/run_all.py: the one benchmark command reads each script by the protocol, says
what went wrong with a script instead of crashing, and judges each goal correctly.

The scripts here are tiny real Python files in a temporary folder, run as child processes
by ``run_all`` exactly as it runs the benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import run_all
from bench.run_all import Row

RUN_ALL = Path(run_all.__file__)


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "what": "calls/s, 100 in flight",
        "value": 1500.0,
        "unit": "calls/s",
        "baseline": "raw asyncio",
        "baseline_value": 3000.0,
        "goal": ">= 2,000",
    }
    row.update(fields)
    return row


def _printing(rows: list[dict[str, object]]) -> str:
    """A script that speaks the protocol: chatter first, the JSON list on its last line."""
    return f"""
        import json, sys
        print("warming up ...")
        rows = {rows!r}
        if "--quick" in sys.argv:
            rows[0]["what"] += " (quick)"
        print(json.dumps(rows))
    """


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, killed and not yet reaped, does not)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _run_all(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN_ALL), "--dir", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def test_rows_are_read_from_the_last_line_with_ratio_and_verdict(tmp_path: Path) -> None:
    """A script's rows come through with aoe / baseline as the ratio and the goal judged."""
    rows = [
        _row(),
        _row(what="CPU per call", value=0.3, unit="ms", baseline_value=0.2, goal="<= 0.4 ms"),
    ]
    script = _script(tmp_path, "bench_http.py", _printing(rows))
    outcome = run_all.run_script(script, quick=True, timeout_s=30)
    assert outcome.problem is None
    assert [r.what for r in outcome.rows] == ["calls/s, 100 in flight (quick)", "CPU per call"]
    cells = run_all.table_cells([outcome])
    assert cells[0] == (
        "calls/s, 100 in flight (quick)",
        "1,500 calls/s",
        "raw asyncio: 3,000 calls/s",
        "0.500\u00d7",
        ">= 2,000",
        "NO",
    )
    assert cells[1][1] == "0.3 ms"
    assert cells[1][3] == "1.500\u00d7"
    assert cells[1][5] == "yes"


def test_without_quick_the_script_runs_its_full_pass(tmp_path: Path) -> None:
    """``--quick`` is passed on only when asked for."""
    script = _script(tmp_path, "bench_http.py", _printing([_row()]))
    outcome = run_all.run_script(script, quick=False, timeout_s=30)
    assert [r.what for r in outcome.rows] == ["calls/s, 100 in flight"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("print('calls/s: 1500')", "does not speak the protocol yet (last line is not JSON"),
        ("print('{\"what\": 1}')", "last line is JSON but not a list"),
        ('print(\'[{"what": "x", "value": 1}]\')', "row 0 has no 'unit'"),
        (f"print({json.dumps(json.dumps([_row(value='fast')]))})", "'value' is str"),
        (f"print({json.dumps(json.dumps([_row(value=True)]))})", "'value' is bool"),
        ("pass", "printed nothing"),
        ("raise SystemExit('boom: the server never started')", "failed (exit 1): boom"),
        (
            "import argparse; argparse.ArgumentParser().parse_args()",
            "does not speak the protocol yet (no --json)",
        ),
    ],
)
def test_a_script_that_does_not_speak_the_protocol_is_named_with_why(
    tmp_path: Path, body: str, said: str
) -> None:
    """Garbage, a wrong row, a crash or an unknown --json: no rows, and the reason."""
    script = _script(tmp_path, "bench_chain.py", body)
    outcome = run_all.run_script(script, quick=True, timeout_s=30)
    assert outcome.rows == ()
    assert outcome.problem is not None
    assert said in outcome.problem


def test_a_script_that_hangs_is_stopped_at_the_timeout_with_its_children(
    tmp_path: Path,
) -> None:
    """A benchmark that never ends costs the run its timeout, not the whole run, and the
    processes it started (its server, its `aoe run`) end with it."""
    pid_file = tmp_path / "child.pid"
    script = _script(
        tmp_path,
        "bench_chain.py",
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """,
    )
    outcome = run_all.run_script(script, quick=True, timeout_s=1.5)
    assert outcome.problem == "timed out after 1.5 s"
    assert outcome.seconds < 10
    child = int(pid_file.read_text())
    for _ in range(100):  # killed at once; init reaps it within moments
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


@pytest.mark.parametrize(
    ("goal", "value", "unit", "baseline_value", "met"),
    [
        ("<= 0.4 ms", 0.4, "ms", None, "yes"),
        ("≤ 0.4 ms", 0.41, "ms", None, "NO"),
        ("< 100 MB", 99.9, "MB", 64.6, "yes"),
        (">= 2,000 at 100 and at 500 in flight", 2000, "calls/s", 4050, "yes"),
        ("≥ 50 % of a minimal aiohttp client", 2100, "calls/s", 4000, "yes"),
        ("≥ 50 % of a minimal aiohttp client", 1900, "calls/s", 4000, "NO"),
        (">= 95 %", 96.1, "%", None, "yes"),
        ("<= 1.02x baseline", 6.2, "s", 6.074, "NO"),
        ("<= 1.02\u00d7 the bound", 6.1, "s", 6.074, "yes"),
        ("= 0", 0, "429s", None, "yes"),
        ("= 0", 1, "429s", None, "NO"),
        ("<= 1.02x baseline", 6.1, "s", None, "?"),  # a ratio goal needs a baseline
        ("<= 0.4 ms", 0.3, "s", None, "?"),  # the goal is in other units than the figure
        ("as fast as possible", 1, "s", None, "?"),
        ("", 0.113, "", None, "\u2014"),
    ],
)
def test_met_reads_the_goal_against_the_value_or_the_ratio(
    goal: str, value: float, unit: str, baseline_value: float | None, met: str
) -> None:
    """``met?`` compares the value, or the ratio for an ``x`` or ``%``-of goal."""
    row = Row("figure", value, unit, "baseline" if baseline_value else None, baseline_value, goal)
    assert row.met() == met


def test_the_command_reports_missing_and_broken_scripts_and_goes_on(tmp_path: Path) -> None:
    """End to end: a missing script and a broken one each get a line; the good script's
    rows, the machine, the loads and the date are printed; the exit code is 0."""
    _script(
        tmp_path,
        "bench_scale.py",
        _printing([_row(what="peak RSS", value=88.7, unit="MB", goal="< 100 MB")]),
    )
    _script(tmp_path, "bench_chain.py", "print('Traceback? no, just prose')")
    done = _run_all(tmp_path, "--quick", "--only", "http", "--only", "chain", "--only", "scale")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "what",
        "aoe",
        "baseline",
        "in",
        "the",
        "same",
        "run",
        "ratio",
        "goal",
        "met?",
    ]
    http, chain, scale = (
        next(line for line in lines if line.startswith(s))
        for s in ("bench_http.py", "bench_chain.py", "peak RSS (quick)")
    )
    assert "missing" in http
    assert "does not speak the protocol yet" in chain
    assert "88.7 MB" in scale
    assert "0.0296\u00d7" in scale
    assert scale.rstrip().endswith("yes")
    assert f"{os.cpu_count()} cores" in done.stdout
    assert "load average" in done.stdout
    assert "python bench/run_all.py --quick --only http --only chain --only scale" in done.stdout


def test_markdown_is_a_table_ready_for_the_readme(tmp_path: Path) -> None:
    """``--markdown`` prints the command, machine and date, then a pipe table with one line
    per row, a ``|`` inside a cell escaped."""
    _script(tmp_path, "bench_scale.py", _printing([_row(what="a | b")]))
    done = _run_all(tmp_path, "--markdown", "--only", "scale")
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| what | aoe | baseline in the same run | ratio | goal | met? |"
    assert table[1] == "|---|---:|---|---:|---|---|"
    assert table[2] == (
        "| a \\| b | 1,500 calls/s | raw asyncio: 3,000 calls/s | 0.500\u00d7 | >= 2,000 | NO |"
    )
    assert len(table) == 3
    assert done.stdout.startswith("`python bench/run_all.py --only scale`, 20")


def test_an_unknown_benchmark_name_is_a_usage_error(tmp_path: Path) -> None:
    """``--only nosuch`` exits 2 with the names it knows, and no traceback."""
    done = _run_all(tmp_path, "--only", "nosuch")
    assert done.returncode == 2
    assert "no benchmark named 'nosuch'" in done.stderr
    assert "scale" in done.stderr
    assert "Traceback" not in done.stderr
