"""The end-of-run summary: one table of workflows, and the agents of small runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aoe.cost.money import format_usd
from aoe.engine.results import AgentState, RunResult
from aoe.report.printable import printable
from aoe.ui.live import STATE_STYLE

AGENT_TABLE_LIMIT = 40
WORKFLOW_TABLE_LIMIT = 20


def render_summary(console: Console, result: RunResult) -> None:
    """Print what happened; without a terminal (CI logs) tables are never cut to 80 columns."""
    if console.is_terminal:
        _render(console, result)
        return
    width, console.width = console.width, 10_000
    try:
        _render(console, result)
    finally:
        console.width = width


def _render(console: Console, result: RunResult) -> None:
    """Per workflow (the unfinished ones first when there are many), then per agent."""
    counts: dict[str, int] = {}
    for w in result.workflows:
        counts[w.state.value] = counts.get(w.state.value, 0) + 1
    workflows = list(result.workflows)
    if len(workflows) > WORKFLOW_TABLE_LIMIT:
        console.print(
            "workflows: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        )
        workflows = sorted(workflows, key=lambda w: w.state.value == "COMPLETED")
    shown = workflows[:WORKFLOW_TABLE_LIMIT]
    flows = Table(title=f"run {result.run_id}", title_justify="left", header_style="bold")
    for name in ("workflow", "state", "completed", "failed", "skipped", "tokens", "cost", "time"):
        flows.add_column(name, justify="left" if name in ("workflow", "state") else "right")
    for w in shown:
        failed = sum(
            w.count(s)
            for s in (AgentState.FAILED, AgentState.RATE_LIMITED, AgentState.BUDGET_EXCEEDED)
        )
        skipped = w.count(AgentState.SKIPPED) + w.count(AgentState.CANCELLED)
        flows.add_row(
            Text(printable(w.key, newlines=False)),
            Text(w.state.value, style=STATE_STYLE.get(w.state.value, "")),
            f"{w.count(AgentState.COMPLETED)}/{len(w.agents)}",
            str(failed),
            str(skipped),
            str(w.usage.total_tokens),
            format_usd(w.cost_usd),
            f"{w.ended_at - w.started_at:.2f}s",
        )
    if len(shown) < len(workflows):
        flows.add_row(f"... and {len(workflows) - len(shown)} more", "", "", "", "", "", "", "")
    console.print(flows)
    agents = [(w, a) for w in result.workflows for a in w.agents.values()]
    if len(agents) <= AGENT_TABLE_LIMIT:
        table = Table(header_style="bold")
        for name in ("agent", "state", "attempts", "tokens", "cost", "time", "note"):
            table.add_column(
                name, justify="right" if name in ("attempts", "tokens", "cost", "time") else "left"
            )
        for w, a in agents:
            label = a.agent_id if len(result.workflows) == 1 else f"{w.key}/{a.agent_id}"
            note = "resumed" if a.resumed else printable(a.error or "", newlines=False)
            table.add_row(
                Text(printable(label, newlines=False)),
                Text(a.state.value, style=STATE_STYLE.get(a.state.value, "")),
                str(len(a.attempts)),
                str(a.usage.total_tokens),
                format_usd(a.cost_usd),
                f"{a.duration_s:.2f}s",
                Text(note[:100], style="dim"),
            )
        console.print(table)
    for w in shown:
        if w.reason and w.state.value != "COMPLETED":
            reason = printable(f"{w.key}: {w.state.value}: {w.reason}")
            console.print(Text(reason, style="bold"))
    mode = " (simulated: what a real run would cost)" if result.simulate else ""
    console.print(
        f"total: {result.usage.total_tokens} tokens, {format_usd(result.cost_usd)}{mode}, "
        f"{result.ended_at - result.started_at:.2f}s, exit code {result.exit_code}"
    )
