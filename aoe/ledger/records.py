"""What the ledger stores and what it gives back, as frozen data.

Write records (``RunStart`` ... ``AttemptEnd``) are what the engine and the agent pipeline
hand to ``Ledger``; the four written for every attempt and call (``AttemptStart``,
``CallStart``, ``CallRecord``, ``AttemptEnd``) are named tuples, a third of the cost of a
frozen dataclass to build on the engine's hot path. ``RunLeaseHolder`` is who holds a
run's lease (``aoe.ledger.lease``). Read models (``RunSummary``, ``RunDetail``,
``CostReport``, ``ResumeState``) are what ``aoe runs``, ``aoe show``, ``aoe cost-report``
and ``aoe run --resume`` read back. Times are epoch seconds (from the run's clock), money
is ``Decimal`` USD, never float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Literal, NamedTuple

from aoe.spec.models import EMPTY

AttemptState = Literal[
    "COMPLETED", "FAILED", "RATE_LIMITED", "BUDGET_EXCEEDED", "CANCELLED", "SKIPPED"
]
ATTEMPT_STATES: Final = frozenset(
    {"COMPLETED", "FAILED", "RATE_LIMITED", "BUDGET_EXCEEDED", "CANCELLED", "SKIPPED"}
)
#: States an agent ends in that count as "failed" in ``aoe runs``.
FAILED_STATES: Final = frozenset({"FAILED", "RATE_LIMITED", "BUDGET_EXCEEDED"})
#: What a started attempt with no end row is reported as once its process is gone.
INTERRUPTED: Final = "INTERRUPTED"
RUNNING: Final = "RUNNING"

#: A call's ``status`` from its start until its end is recorded: its request is out.
CALL_STARTED: Final = "started"
#: The ``status`` of a call that started and never ended because its process died (it is
#: read so once the process is gone, and a ``--resume`` writes it): it may have been
#: billed, so it stays spent at its reservation, unconfirmed.
CALL_INTERRUPTED: Final = "interrupted"

CostGroup = Literal["workflow", "agent", "module", "model", "day"]
COST_GROUPS: Final[tuple[CostGroup, ...]] = ("workflow", "agent", "module", "model", "day")

ZERO: Final = Decimal(0)


# --- written by the engine and the agent pipeline -------------------------------------


@dataclass(frozen=True, slots=True)
class RunStart:
    """One ``aoe run`` invocation; starting an existing ``run_id`` again reopens it (resume)."""

    run_id: str
    started_at: float
    command: str
    files: tuple[str, ...]
    simulate: bool
    budget_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class WorkflowStart:
    """One workflow instance of a run; ``workflow_key`` is unique within the run."""

    run_id: str
    workflow_key: str
    name: str
    path: str
    inputs: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    budget_usd: Decimal | None = None
    started_at: float | None = None
    needs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)


class AttemptStart(NamedTuple):
    """One try of one agent; ``attempt`` is 1-based and unique per agent within a run."""

    run_id: str
    workflow_key: str
    agent_id: str
    attempt: int
    module: str | None
    model: str
    started_at: float
    fingerprint: str | None = None


class CallStart(NamedTuple):
    """A provider call about to be sent, recorded (committed) before its request leaves.

    Until its ``CallRecord`` completes the same row, the call counts as spent at its
    reservation, unconfirmed: if the process dies now, the provider may still bill it.
    A call is known by (run, workflow, agent, attempt, turn).
    """

    run_id: str
    workflow_key: str
    agent_id: str
    attempt: int
    turn: int
    provider: str
    model: str
    reserved_usd: Decimal
    reserved_tokens: int
    started_at: float


class CallRecord(NamedTuple):
    """One provider call and what it cost; also the read model of ``aoe show``'s calls.

    ``cost_confirmed`` is false when the outcome is unknown (timeout after sending): the
    reserved cost is recorded as spent, but marked as unconfirmed. Read back, a call that
    started and has no end yet has ``ended_at`` None and ``status`` ``started`` (in flight)
    or ``interrupted`` (its process died), its reservation as its unconfirmed cost.
    """

    run_id: str
    workflow_key: str
    agent_id: str
    attempt: int
    turn: int
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    cost_confirmed: bool
    started_at: float
    ended_at: float | None
    status: str = "ok"
    request_id: str | None = None
    tool_calls: tuple[Any, ...] = ()
    estimate_tokens: int | None = None


class AttemptEnd(NamedTuple):
    """How an attempt ended; ``output`` (parsed JSON or text) is kept for resume and show.

    ``state`` is one of ``ATTEMPT_STATES``; the ledger refuses any other.
    """

    run_id: str
    workflow_key: str
    agent_id: str
    attempt: int
    state: AttemptState
    ended_at: float
    error: str | None = None
    output: Any = None


# --- read back by the commands and by --resume ----------------------------------------


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of ``aoe runs``. ``state`` is INTERRUPTED for a run whose process died.

    ``in_flight_calls`` started and have no end: lost with a process that ran the run,
    or (while it runs) out now; each is in ``unconfirmed_usd`` at its reservation.
    """

    run_id: str
    started_at: float
    ended_at: float | None
    state: str
    command: str
    files: tuple[str, ...]
    simulate: bool
    budget_usd: Decimal | None
    workflows: int
    agents_completed: int
    agents_failed: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    unconfirmed_usd: Decimal
    in_flight_calls: int = 0


@dataclass(frozen=True, slots=True)
class AttemptDetail:
    """One attempt of an agent as ``aoe show`` lists it."""

    attempt: int
    model: str
    started_at: float
    ended_at: float | None
    state: str
    error: str | None


@dataclass(frozen=True, slots=True)
class AgentDetail:
    """One agent of a workflow: its final state, every attempt, call and cent."""

    agent_id: str
    module: str | None
    model: str
    state: str
    attempts: tuple[AttemptDetail, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    output: Any
    calls: tuple[CallRecord, ...]


@dataclass(frozen=True, slots=True)
class WorkflowDetail:
    """One workflow instance of a run and its agents, in start order."""

    workflow_key: str
    name: str
    path: str
    inputs: Mapping[str, Any]
    budget_usd: Decimal | None
    state: str
    started_at: float | None
    ended_at: float | None
    agents: tuple[AgentDetail, ...]
    cost_usd: Decimal
    needs: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class RunDetail:
    """Everything ``aoe show RUN_ID`` prints."""

    run: RunSummary
    workflows: tuple[WorkflowDetail, ...]


@dataclass(frozen=True, slots=True)
class CostRow:
    """One group of ``aoe cost-report``; ``cost_usd`` includes ``unconfirmed_usd``."""

    keys: tuple[str, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    unconfirmed_usd: Decimal


@dataclass(frozen=True, slots=True)
class CostReport:
    """The rows of one report and their total, summed from the calls themselves."""

    by: CostGroup
    key_names: tuple[str, ...]
    rows: tuple[CostRow, ...]
    total: CostRow
    run_id: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowResume:
    """What ``--resume`` needs of one workflow instance.

    ``completed`` maps agent ids whose latest attempt COMPLETED to their outputs; those
    agents are not called again. ``spent_usd`` includes unconfirmed cost, so budgets hold.
    ``next_attempt`` maps every agent that was tried to the attempt number to use next.
    """

    workflow_key: str
    name: str
    path: str
    inputs: Mapping[str, Any]
    budget_usd: Decimal | None
    state: str
    completed: Mapping[str, Any]
    spent_usd: Decimal
    agent_spent_usd: Mapping[str, Decimal]
    next_attempt: Mapping[str, int]
    fingerprints: Mapping[str, str | None] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class LostCall:
    """A call that started and never ended: its process died while it was in flight.

    The provider may have answered and billed it, so its reservation stays spent
    (unconfirmed), and its agent, which never got the answer, runs again on resume.
    """

    workflow_key: str
    agent_id: str
    attempt: int
    turn: int
    reserved_usd: Decimal
    started_at: float


@dataclass(frozen=True, slots=True)
class ResumeState:
    """Everything needed to continue a run without paying again for finished agents.

    ``spent_usd`` (and each workflow's and agent's) includes ``lost_calls`` at their
    reservations, so every budget they were under still counts them.
    """

    run_id: str
    command: str
    files: tuple[str, ...]
    simulate: bool
    budget_usd: Decimal | None
    state: str
    spent_usd: Decimal
    workflows: Mapping[str, WorkflowResume]
    lost_calls: tuple[LostCall, ...] = ()


@dataclass(frozen=True, slots=True)
class RunLeaseHolder:
    """Who holds a run's lease: the one process that runs or resumes it.

    ``token`` tells holders apart (a pid alone may be reused, or be another machine's);
    the lease is fresh while ``heartbeat_at`` is less than ``stale_after_s`` old, a window
    the holder chose (three heartbeat intervals) and that every taker honours.
    """

    run_id: str
    token: str
    pid: int
    host: str
    since: float
    heartbeat_at: float
    stale_after_s: float

    def stale(self, now: float) -> bool:
        """Whether the holder missed its heartbeats for the whole window at ``now``."""
        return now - self.heartbeat_at > self.stale_after_s
