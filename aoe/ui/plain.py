"""Plain, line-based progress for CI logs: one line per state change, no escape codes.

A large run would print two lines per agent (20,000 for 10,000 agents), more than a
person reads and a measurable share of the run's CPU. Once the run holds more than
``SUMMARY_ABOVE_AGENTS`` agents, agents that start and complete are no longer a line
each: a summary line (done of total, by state, running, cost) is written at most once
per ``SUMMARY_EVERY_S`` of the run's clock, and whatever went wrong is still a line of
its own at once (a failed or skipped-by-budget agent, a retry, a budget hit, a 429, a
failed tool call). Run and workflow lines stay as they are, and the run's end gets a
last summary. The clock is the events' own ``at``, so a run on a fake clock summarises
on that clock.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import TextIO

from aoe.cost.money import format_usd
from aoe.monitor.events import (
    AgentFinished,
    AgentRetrying,
    AgentSkipped,
    AgentStarted,
    BudgetHit,
    Event,
    RateLimitHit,
    RunFinished,
    RunStarted,
    ToolCalled,
    WorkflowFinished,
    WorkflowStarted,
)
from aoe.report.printable import printable

#: Runs of more agents than this get summary lines instead of a line per agent.
SUMMARY_ABOVE_AGENTS = 200
#: At most one summary line per this many seconds of the run's clock.
SUMMARY_EVERY_S = 1.0


class PlainProgress:
    """Writes one readable line per event that a person in a CI log cares about;
    past ``summary_above`` agents, a summary line per ``summary_every_s`` instead of a
    line per agent, and every failure still at once (see the module)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        summary_above: int = SUMMARY_ABOVE_AGENTS,
        summary_every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        self.stream = stream
        self._summary_above = summary_above
        self._every_s = summary_every_s
        self._agents_total = 0
        self._done: Counter[str] = Counter()
        self._running: set[tuple[str, str]] = set()
        self._cost = Decimal(0)
        self._last_summary: float | None = None
        self._changed = False

    @property
    def summarising(self) -> bool:
        """True once the run holds more agents than prints a line each."""
        return self._agents_total > self._summary_above

    def _count(self, event: Event) -> bool:
        """Keep the summary's counts; True if ``event`` is quiet while summarising."""
        match event:
            case WorkflowStarted():
                self._agents_total += event.agents_total
            case AgentStarted():
                self._running.add((event.workflow, event.agent))
                return True
            case AgentFinished():
                self._running.discard((event.workflow, event.agent))
                self._done[event.state] += 1
                self._cost += event.cost_usd
                return event.state == "COMPLETED"
            case AgentSkipped():
                self._done["SKIPPED"] += 1
                return True
            case ToolCalled():
                return event.ok
            case RateLimitHit():
                return not event.provider_429
        return False

    def _summary(self) -> str:
        done = sum(self._done.values())
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self._done.items()))
        return (
            f"{done} of {self._agents_total} agents done ({states or 'none yet'}), "
            f"{len(self._running)} running, {format_usd(self._cost)}"
        )

    def _write(self, at: float, text: str) -> None:
        stamp = dt.datetime.fromtimestamp(at).strftime("%H:%M:%S")
        self.stream.write(f"{stamp} {printable(text, newlines=False)}\n")
        self.stream.flush()

    def _line(self, event: Event, text: str) -> None:
        self._write(event.at, text)

    def handle(self, event: Event) -> None:
        quiet = self._count(event)
        if not self.summarising:
            self._each(event)
            return
        if not quiet:
            if isinstance(event, RunFinished) and self._changed:
                self._write(event.at, self._summary())  # where the run ended
                self._changed = False
            self._each(event)
            return
        self._changed = True
        if self._last_summary is None:
            self._last_summary = event.at
        elif event.at - self._last_summary >= self._every_s:
            self._last_summary = event.at
            self._changed = False
            self._write(event.at, self._summary())

    def _each(self, event: Event) -> None:
        """The line of ``event`` itself, if it has one."""
        match event:
            case RunStarted():
                mode = " (simulated)" if event.simulate else ""
                self._line(event, f"run {event.run_id} started{mode}: {', '.join(event.workflows)}")
            case WorkflowStarted():
                self._line(event, f"{event.workflow}: started, {event.agents_total} agents")
            case AgentStarted():
                again = f" attempt {event.attempt}" if event.attempt > 1 else ""
                self._line(event, f"{event.workflow}/{event.agent}: RUNNING{again} ({event.model})")
            case AgentRetrying():
                self._line(
                    event,
                    f"{event.workflow}/{event.agent}: RETRY in {event.delay_s:.2f}s after "
                    f"attempt {event.attempt}: {event.error}",
                )
            case AgentFinished():
                tokens = event.usage.total_tokens
                cost = format_usd(event.cost_usd)
                detail = f" in {event.duration_s:.2f}s, {tokens} tokens, {cost}"
                error = f": {event.error}" if event.error else ""
                self._line(event, f"{event.workflow}/{event.agent}: {event.state}{detail}{error}")
            case ToolCalled():
                outcome = "ok" if event.ok else "error"
                cut = ", truncated" if event.truncated else ""
                self._line(
                    event,
                    f"{event.workflow}/{event.agent}: tool {event.tool} {outcome} in "
                    f"{event.duration_s:.2f}s ({event.result_chars} chars{cut})",
                )
            case AgentSkipped():
                self._line(event, f"{event.workflow}/{event.agent}: SKIPPED ({event.reason})")
            case BudgetHit():
                self._line(event, f"{event.workflow}/{event.agent}: BUDGET {event.message}")
            case RateLimitHit() if event.provider_429:
                what = (event.limited or "rate_limit").replace("_", " ")
                if event.retry_after_s is not None:
                    what += f", retry after {event.retry_after_s:.1f}s"
                self._line(
                    event,
                    f"{event.workflow}/{event.agent}: 429 from {event.provider or event.limiter}"
                    f" for {event.model or '?'} ({what})",
                )
            case RateLimitHit() if event.waited_s >= 1.0:
                self._line(
                    event,
                    f"{event.workflow}/{event.agent}: waited {event.waited_s:.1f}s for "
                    f"rate limit {event.limiter}",
                )
            case WorkflowFinished():
                counts = ", ".join(f"{n} {s.lower()}" for s, n in event.counts)
                self._line(
                    event,
                    f"{event.workflow}: {event.state} ({counts}) in {event.duration_s:.2f}s, "
                    f"{format_usd(event.cost_usd)}",
                )
            case _:
                pass
