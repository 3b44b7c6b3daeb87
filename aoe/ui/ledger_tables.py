"""Rich tables for ``aoe runs``, ``aoe show`` and ``aoe cost-report``.

Only the layout lives here; the numbers come from ``aoe.ledger`` and the non-Rich
formats (JSON, CSV, Markdown) from ``aoe.report.ledger_docs``. Every text that came from
outside (outputs, tool arguments and results, errors, names, the command) is shown with
``printable`` and as Rich ``Text``, so it is never obeyed as terminal control or markup.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aoe.cost.money import format_usd
from aoe.ledger.records import (
    FAILED_STATES,
    AgentDetail,
    CostReport,
    CostRow,
    RunDetail,
    RunSummary,
)
from aoe.report.printable import printable

_STATE_STYLES = {
    "COMPLETED": "green",
    "RUNNING": "cyan",
    "INTERRUPTED": "yellow",
    "PARTIALLY_COMPLETED": "yellow",
    "CANCELLED": "yellow",
    "SKIPPED": "dim",
}
_OUTPUT_CHARS = 400
_TOOL_CHARS = 160  # arguments and results of a tool call, as `aoe show` prints them


def _when(epoch: float | None) -> str:
    """A timestamp in UTC, like the ``--since``/``--until`` dates are read."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%MZ")


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{end - start:.1f}s"


_KEEP = frozenset(
    {
        "run",
        "state",
        "cost",
        "unconfirmed",
        "agent",
        "workflow",
        "model",
        "provider",
        "day",
        "module",
    }
)


def _add_column(
    table: Table,
    name: str,
    rows: list[list[str]],
    index: int,
    *,
    keep: bool,
    right: bool,
    footer: str = "",
) -> None:
    """A column whose values are never cut: ``keep`` ones (ids, states, money) never wrap."""
    words = [len(w) for w in name.split()]
    width = max([len(footer), *words, *(len(r[index]) for r in rows)])
    table.add_column(
        name,
        footer=footer,
        justify="right" if right else "left",
        no_wrap=keep,
        min_width=width if keep else min(width, 12),
    )


def _state(state: str) -> Text:
    style = "red" if state in FAILED_STATES else _STATE_STYLES.get(state, "")
    return Text(printable(state, newlines=False), style=style)


def _safe(text: str) -> str:
    """A cell's text from outside, shown instead of obeyed (line breaks kept)."""
    return printable(text)


def _cells(row: list[str]) -> list[Text]:
    return [Text(cell) for cell in row]


def render_runs(console: Console, runs: list[RunSummary]) -> None:
    """The table of recent runs, newest first."""
    if not runs:
        console.print("no runs recorded yet: start one with `aoe run FILE`")
        return
    rows = [
        [
            _safe(r.run_id),
            _when(r.started_at),
            r.state,
            f"{r.agents_completed} ok, {r.agents_failed} failed",
            format_usd(r.cost_usd) + ("*" if r.unconfirmed_usd else ""),
            _safe(", ".join(r.files)),
        ]
        for r in runs
    ]
    table = Table(title="recent runs")
    names = ["run", "started", "state", "agents", "cost", "files"]
    for i, name in enumerate(names):
        _add_column(table, name, rows, i, keep=name in _KEEP, right=name == "cost")
    for row in rows:
        table.add_row(*_cells(row[:2]), _state(row[2]), *_cells(row[3:]))
    console.print(table)
    if any(r.unconfirmed_usd for r in runs):
        console.print("* includes unconfirmed cost (calls whose outcome is unknown)")


def _output_text(output: Any) -> str:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return _safe(text if len(text) <= _OUTPUT_CHARS else text[:_OUTPUT_CHARS] + " …")


def _in_flight(run: RunSummary) -> str:
    """The calls counted at their reservations because they have no end (yet)."""
    n = run.in_flight_calls
    if not n:
        return ""
    calls = "1 call" if n == 1 else f"{n} calls"
    # while the run runs, some may be out now and some lost by a process before this one
    return f", {calls} in flight or lost" if run.state == "RUNNING" else f", {calls} lost in flight"


def render_run_detail(console: Console, detail: RunDetail) -> None:
    """One run: header, then per workflow a table of agents and their attempts."""
    run = detail.run
    budget = "none" if run.budget_usd is None else format_usd(run.budget_usd)
    header = Text.assemble(
        ("run ", "bold"),
        (_safe(run.run_id), "bold"),
        "  ",
        _state(run.state),
        f"\nstarted {_when(run.started_at)}, ended {_when(run.ended_at)}",
        f"\n{printable(run.command, newlines=False)}",
        f"\ntokens {run.input_tokens} in / {run.output_tokens} out, cost "
        f"{format_usd(run.cost_usd)} (unconfirmed {format_usd(run.unconfirmed_usd)}"
        + _in_flight(run)
        + "), "
        f"budget {budget}" + (", simulated" if run.simulate else ""),
    )
    console.print(Panel(header, expand=False))
    for wf in detail.workflows:
        title = f"{wf.workflow_key} ({wf.path})  {wf.state}  {format_usd(wf.cost_usd)}"
        table = Table(title=Text(printable(title, newlines=False)), title_justify="left")
        rows = [
            [
                _safe(agent.agent_id),
                _safe(agent.module or "-"),
                _safe(agent.model),
                agent.state,
                "\n".join(
                    f"#{a.attempt} {a.state} {_duration(a.started_at, a.ended_at)}"
                    + (f": {printable(a.error, newlines=False)}" if a.error else "")
                    for a in agent.attempts
                )
                or "-",
                f"{agent.input_tokens}/{agent.output_tokens}",
                format_usd(agent.cost_usd),
            ]
            for agent in wf.agents
        ]
        names = ["agent", "module", "model", "state", "attempts", "tokens in/out", "cost"]
        for i, name in enumerate(names):
            _add_column(
                table, name, rows, i, keep=name in _KEEP and name != "model", right=name == "cost"
            )
        for row in rows:
            table.add_row(*_cells(row[:3]), _state(row[3]), *_cells(row[4:]))
        outputs: list[Any] = []
        for agent in wf.agents:
            if agent.output is not None:
                outputs.append(
                    Text.assemble(
                        (f"{_safe(agent.agent_id)}: ", "bold"), _output_text(agent.output)
                    )
                )
        console.print(table)
        tools = _tool_lines(wf.agents)
        if tools:
            console.print(Panel(Group(*tools), title="tool calls", title_align="left"))
        if outputs:
            console.print(Panel(Group(*outputs), title="outputs", title_align="left"))


def _short(text: str) -> str:
    text = printable(" ".join(text.split()), newlines=False)
    return text if len(text) <= _TOOL_CHARS else text[:_TOOL_CHARS] + " …"


def _tool_lines(agents: tuple[AgentDetail, ...]) -> list[Text]:
    """Per agent, each call's tool calls: ``#attempt.turn name(arguments) -> result``."""
    lines: list[Text] = []
    for agent in agents:
        for call in agent.calls:
            for entry in call.tool_calls:
                if not isinstance(entry, dict):
                    continue
                ok = bool(entry.get("ok"))
                name = _short(str(entry.get("name", "?")))
                lines.append(
                    Text.assemble(
                        (f"{_safe(agent.agent_id)} ", "bold"),
                        (f"#{call.attempt}.{call.turn} ", "dim"),
                        f"{name}({_short(str(entry.get('arguments', '')))}) -> ",
                        (_short(str(entry.get("result", ""))), "" if ok else "red"),
                    )
                )
    return lines


def render_cost_report(console: Console, report: CostReport) -> None:
    """Cost per group, with the total (summed from the calls) as the last line."""
    title = f"cost by {report.by}" + (" (UTC)" if report.by == "day" else "")
    table = Table(title=title, show_footer=True)
    total = report.total

    def cells(row: CostRow) -> list[str]:
        return [
            str(row.calls),
            f"{row.input_tokens}/{row.output_tokens}",
            str(row.cache_read_tokens),
            format_usd(row.cost_usd),
            format_usd(row.unconfirmed_usd),
        ]

    columns = [*report.key_names, "calls", "tokens in/out", "cached", "cost", "unconfirmed"]
    rows = [[*(_safe(k or "(none)") for k in row.keys), *cells(row)] for row in report.rows]
    footer = ["total", *[""] * (len(report.key_names) - 1), *cells(total)]
    keys = len(report.key_names)
    for i, (name, foot) in enumerate(zip(columns, footer, strict=True)):
        _add_column(
            table, name, rows, i, keep=i < keys or name in _KEEP, right=i >= keys, footer=foot
        )
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)
