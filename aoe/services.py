"""What the engine asks of the world, as typed protocols, each with a null object.

    ClientSource   the client that serves a model        providers.registry, the simulator
    ToolSource     each agent's tools                    tools.RunTools (null: PrivateTools)
    LimiterSource  a Limiter per provider key / model    ratelimit (null: NoLimits)
    PriceSource    what a call costs, at most and truly  cost.pricing (null: FreePrices)
    BudgetBook     reservations against run, workflow    cost.book (null: NoBudgets)
                   and agent budgets
    Recorder       runs, attempts and calls, durably     ledger (null: NullRecorder)
    RunLease       one process runs a run at a time      ledger.lease (null: NoLease)
    EventSink      events, fanned out by the EventBus    monitor, ui
    Clock          monotonic waits and wall stamps       clock

The engine never knows which implementation it holds: one process uses the in-memory
limiter and budgets and the SQLite ledger; a fleet plugs in ones kept in Redis and
PostgreSQL behind the same methods. Every method a network store has to round-trip for
is ``async``; readouts for views (``stats``, ``states``) are synchronous snapshots.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Protocol

from aoe.clock import Clock
from aoe.cost.budget import BudgetOverrun, BudgetReservation, BudgetScope, BudgetState
from aoe.errors import RateLimitKind
from aoe.ledger.records import (
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    RunStart,
    WorkflowStart,
)
from aoe.monitor.events import EventSink
from aoe.providers.base import LLMClient, RateLimitSnapshot, Usage
from aoe.ratelimit import LimiterStats, Reservation
from aoe.spec.models import AgentSpec, ModelRef, WorkflowSpec
from aoe.tools import Toolbox

__all__ = [
    "BudgetBook",
    "ClientSource",
    "Clock",
    "EventSink",
    "FreePrices",
    "Limiter",
    "LimiterSource",
    "NoBudgets",
    "NoLease",
    "NoLimits",
    "NullRecorder",
    "PriceSource",
    "Recorder",
    "RunLease",
    "ToolSource",
]

_ZERO = Decimal(0)


class ClientSource(Protocol):
    """Hands out the client that serves a model (the simulator under ``--simulate``)."""

    def client_for(self, model: ModelRef) -> LLMClient: ...

    async def aclose(self) -> None: ...


class ToolSource(Protocol):
    """Hands each agent its tools; the pipeline closes each toolbox it was given."""

    async def for_agent(self, workflow: WorkflowSpec, agent: AgentSpec) -> Toolbox: ...

    async def aclose(self) -> None: ...


class Limiter(Protocol):
    """Multi-tier rate limits of one provider key (see ``aoe.ratelimit``).

    A permit is taken from every tier at once or from none; ``settle`` corrects it with
    what the call used, ``release`` gives it back whole (the call never went out).
    ``note_429`` is told of a permit's 429 before it is settled: it learns the key's
    concurrency from it, and pauses the key for its retry-after, or closes it when that is
    longer than a retry waits (``acquire`` then fails at once with ``RateLimitClosedError``).
    """

    @property
    def name(self) -> str: ...

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation: ...

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...

    async def observe(self, snapshot: RateLimitSnapshot) -> None: ...

    async def pause(self, seconds: float) -> None: ...

    async def note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind = "rate_limit",
        retry_after_s: float | None = None,
    ) -> None: ...

    def stats(self) -> LimiterStats: ...


class LimiterSource(Protocol):
    """The limiter of each provider key (or of one model of it)."""

    def for_model(self, provider: str, model: str) -> Limiter: ...

    def all_stats(self) -> tuple[LimiterStats, ...]: ...


class PriceSource(Protocol):
    """What a call costs (see ``aoe.cost.pricing``); None when the model has no price."""

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal | None: ...

    def max_cost_usd(
        self, model: ModelRef, input_tokens: int, max_output_tokens: int
    ) -> Decimal | None: ...


class BudgetBook(Protocol):
    """The budget scopes of a run and the reservations held against them.

    ``reserve`` commits an amount to every scope or to none (``BudgetExceededError``);
    ``settle`` turns it into spend, confirmed or unconfirmed, naming the ``call`` should it
    bill past its reservation and a limit; ``release`` gives it back; ``overruns`` lists the
    scopes a provider billed past (each then closed).
    """

    def scopes_for_workflow(self, key: str, spec: WorkflowSpec) -> tuple[BudgetScope, ...]: ...

    def scope_for_agent(self, key: str, agent: AgentSpec) -> BudgetScope: ...

    async def reserve(
        self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal
    ) -> BudgetReservation: ...

    async def settle(
        self,
        reservation: BudgetReservation,
        actual_usd: Decimal,
        *,
        confirmed: bool = True,
        call: str = "",
    ) -> None: ...

    async def release(self, reservation: BudgetReservation) -> None: ...

    def states(self) -> tuple[BudgetState, ...]: ...

    def overruns(self) -> tuple[BudgetOverrun, ...]: ...


class Recorder(Protocol):
    """Where a run is recorded (the ledger), write after write in the order they are made.

    Writes are applied in that order, and the commit of one is the commit of every write
    made before it. ``start_run``, ``start_workflow``, ``finish_workflow``, ``finish_run``,
    ``flush`` and ``start_call`` (unless ``wait`` is false) return once committed;
    ``start_attempt``, ``record_call`` and ``finish_attempt`` are queued and return at
    once, committed with the next batch and at the latest with the next write that is
    waited for (so a call's start commits every result written before it). A queued
    write that fails makes every later write fail. ``start_call`` records a call before its
    request leaves (spent at its reservation, unconfirmed, until ``record_call`` ends the
    same record); the engine waits for it unless the call cannot cost money. A write whose
    caller was cancelled may still be made (the ledger writes what it was handed, in
    order): the engine then ends that call with ``record_call``. ``aoe.ledger`` says why
    these and only these are waited for.
    """

    async def start_run(self, record: RunStart) -> None: ...

    async def start_workflow(self, record: WorkflowStart) -> None: ...

    async def start_attempt(self, record: AttemptStart) -> None: ...

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None: ...

    async def record_call(self, record: CallRecord) -> None: ...

    async def finish_attempt(self, record: AttemptEnd) -> None: ...

    async def finish_workflow(
        self, run_id: str, workflow_key: str, state: str, ended_at: float
    ) -> None: ...

    async def finish_run(self, run_id: str, state: str, ended_at: float) -> None: ...

    async def flush(self) -> None: ...


class RunLease(Protocol):
    """Who runs a run: one process at a time (see ``aoe.ledger.lease``).

    ``acquire`` takes the lease of a run or raises ``RunLeaseHeldError`` naming the live
    holder (a stale one is taken over); the holder calls ``renew`` every ``heartbeat_s``
    (``RunLeaseLostError`` once another process has taken it over) and ``release`` at the
    end of the run.
    """

    @property
    def heartbeat_s(self) -> float: ...

    async def acquire(self, run_id: str) -> None: ...

    async def renew(self) -> None: ...

    async def release(self) -> None: ...


# --- null objects: what a run has when it has none of these ------------------------------


class _NoLimit:
    """A limiter that grants everything at once and counts nothing."""

    name = "none"
    _STATS = LimiterStats("none", (), 0, None, 0, 0, 0.0, 0, 0.0)
    _GRANT = Reservation(0, "none", 0, 0.0, 0.0)  # one for all: nothing reads it back

    async def acquire(
        self, tokens: int, *, timeout_s: float | None = None, priority: int = 0
    ) -> Reservation:
        return self._GRANT

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        return None

    async def release(self, reservation: Reservation) -> None:
        return None

    async def observe(self, snapshot: RateLimitSnapshot) -> None:
        return None

    async def pause(self, seconds: float) -> None:
        return None

    async def note_429(
        self,
        reservation: Reservation,
        kind: RateLimitKind = "rate_limit",
        retry_after_s: float | None = None,
    ) -> None:
        return None

    def stats(self) -> LimiterStats:
        return self._STATS


class NoLimits:
    """No rate limiting at all: every acquire is granted at once."""

    _limit = _NoLimit()

    def for_model(self, provider: str, model: str) -> Limiter:
        return self._limit

    def all_stats(self) -> tuple[LimiterStats, ...]:
        return ()


class FreePrices:
    """Every call costs nothing (a library user who tracks no money)."""

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal:
        return _ZERO

    def max_cost_usd(self, model: ModelRef, input_tokens: int, max_output_tokens: int) -> Decimal:
        return _ZERO


class NoBudgets:
    """No budget anywhere: every reservation fits and nothing is counted."""

    _RUN = BudgetScope("run", None)
    _HOLD = BudgetReservation(0, (), _ZERO)  # one for all: nothing reads it back

    def scopes_for_workflow(self, key: str, spec: WorkflowSpec) -> tuple[BudgetScope, ...]:
        return ()

    def scope_for_agent(self, key: str, agent: AgentSpec) -> BudgetScope:
        return self._RUN

    async def reserve(
        self, scopes: tuple[BudgetScope, ...], amount_usd: Decimal
    ) -> BudgetReservation:
        return self._HOLD

    async def settle(
        self,
        reservation: BudgetReservation,
        actual_usd: Decimal,
        *,
        confirmed: bool = True,
        call: str = "",
    ) -> None:
        return None

    async def release(self, reservation: BudgetReservation) -> None:
        return None

    def states(self) -> tuple[BudgetState, ...]:
        return ()

    def overruns(self) -> tuple[BudgetOverrun, ...]:
        return ()


class NullRecorder:
    """Records nothing (a library run without a ledger)."""

    async def start_run(self, record: RunStart) -> None:
        return None

    async def start_workflow(self, record: WorkflowStart) -> None:
        return None

    async def start_attempt(self, record: AttemptStart) -> None:
        return None

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None:
        return None

    async def record_call(self, record: CallRecord) -> None:
        return None

    async def finish_attempt(self, record: AttemptEnd) -> None:
        return None

    async def finish_workflow(
        self, run_id: str, workflow_key: str, state: str, ended_at: float
    ) -> None:
        return None

    async def finish_run(self, run_id: str, state: str, ended_at: float) -> None:
        return None

    async def flush(self) -> None:
        return None


class NoLease:
    """No lease (a library run without a ledger): nothing to share, nothing to renew."""

    heartbeat_s = math.inf

    async def acquire(self, run_id: str) -> None:
        return None

    async def renew(self) -> None:
        return None

    async def release(self) -> None:
        return None
