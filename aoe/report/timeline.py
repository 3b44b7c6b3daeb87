"""What the HTML report draws, computed from a ledger ``RunDetail``: the stored DAG (levels,
critical path, from ``aoe.graph``), attempt segments (waiting vs calling) and cost groups.
Pure data, no markup."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from aoe.graph import WorkflowGraph
from aoe.ledger.records import AgentDetail, RunDetail, WorkflowDetail


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of an attempt: ``kind`` is wait (rate limit or budget), call, or work."""

    kind: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class AttemptBar:
    """One attempt on the timeline, with its waiting and calling stretches."""

    attempt: int
    state: str
    start: float
    end: float
    segments: tuple[Segment, ...]
    error: str | None


def agent_span(agent: AgentDetail) -> tuple[float, float] | None:
    """First attempt's start to last attempt's end (None for an agent that never started)."""
    starts = [a.started_at for a in agent.attempts]
    ends = [a.ended_at if a.ended_at is not None else a.started_at for a in agent.attempts]
    if not starts:
        return None
    return min(starts), max(ends)


def agent_duration_s(agent: AgentDetail) -> float:
    span = agent_span(agent)
    return 0.0 if span is None else max(span[1] - span[0], 0.0)


def attempt_bars(agent: AgentDetail) -> list[AttemptBar]:
    """Each attempt, split into the wait before its first call and the calls themselves."""
    bars = []
    for a in agent.attempts:
        end = a.ended_at if a.ended_at is not None else a.started_at
        calls = sorted(
            (c for c in agent.calls if c.attempt == a.attempt), key=lambda c: c.started_at
        )
        segments: list[Segment] = []
        cursor = a.started_at
        for index, call in enumerate(calls):
            if call.started_at > cursor:
                segments.append(Segment("wait" if index == 0 else "work", cursor, call.started_at))
            call_start = max(call.started_at, cursor)
            call_end = end if call.ended_at is None else call.ended_at  # in flight, or lost
            segments.append(Segment("call", call_start, max(call_end, call_start)))
            cursor = max(cursor, call_end)
        if end > cursor:
            segments.append(Segment("wait" if not calls else "work", cursor, end))
        bars.append(AttemptBar(a.attempt, a.state, a.started_at, end, tuple(segments), a.error))
    return bars


def graph_of(wf: WorkflowDetail) -> WorkflowGraph:
    """The workflow's stored DAG, each agent weighted by how long it really took."""
    durations = {a.agent_id: agent_duration_s(a) for a in wf.agents}
    return WorkflowGraph.from_needs(wf.needs, durations)


def critical_path(wf: WorkflowDetail) -> list[str]:
    """The chain of needs with the longest total actual duration, first agent first."""
    return list(graph_of(wf).critical_path)


def cost_by(run: RunDetail, key: str) -> list[tuple[str, Decimal]]:
    """Cost summed by ``module`` or ``model`` (provider/model), largest first."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for wf in run.workflows:
        for agent in wf.agents:
            for call in agent.calls:
                name = (
                    (agent.module or "(none)")
                    if key == "module"
                    else f"{call.provider}/{call.model}"
                )
                totals[name] += call.cost_usd
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))


def run_bounds(run: RunDetail) -> tuple[float, float]:
    """The earliest start and latest end of anything in the run."""
    start = run.run.started_at
    end = run.run.ended_at or start
    for wf in run.workflows:
        for agent in wf.agents:
            span = agent_span(agent)
            if span is not None:
                start, end = min(start, span[0]), max(end, span[1])
    return start, max(end, start + 1e-3)
