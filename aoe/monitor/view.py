"""What a sink may read of a running run besides its events: limits and budgets, live.

The live view and the metrics endpoint read these readouts when they draw or are
scraped; the run (``aoe.app.run.RunHandle``) provides them. Before a run is bound,
``NO_RUN`` reads as empty.
"""

from __future__ import annotations

from typing import Protocol

from aoe.cost.budget import BudgetState
from aoe.ratelimit import LimiterStats


class RunView(Protocol):
    """A read-only view of a running run."""

    def limiter_stats(self) -> tuple[LimiterStats, ...]:
        """Every rate limiter the run has used, by name."""
        ...

    def budget_states(self) -> tuple[BudgetState, ...]:
        """Every budget scope the run has used, by name."""
        ...


class _NoRun:
    def limiter_stats(self) -> tuple[LimiterStats, ...]:
        return ()

    def budget_states(self) -> tuple[BudgetState, ...]:
        return ()


#: The view of no run at all: nothing limited, nothing budgeted.
NO_RUN: RunView = _NoRun()
