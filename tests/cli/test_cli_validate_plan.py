"""`aoe validate` and `aoe plan` as a user runs them: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aoe import __version__
from aoe.cli.main import app, main
from aoe.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]

SEED = """\
version: 1
name: seed
budget_usd: 0.5
agents:
  A:
    model: sim/fast
    module: accounts_payable
    prompt: Start the batch.
    simulate: {latency_s: 1}
  B:
    model: sim/fast
    needs: [A]
    prompt: "Check {{ agents.A.output }}"
    simulate: {latency_s: 2}
  C:
    model: sim/fast
    needs: [A]
    prompt: "Classify {{ agents.A.output }}"
    simulate: {latency_s: 1.5}
  D:
    model: sim/fast
    needs: [B]
    prompt: "Match {{ agents.B.output }}"
    simulate: {latency_s: 3}
  E:
    model: sim/fast
    needs: [C, D]
    prompt: "Route {{ agents.C.output }} and {{ agents.D.output }}"
    simulate: {latency_s: 0.5}
"""
# Three problems: D needs an unknown agent (so its prompt's B is no longer upstream);
# C's prompt reads E, which is downstream of C.
BAD = SEED.replace("needs: [B]", "needs: [Bx]").replace(
    '"Classify {{ agents.A.output }}"', '"Classify {{ agents.E.output }}"'
)

runner = CliRunner()


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "seed.yaml"
    path.write_text(SEED, encoding="utf-8")
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


def aoe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m aoe` in a fresh process, as a user's shell would."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "aoe", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_good_file_prints_ok_and_exits_0(seed: Path) -> None:
    """A good file gets one `ok` line with its size and exit 0."""
    result = runner.invoke(app, ["validate", str(seed)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok  {seed} (5 agents, 4 levels)\n"


def test_validate_lists_every_problem_and_exits_2(bad: Path) -> None:
    """Every problem of a bad file is listed as FILE:LINE:COL with a hint."""
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    err = result.stderr
    assert f"{bad}:" in err
    assert "'D' needs 'Bx', which is no agent" in err
    assert "hint: did you mean 'B'?" in err
    assert "prompt of 'C' uses agents.E, but 'E' is not upstream of 'C'" in err
    assert "prompt of 'D' uses agents.B" in err
    assert err.endswith("3 problems in 1 file\n")


def test_validate_several_files_reports_each(seed: Path, bad: Path, tmp_path: Path) -> None:
    """Good and bad files together: ok lines for the good, problems for the bad, exit 2."""
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(seed), str(bad), str(missing)])
    assert result.exit_code == 2
    assert f"ok  {seed} (5 agents, 4 levels)" in result.stdout
    assert "'Bx', which is no agent" in result.stderr
    assert "nope.yaml" in result.stderr
    assert "in 2 of 3 files" in result.stderr


def test_validate_all_good_files_exit_0(seed: Path, tmp_path: Path) -> None:
    """Several good files exit 0 with one ok line each."""
    other = tmp_path / "other.yaml"
    other.write_text(SEED, encoding="utf-8")
    result = runner.invoke(app, ["validate", str(seed), str(other)])
    assert result.exit_code == 0
    assert result.stdout.count("ok  ") == 2


def test_plan_table_marks_the_critical_path(seed: Path) -> None:
    """`aoe plan` shows levels, modules and the starred critical path with its length."""
    result = runner.invoke(app, ["plan", str(seed)])
    assert result.exit_code == 0, result.output
    assert "★ A" in result.stdout
    assert "accounts_payable" in result.stdout
    assert "critical path: A -> B -> D -> E" in result.stdout
    assert "6.5 s" in result.stdout


def test_plan_json_is_machine_readable(seed: Path) -> None:
    """`aoe plan --format json` prints one JSON document with levels and critical path."""
    result = runner.invoke(app, ["plan", "--format", "json", str(seed)])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["levels"] == [["A"], ["B", "C"], ["D"], ["E"]]
    assert plan["critical_path"]["agents"] == ["A", "B", "D", "E"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("mermaid", "flowchart TD"), ("dot", 'digraph "seed"')],
)
def test_plan_diagrams(seed: Path, fmt: str, expected: str) -> None:
    """`--format mermaid|dot` prints a diagram ready to paste or pipe to Graphviz."""
    result = runner.invoke(app, ["plan", "-f", fmt, str(seed)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(expected)


def test_plan_bad_file_lists_problems_and_exits_2(bad: Path) -> None:
    """`aoe plan` on a bad file prints every problem, no traceback, exit 2."""
    code = main(["plan", str(bad)])
    assert code == 2


def test_plan_bad_file_in_a_real_process(bad: Path) -> None:
    """In a real process a spec error is FILE:LINE:COL lines with hints, never a traceback."""
    done = aoe("plan", str(bad))
    assert done.returncode == 2
    assert f"{bad}:" in done.stderr
    assert "hint: did you mean 'B'?" in done.stderr
    assert "not upstream" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_debug_shows_the_traceback(bad: Path) -> None:
    """`aoe --debug` (or AOE_DEBUG=1) adds the traceback to the error."""
    flag = aoe("--debug", "plan", str(bad))
    env = aoe("plan", str(bad), env={"AOE_DEBUG": "1"})
    for done in (flag, env):
        assert done.returncode == 2
        assert "Traceback (most recent call last)" in done.stderr
        assert "not upstream" in done.stderr


def test_validate_in_a_real_process(seed: Path, bad: Path) -> None:
    """`python -m aoe validate` exits 0 for good files and 2 when one is bad."""
    assert aoe("validate", str(seed)).returncode == 0
    done = aoe("validate", str(seed), str(bad))
    assert done.returncode == 2
    assert f"ok  {seed}" in done.stdout
    assert "Traceback" not in done.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that does not exist is one error line naming it, exit 2."""
    done = aoe("plan", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert "nope.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(seed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown options, bad choices and missing arguments are usage errors, exit 2."""
    assert main(["--bogus"]) == 2
    assert main(["plan"]) == 2
    assert main(["plan", "--format", "png", str(seed)]) == 2
    assert "png" in capsys.readouterr().err


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`aoe` alone shows the commands instead of doing anything."""
    main([])
    out = capsys.readouterr()
    assert "validate" in out.out + out.err
    assert "plan" in out.out + out.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`aoe --version` prints the version and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"aoe {__version__}"


def _app_raising(exc: BaseException) -> typer.Typer:
    """An app with one command that raises ``exc``, to see how main() reports it."""
    broken = typer.Typer()

    @broken.command()
    def boom() -> None:
        raise exc

    @broken.command()
    def other() -> None:  # a second command keeps `boom` a subcommand
        """Unused."""

    return broken


def test_unexpected_exception_is_an_internal_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug shows 'internal error ... rerun with --debug', exit 1, and no traceback."""
    code = main(["boom"], command=_app_raising(RuntimeError("secret-free bug")))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("internal error: RuntimeError: secret-free bug")
    assert "rerun with --debug" in err
    assert "Traceback" not in err
    monkeypatch.setenv("AOE_DEBUG", "1")
    assert main(["boom"], command=_app_raising(RuntimeError("bug"))) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_aoe_error_prints_error_and_hint(capsys: pytest.CaptureFixture[str]) -> None:
    """A user-facing error prints `error:` and `hint:` lines and uses its exit code."""
    exc = UsageError("bad value", where="--input", hint="use KEY=VALUE")
    assert main(["boom"], command=_app_raising(exc)) == 2
    assert capsys.readouterr().err == "error: --input: bad value\nhint: use KEY=VALUE\n"


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    """Pressing Ctrl-C ends aoe with exit code 130."""
    assert main(["boom"], command=_app_raising(KeyboardInterrupt())) == 130


def test_help_imports_nothing_heavy() -> None:
    """`aoe --help` stays fast: networkx, jsonschema, jinja2, httpx and rich are not loaded."""
    code = (
        "import sys, runpy; sys.argv = ['aoe', '--help']\n"
        "try:\n    runpy.run_module('aoe', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('networkx', 'jsonschema', 'jinja2', 'httpx', 'rich', 'yaml')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


WITH_INPUTS = """\
version: 1
name: limits
inputs:
  batch: {type: string}
  limit_usd: {type: number, default: 5000}
agents:
  check:
    model: sim/fast
    prompt: "Check {{ inputs.batch }} against {{ inputs.limit_usd }}"
"""


def test_plan_checks_and_shows_given_inputs(tmp_path: Path) -> None:
    """Inputs given to `aoe plan` are typed, defaulted and shown in the JSON plan."""
    path = tmp_path / "limits.yaml"
    path.write_text(WITH_INPUTS, encoding="utf-8")
    values = tmp_path / "inputs.json"
    values.write_text('{"batch": "B-7"}', encoding="utf-8")
    result = runner.invoke(
        app, ["plan", "-f", "json", "--inputs", str(values), "--input", "limit_usd=250", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"] == {"batch": "B-7", "limit_usd": 250}


def test_plan_rejects_a_mistyped_input_by_name(tmp_path: Path) -> None:
    """A value that does not fit its input's type is exit 2 naming the input."""
    path = tmp_path / "limits.yaml"
    path.write_text(WITH_INPUTS, encoding="utf-8")
    done = aoe("plan", "--input", "batch=B-1", "--input", "limit_usd=lots", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert "limit_usd" in done.stderr
    assert "Traceback" not in done.stderr
