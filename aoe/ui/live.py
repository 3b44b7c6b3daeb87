"""The live terminal view of a run: a bar per workflow, the agents that matter, totals.

With hundreds of agents only the running ones and the most recently finished are shown,
and the rest are counted, so a redraw stays cheap. Events update plain counters; the
screen is redrawn by a task on the event loop at a fixed rate, never by the sink itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from aoe.clock import Clock, SystemClock
from aoe.cost.money import ZERO, format_usd
from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentSkipped,
    AgentStarted,
    ApiCall,
    Event,
    ToolCalled,
    WorkflowFinished,
    WorkflowStarted,
)
from aoe.monitor.view import NO_RUN, RunView
from aoe.report.printable import printable

STATE_STYLE = {
    "RUNNING": "cyan",
    "RETRYING": "yellow",
    "COMPLETED": "green",
    "FAILED": "red",
    "RATE_LIMITED": "magenta",
    "BUDGET_EXCEEDED": "red",
    "CANCELLED": "dim",
    "SKIPPED": "dim",
    "PARTIALLY_COMPLETED": "yellow",
}


@dataclass
class _Row:
    workflow: str
    agent: str
    model: str
    started: float
    state: str = "RUNNING"
    attempt: int = 1
    ended: float | None = None
    tokens: int = 0
    cost_usd: Decimal = ZERO
    tool_calls: int = 0
    last_tool: str = ""
    tool_failed: bool = False

    @property
    def tools(self) -> Text:
        """``3 lookup_vendor``: how many tool calls, and the last one (red if it failed)."""
        if not self.tool_calls:
            return Text("-", style="dim")
        return _text(f"{self.tool_calls} {self.last_tool}", "red" if self.tool_failed else "")


def _text(value: str, style: str = "") -> Text:
    """A cell of text from outside (names, tool names): shown, never obeyed as markup or
    as terminal control."""
    return Text(printable(value, newlines=False), style=style)


@dataclass
class _Flow:
    total: int
    done: int = 0
    state: str = "RUNNING"
    failed: int = 0


class LiveView:
    """An event sink that draws the run with Rich; use ``with view.live() as screen:``.

    Times come from the events and ``clock`` (wall time), so a test can drive it.
    """

    def __init__(
        self,
        console: Console,
        *,
        max_rows: int = 14,
        recent: int = 6,
        clock: Clock | None = None,
    ) -> None:
        self.console = console
        self.clock: Clock = clock or SystemClock()
        self.max_rows = max_rows
        self.flows: dict[str, _Flow] = {}
        self.running: dict[tuple[str, str], _Row] = {}
        self.finished: deque[_Row] = deque(maxlen=recent)
        self.calls = 0
        self.tool_calls = 0
        self.tokens = 0
        self.cost_usd = ZERO
        self.started = self.clock.wall()
        self.modules: dict[tuple[str, str], str] = {}
        self.cost_by_module: dict[str, Decimal] = {}
        self._view: RunView = NO_RUN

    def bind(self, view: RunView) -> None:
        """Read rate-limit and budget figures from the running run."""
        self._view = view

    def handle(self, event: Event) -> None:
        match event:
            case WorkflowStarted():
                self.flows[event.workflow] = _Flow(event.agents_total)
            case AgentStarted():
                key = (event.workflow, event.agent)
                self.modules[key] = event.module or "-"
                row = self.running.get(key)
                if row is None:
                    self.running[key] = _Row(event.workflow, event.agent, event.model, event.at)
                else:
                    row.state, row.attempt = "RUNNING", event.attempt
            case AgentRetrying():
                row = self.running.get((event.workflow, event.agent))
                if row is not None:
                    row.state = "RETRYING"
            case ApiCall():
                self.calls += 1
                self.tokens += event.usage.total_tokens
                self.cost_usd += event.cost_usd
                module = self.modules.get((event.workflow, event.agent), "-")
                self.cost_by_module[module] = self.cost_by_module.get(module, ZERO) + event.cost_usd
                row = self.running.get((event.workflow, event.agent))
                if row is not None:
                    row.tokens += event.usage.total_tokens
                    row.cost_usd += event.cost_usd
            case ToolCalled():
                self.tool_calls += 1
                row = self.running.get((event.workflow, event.agent))
                if row is not None:
                    row.tool_calls += 1
                    row.last_tool, row.tool_failed = event.tool, not event.ok
            case AgentFinished():
                row = self.running.pop((event.workflow, event.agent), None)
                if row is None:
                    row = _Row(event.workflow, event.agent, "", event.at)
                row.state, row.ended, row.attempt = event.state, event.at, event.attempts
                self.finished.append(row)
                self._count(event.workflow, event.state)
            case AgentSkipped():
                self._count(event.workflow, "SKIPPED")
            case WorkflowFinished():
                flow = self.flows.get(event.workflow)
                if flow is not None:
                    flow.state = event.state
            case _:
                pass

    def _count(self, workflow: str, state: str) -> None:
        flow = self.flows.get(workflow)
        if flow is not None:
            flow.done += 1
            if state != "COMPLETED":
                flow.failed += 1

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = [self._bars(), self._agents()]
        side = [t for t in (self._limits(), self._costs()) if t is not None]
        if side:
            grid = Table.grid(padding=(0, 4))
            for _ in side:
                grid.add_column()
            grid.add_row(*side)
            parts.append(grid)
        parts.append(self._footer())
        return Group(*parts)

    def _limits(self) -> RenderableType | None:
        stats = [
            s
            for s in self._view.limiter_stats()
            if s.tiers or s.concurrency_limit or s.learned_concurrency
        ]
        if not stats:
            return None
        table = Table(title="rate limits", title_justify="left", box=None, header_style="bold")
        for name in ("key", "tier", "used / limit", "waited", "429s"):
            table.add_column(name, justify="left" if name in ("key", "tier") else "right")
        for s in stats:
            first = True
            rows = [(t.name, f"{t.used} / {t.limit}") for t in s.tiers]
            if s.learned_concurrency is not None:
                rows.append(("concurrent (learned)", f"{s.in_flight} / {s.learned_concurrency}"))
            elif s.concurrency_limit:
                rows.append(("concurrent", f"{s.in_flight} / {s.concurrency_limit}"))
            for tier, use in rows:
                table.add_row(
                    _text(s.name) if first else "",
                    tier,
                    use,
                    f"{s.wait_s_total:.1f}s" if first else "",
                    str(s.rate_limited) if first else "",
                )
                first = False
        return table

    def _costs(self) -> RenderableType | None:
        states = self._view.budget_states()
        if not states and not self.cost_by_module:
            return None
        table = Table(title="cost", title_justify="left", box=None, header_style="bold")
        for name in ("scope", "spent", "reserved", "budget"):
            table.add_column(name, justify="left" if name == "scope" else "right")
        shown = 0
        for state in states:
            if state.name.startswith("agent:") or shown >= 6:
                continue
            shown += 1
            spent = state.spent_usd + state.unconfirmed_usd
            limit = "-" if state.limit_usd is None else format_usd(state.limit_usd)
            table.add_row(
                _text(state.name), format_usd(spent), format_usd(state.reserved_usd), limit
            )
        for module, cost in sorted(self.cost_by_module.items(), key=lambda kv: -kv[1])[:6]:
            table.add_row(_text(f"module {module}"), format_usd(cost), "", "")
        return table

    def _bars(self) -> RenderableType:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(width=30)
        grid.add_column(no_wrap=True)
        items = list(self.flows.items())
        shown = items if len(items) <= 8 else [i for i in items if i[1].state == "RUNNING"][:8]
        for key, flow in shown:
            style = STATE_STYLE.get(flow.state, "cyan")
            bar = ProgressBar(
                total=max(flow.total, 1),
                completed=flow.done,
                width=30,
                complete_style="red" if flow.failed else "green",
            )
            grid.add_row(
                _text(key, "bold"),
                bar,
                Text(f"{flow.done}/{flow.total} {flow.state.lower()}", style=style),
            )
        if len(items) > len(shown):
            done = sum(1 for _, f in items if f.state != "RUNNING")
            grid.add_row(Text(f"... {len(items)} workflows, {done} finished", style="dim"), "", "")
        return grid

    def _agents(self) -> RenderableType:
        table = Table(expand=False, box=None, pad_edge=False, header_style="bold")
        for name in ("workflow", "agent", "state", "try", "elapsed", "tokens", "cost", "tools"):
            table.add_column(
                name, justify="right" if name in ("try", "elapsed", "tokens", "cost") else "left"
            )
        now = self.clock.wall()
        running = sorted(self.running.values(), key=lambda r: r.started)
        for row in running[: self.max_rows]:
            self._add(table, row, now)
        for row in reversed(self.finished):
            self._add(table, row, now)
        hidden = len(running) - min(len(running), self.max_rows)
        if hidden:
            more = Text(f"... and {hidden} more running", style="dim")
            table.add_row("", more, "", "", "", "", "", "")
        return table

    @staticmethod
    def _add(table: Table, row: _Row, now: float) -> None:
        elapsed = (row.ended or now) - row.started
        table.add_row(
            _text(row.workflow),
            _text(row.agent),
            Text(row.state, style=STATE_STYLE.get(row.state, "")),
            str(row.attempt),
            f"{elapsed:.1f}s",
            str(row.tokens),
            format_usd(row.cost_usd),
            row.tools,
        )

    def _footer(self) -> RenderableType:
        elapsed = self.clock.wall() - self.started
        return Text(
            f"{len(self.running)} running | {self.calls} calls | {self.tool_calls} tool calls | "
            f"{self.tokens} tokens | "
            f"{format_usd(self.cost_usd)} | {elapsed:.1f}s",
            style="bold",
        )

    async def refresh_forever(self, live: Live, interval_s: float = 0.125) -> None:
        """Redraw on the event loop, so the sink and the drawing never race."""
        while True:
            live.refresh()
            await asyncio.sleep(interval_s)

    def live(self) -> Live:
        return Live(
            self,
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
