"""Plain, line-based progress for CI logs: one line per state change, no escape codes."""

from __future__ import annotations

import datetime as dt
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
    RunStarted,
    ToolCalled,
    WorkflowFinished,
    WorkflowStarted,
)
from aoe.report.printable import printable


class PlainProgress:
    """Writes one readable line per event that a person in a CI log cares about."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _line(self, event: Event, text: str) -> None:
        stamp = dt.datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
        self.stream.write(f"{stamp} {printable(text, newlines=False)}\n")
        self.stream.flush()

    def handle(self, event: Event) -> None:
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
