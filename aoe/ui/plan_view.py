"""The Rich view of ``aoe plan``: one table grouped by level, the critical path starred.

It renders the dict of ``aoe.app.plan.plan_to_dict`` so the table, JSON and diagrams can never
disagree about a plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from aoe.cost.money import format_usd

__all__ = ["plan_renderable", "print_plan"]

STAR = "★"
_UNLIMITED = 1_000


def _money(value: str | None) -> str:
    """A plan's exact decimal string on screen (``-`` when there is no limit)."""
    return "-" if value is None else format_usd(Decimal(value))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(value: float) -> str:
    return f"{value:,.1f} s" if value >= 1 else f"{value:.2f} s"


def _fit(natural: list[int], available: int, floor: int = 6) -> list[int]:
    """Shrink the widest columns first until they fit ``available`` (Rich would shrink all)."""
    widths = list(natural)
    while sum(widths) > available:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= floor:
            break
        widths[widest] -= 1
    return widths


def plan_renderable(plan: Mapping[str, Any], width: int = 100) -> RenderableType:
    """Header, the agents table (a section per level) and the critical-path footer.

    On a narrow terminal agent, module and model names are cut (with an ellipsis) and the
    numbers are never cut; ``width`` is the terminal's width.
    """
    agents = {a["id"]: a for a in plan["agents"]}
    header = Text.assemble(
        (str(plan["workflow"]), "bold"),
        f"  {plan['file']}  ",
        f"{_count(plan['agent_count'], 'agent')}, {_count(len(plan['levels']), 'level')}, "
        f"budget {_money(plan.get('budget_usd'))}",
    )
    rows = []
    for number, level in enumerate(plan["levels"]):
        for row, agent_id in enumerate(level):
            agent = agents[agent_id]
            critical = bool(agent["critical"])
            rows.append(
                (
                    number if row == 0 else None,
                    critical,
                    [
                        "" if row else str(number),
                        f"{STAR} {agent_id}" if critical else f"  {agent_id}",
                        agent["module"] or "-",
                        agent["model"],
                        str(agent["priority"]),
                        _money(agent["cost_limit_usd"]),
                        _seconds(agent["expected_latency_s"]),
                    ],
                )
            )
    heads = ("lvl", "agent", "module", "model", "prio", "budget", "latency")
    natural = [max([len(h)] + [len(r[2][i]) for r in rows]) for i, h in enumerate(heads)]
    fixed = natural[0] + sum(natural[4:]) + 3 * (len(heads) - 1) + 2
    names = _fit(natural[1:4], max(18, width - fixed))
    table = Table(
        header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False
    )
    for i, head in enumerate(heads):
        if 1 <= i <= 3:
            table.add_column(head, width=names[i - 1], no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(head, justify="right", no_wrap=True)
    for first, critical, cells in rows:
        if first:
            table.add_section()
        table.add_row(*cells, style="bold" if critical else None)
    path = plan["critical_path"]
    footer = Text.assemble(
        (f"{STAR} critical path: ", "bold"),
        (" -> ".join(path["agents"]) or "-", "bold"),
        f"  ({_seconds(path['expected_latency_s'])} expected)",
    )
    return Group(header, table, footer)


def print_plan(plan: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the plan to ``console`` (standard output by default).

    Without a terminal (CI logs, pipes) nothing is cut: the table is as wide as it needs.
    """
    console = console or Console()
    if console.is_terminal:
        console.print(plan_renderable(plan, console.width))
        return
    width = console.width
    console.width = _UNLIMITED  # Console.print(width=) can only narrow, never widen
    try:
        console.print(plan_renderable(plan, _UNLIMITED))
    finally:
        console.width = width


def _usd(value: str | None) -> str:
    """An estimate's exact decimal string on screen (``?`` when the model has no price)."""
    return "?" if value is None else format_usd(Decimal(value))


def print_estimate(figures: Mapping[str, Any], console: Console | None = None) -> None:
    """The ``--estimate`` table: tokens and cost per agent, min / expected / max, and totals."""
    console = console or Console()
    table = Table(
        title="estimate (before anything is spent)", title_justify="left", header_style="bold"
    )
    for name in (
        "agent",
        "model",
        "input tokens",
        "output tokens",
        "cost min",
        "cost expected",
        "cost max",
    ):
        table.add_column(name, justify="left" if name in ("agent", "model") else "right")

    def tokens(r: Mapping[str, int]) -> str:
        return f"{r['min']} / {r['expected']} / {r['max']}"

    for agent_id, e in figures["agents"].items():
        mark = "" if e["exact"] else " ~"
        table.add_row(
            agent_id,
            e["model"],
            tokens(e["input_tokens"]) + mark,
            tokens(e["output_tokens"]),
            _usd(e["cost_usd"]["min"]),
            _usd(e["cost_usd"]["expected"]),
            _usd(e["cost_usd"]["max"]),
        )
    total = figures["total"]
    table.add_section()
    table.add_row(
        "total",
        "",
        tokens(total["input_tokens"]),
        tokens(total["output_tokens"]),
        _usd(total["cost_usd"]["min"]),
        _usd(total["cost_usd"]["expected"]),
        _usd(total["cost_usd"]["max"]),
        style="bold",
    )
    if console.is_terminal:
        console.print(table)
    else:
        width, console.width = console.width, _UNLIMITED
        try:
            console.print(table)
        finally:
            console.width = width
    console.print(
        "~ estimated count (no local tokenizer for that model); "
        "max = every retry and tool turn used, all of max_tokens"
    )
    for model in figures["unpriced_models"]:
        console.print(f"warning: no price is known for {model}: its cost shows as ?")
