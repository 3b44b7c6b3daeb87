"""GitHub Actions: a Markdown job summary of a run, and ``::error`` annotations.

When ``GITHUB_STEP_SUMMARY`` names a file, ``aoe run`` appends a summary there (GitHub
renders it on the job's page). When ``GITHUB_ACTIONS=true``, ``aoe validate`` also prints
one ``::error file=...,line=...,col=...::message`` workflow command per problem, so each
problem shows up on the pull request's diff. Values are escaped per GitHub's
workflow-command rules: ``%``, CR and LF in the message; also ``:`` and ``,`` in properties.
Control characters (an escape sequence in a model's error, a file name) are ``printable``
first, in the annotations and in the summary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path

from aoe.cost.money import format_usd
from aoe.engine.results import RunResult
from aoe.errors import Problem
from aoe.report.printable import printable

SLOWEST = 5


def on_github_actions(environ: Mapping[str, str]) -> bool:
    """Whether we run inside a GitHub Actions job."""
    return environ.get("GITHUB_ACTIONS", "").lower() == "true"


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped, other controls shown."""
    return printable(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(text: str) -> str:
    """A workflow command's property value: the data escapes plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_annotation(problem: Problem, *, title: str | None = None, level: str = "error") -> str:
    """``::error file=F,line=L,col=C::message`` for one problem (``level`` warning:
    ``::warning``)."""
    props = [f"file={escape_property(problem.file)}", f"line={problem.line}", f"col={problem.col}"]
    if title:
        props.append(f"title={escape_property(title)}")
    message = problem.message + (f" (hint: {problem.hint})" if problem.hint else "")
    return f"::{level} {','.join(props)}::{escape_data(message)}"


def error_annotations(problems: Iterable[Problem]) -> list[str]:
    """One annotation line per problem, in order."""
    return [error_annotation(p, title="aoe validate") for p in problems]


def warning_annotations(warnings: Iterable[Problem]) -> list[str]:
    """One ``::warning`` line per warning, in order."""
    return [error_annotation(w, title="aoe validate", level="warning") for w in warnings]


def _cell(text: object) -> str:
    return printable(str(text)).replace("|", "\\|").replace("\n", " ")


def step_summary(
    result: RunResult, models: Mapping[str, Mapping[str, tuple[str, str]]] | None = None
) -> str:
    """The run as Markdown: workflows and states, cost by workflow and model, slowest agents.

    ``models`` maps workflow key → agent id → (model, module), as ``agent_models`` builds.
    """
    mode = " (simulated)" if result.simulate else ""
    out = [
        f"## aoe run `{result.run_id}`{mode}: {result.state.value}",
        "",
        f"Exit code **{result.exit_code}**, total cost **{format_usd(result.cost_usd)}**, "
        f"{result.usage.total_tokens} tokens, {result.ended_at - result.started_at:.1f} s.",
        "",
        "### Workflows",
        "",
        "| workflow | state | agents | completed | failed | cost (USD) |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for wf in result.workflows:
        failed = sum(
            1
            for a in wf.agents.values()
            if a.state.value in ("FAILED", "RATE_LIMITED", "BUDGET_EXCEEDED")
        )
        done = sum(1 for a in wf.agents.values() if a.state.value == "COMPLETED")
        out.append(
            f"| {_cell(wf.key)} | {wf.state.value} | {len(wf.agents)} | {done} | "
            f"{failed} | {format_usd(wf.cost_usd)} |"
        )
    cost_by_model: dict[str, Decimal] = defaultdict(Decimal)
    tokens_by_model: dict[str, int] = defaultdict(int)
    for wf in result.workflows:
        for agent_id, agent in wf.agents.items():
            model = (models or {}).get(wf.key, {}).get(agent_id, ("unknown", ""))[0]
            cost_by_model[model] += agent.cost_usd
            tokens_by_model[model] += agent.usage.total_tokens
    out += ["", "### Cost", "", "| by | name | tokens | cost (USD) |", "|---|---|--:|--:|"]
    for wf in result.workflows:
        out.append(
            f"| workflow | {_cell(wf.key)} | {wf.usage.total_tokens} | {format_usd(wf.cost_usd)} |"
        )
    for model, cost in sorted(cost_by_model.items(), key=lambda kv: -kv[1]):
        out.append(f"| model | {_cell(model)} | {tokens_by_model[model]} | {format_usd(cost)} |")
    out.append(f"| **total** | | {result.usage.total_tokens} | **{format_usd(result.cost_usd)}** |")
    agents = [(wf.key, a) for wf in result.workflows for a in wf.agents.values() if a.attempts]
    agents.sort(key=lambda pair: -pair[1].duration_s)
    if agents:
        out += [
            "",
            "### Slowest agents",
            "",
            "| workflow | agent | state | attempts | time (s) |",
            "|---|---|---|--:|--:|",
        ]
        out += [
            f"| {_cell(key)} | {_cell(a.agent_id)} | {a.state.value} | {len(a.attempts)} | "
            f"{a.duration_s:.2f} |"
            for key, a in agents[:SLOWEST]
        ]
    return "\n".join(out) + "\n\n"


def append_step_summary(
    result: RunResult,
    environ: Mapping[str, str],
    models: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
) -> bool:
    """Append the summary to ``$GITHUB_STEP_SUMMARY`` if it is set; return whether it was."""
    target = environ.get("GITHUB_STEP_SUMMARY", "").strip()
    if not target:
        return False
    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(step_summary(result, models))
    return True
