"""GitHub Actions: the job summary and the ``::error`` annotations of ``aoe validate``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from aoe.cli.main import app
from aoe.engine.results import (
    AgentResult,
    AgentState,
    AttemptResult,
    RunResult,
    WorkflowResult,
    WorkflowState,
)
from aoe.errors import Problem
from aoe.providers.base import Usage
from aoe.report.github import (
    append_step_summary,
    error_annotation,
    escape_data,
    escape_property,
    step_summary,
)


def _agent(agent_id: str, seconds: float, cost: str, state: AgentState) -> AgentResult:
    attempt = AttemptResult(1, state, 10.0, 10.0 + seconds, Usage(100, 50), Decimal(cost))
    return AgentResult(agent_id, state, (attempt,), started_at=10.0, ended_at=10.0 + seconds)


def _result() -> RunResult:
    agents = {
        "extract": _agent("extract", 2.0, "0.02", AgentState.COMPLETED),
        "post": _agent("post", 9.0, "0.5", AgentState.FAILED),
    }
    wf = WorkflowResult("ap|close", "ap-close", "ap.yaml", WorkflowState.FAILED, agents, 10.0, 20.0)
    return RunResult("r1", (wf,), 10.0, 20.0, simulate=True)


MODELS = {"ap|close": {"extract": ("openai/gpt-4o-mini", "ap"), "post": ("anthropic/haiku", "gl")}}


def test_summary_has_states_cost_tables_and_slowest_agents() -> None:
    """The summary lists workflows with states, cost by workflow and model, slowest first."""
    text = step_summary(_result(), MODELS)
    assert "## aoe run `r1` (simulated): FAILED" in text
    assert "| ap\\|close | FAILED | 2 | 1 | 1 | $0.5200 |" in text
    assert "| model | anthropic/haiku | 150 | $0.5000 |" in text
    assert "| model | openai/gpt-4o-mini | 150 | $0.0200 |" in text
    assert "| **total** | | 300 | **$0.5200** |" in text
    slow = text.split("### Slowest agents")[1]
    assert slow.index("post") < slow.index("extract")


def test_summary_is_appended_only_when_the_variable_is_set(tmp_path: Path) -> None:
    """GITHUB_STEP_SUMMARY gets appended to (earlier steps' text stays); unset: no file."""
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n", encoding="utf-8")
    assert append_step_summary(_result(), {"GITHUB_STEP_SUMMARY": str(target)}, MODELS)
    assert target.read_text(encoding="utf-8").startswith("earlier step\n## aoe run")
    assert not append_step_summary(_result(), {}, MODELS)


def test_workflow_command_escaping_follows_github_rules() -> None:
    """%, CR and LF are escaped in messages; properties also escape : and ,."""
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("C:\\a,b.yaml") == "C%3A\\a%2Cb.yaml"
    line = error_annotation(Problem("dir/a,b.yaml", 3, 7, "bad: value\nline 2", "fix it"))
    assert line == ("::error file=dir/a%2Cb.yaml,line=3,col=7::bad: value%0Aline 2 (hint: fix it)")


def test_validate_prints_annotations_on_github_actions(tmp_path: Path) -> None:
    """With GITHUB_ACTIONS=true, aoe validate prints one ::error line per problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ndefaults: {model: openai/gpt-4o-mini}\nagents:\n"
                   "  a:\n    prompt: hi\n    needs: [ghost]\n", encoding="utf-8")
    runner = CliRunner()
    plain = runner.invoke(app, ["validate", str(bad)], env={"GITHUB_ACTIONS": "false"})
    assert plain.exit_code == 2
    assert "::error" not in plain.stdout
    annotated = runner.invoke(app, ["validate", str(bad)], env={"GITHUB_ACTIONS": "true"})
    assert annotated.exit_code == 2
    lines = [ln for ln in annotated.stdout.splitlines() if ln.startswith("::error ")]
    assert lines, annotated.stdout
    assert lines[0].startswith(f"::error file={escape_property(str(bad))},line=5,col=3,")
    assert "title=aoe validate::" in lines[0]
    assert "ghost" in lines[0]


def test_validate_warnings_are_warning_annotations_on_github_actions(tmp_path: Path) -> None:
    """A template past its limit passes validate (exit 0) with a ::warning at its line."""
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\nname: x\nagents:\n  a:\n    model: sim/x\n"
                   "    prompt: \"{{ 'a' * 2000000000 }}\"\n", encoding="utf-8")
    annotated = CliRunner().invoke(app, ["validate", str(big)], env={"GITHUB_ACTIONS": "true"})
    assert annotated.exit_code == 0
    lines = [ln for ln in annotated.stdout.splitlines() if ln.startswith("::warning ")]
    assert len(lines) == 1, annotated.stdout
    assert lines[0].startswith(f"::warning file={escape_property(str(big))},line=6,col=13,")
    assert "2,000,000,000 characters" in lines[0]
