"""``aoe run`` as a library call: a prepared run, executed under the run's limits.

``RunHandle.execute`` builds the services of the run (clients, limiters, prices, budgets,
the ledger, tools), takes the run's lease (one process runs a run at a time; a heartbeat
task renews it while the engine runs), runs the engine, and closes them all whatever
happens, the lease released last. The handle is also the run's ``RunView``: the live view
and the metrics read limits and budgets from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Callable, Sequence

from aoe.app.prepare import PreparedRun
from aoe.clock import Clock, SystemClock
from aoe.coordination.fleet import Fleet, open_fleet
from aoe.cost.book import RunBudgets
from aoe.cost.budget import BudgetState
from aoe.cost.pricing import PriceBook
from aoe.cost.tokens import preload
from aoe.engine.results import RunResult
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, EngineOptions
from aoe.errors import AoeError, LedgerError, RunLeaseLostError
from aoe.ledger.store import Ledger, default_db_path
from aoe.monitor.events import EventBus, EventSink
from aoe.providers.base import LLMClient
from aoe.providers.registry import ClientPool
from aoe.ratelimit import LimiterStats, RateLimiterRegistry
from aoe.services import (
    BudgetBook,
    LimiterSource,
    NoBudgets,
    NoLease,
    NoLimits,
    NullRecorder,
    Recorder,
    RunLease,
)
from aoe.spec.models import Config, ModelRef
from aoe.tools import RunTools


class _Clients:
    """Every model's client; under ``--simulate`` all of them are the simulator."""

    def __init__(self, config: Config, *, simulate: bool, clock: Clock, seed: int) -> None:
        self.simulate = simulate
        self.pool = ClientPool(config.providers, clock=clock, seed=seed)

    def client_for(self, model: ModelRef) -> LLMClient:
        return self.pool.get("sim" if self.simulate else model.provider)

    async def aclose(self) -> None:
        await self.pool.aclose()


class RunHandle:
    """A prepared run being executed; ``cancel`` stops it (Ctrl-C, SIGTERM)."""

    def __init__(
        self, prepared: PreparedRun, sinks: Sequence[EventSink] = (), *, clock: Clock | None = None
    ) -> None:
        self.prepared = prepared
        self.events = EventBus(sinks)
        self.clock: Clock = clock or SystemClock()
        self._engine: Engine | None = None
        self._cancelled = False
        self._limiters: LimiterSource = NoLimits()
        self._budgets: BudgetBook = NoBudgets()
        self._lost: RunLeaseLostError | None = None
        self._fleet: Fleet | None = None  # limits, budgets, lease in Redis (aoe.coordination)

    def cancel(self) -> None:
        self._cancelled = True
        if self._engine is not None:
            self._engine.cancel()

    def limiter_stats(self) -> tuple[LimiterStats, ...]:
        """The run's rate limiters (none before ``execute`` builds them)."""
        return self._limiters.all_stats()

    def budget_states(self) -> tuple[BudgetState, ...]:
        """The run's budget scopes (none before ``execute`` builds them)."""
        return self._budgets.states()

    async def execute(self, on_start: Callable[[Engine], None] | None = None) -> RunResult:
        """Run the prepared jobs; ``on_start`` sees the engine before the first agent starts.

        Raises ``RunLeaseHeldError`` (before anything is spent) when another process runs
        the run, and ``RunLeaseLostError`` when one took it over while this one ran.
        """
        p, o = self.prepared, self.prepared.options
        clients = _Clients(p.config, simulate=p.simulate, clock=self.clock, seed=o.seed)
        self._limiters = RateLimiterRegistry(p.config, clock=self.clock)
        self._budgets = RunBudgets(p.budget_usd, p.spent)
        tools = RunTools()
        ledger: Ledger | None = None
        lease: RunLease = NoLease()
        heartbeat: asyncio.Task[None] | None = None
        run_id = p.run_id or uuid.uuid4().hex[:12]
        try:
            await self._open_fleet(p, run_id)
            if o.use_ledger:
                ledger = await asyncio.to_thread(Ledger.open, o.db_path or default_db_path())
                lease = ledger.run_lease(
                    heartbeat_s=o.lease_heartbeat_s, clock=self.clock, holder=p.lease
                )
            lease = self._fleet_lease(lease)
            await lease.acquire(run_id)
            if math.isfinite(lease.heartbeat_s):
                heartbeat = asyncio.create_task(self._heartbeat(lease), name="aoe-lease")
            recorder: Recorder = ledger if ledger is not None else NullRecorder()
            models = {agent.model for job in p.jobs for agent in job.spec.agents.values()}
            exact = {m for m in models if clients.client_for(m).model_info(m.name).tokenizer}
            await asyncio.to_thread(preload, exact)  # only where a budget counts exactly
            runtime = Runtime(
                clients=clients,
                events=self.events,
                clock=self.clock,
                limiters=self._limiters,
                prices=PriceBook.from_config(p.config),
                budgets=self._budgets,
                recorder=recorder,
                seed=o.seed,
                tools=tools,
            )
            engine = Engine(
                runtime,
                EngineOptions(
                    max_parallel=o.max_parallel,
                    max_workflows=o.max_workflows,
                    simulate=p.simulate,
                    budget_usd=p.budget_usd,
                    run_id=run_id,
                    command=o.command,
                ),
            )
            self._engine = engine
            if on_start is not None:
                on_start(engine)
            if self._cancelled:
                engine.cancel()
            try:
                result = await engine.run(list(p.jobs))
            except Exception as exc:
                if (stop := self._why_stopped()) is not None:  # the ledger refused
                    raise stop from exc  # its writes, or Redis went away: this is why
                raise
            if (stop := self._why_stopped()) is not None:
                raise stop
            return result
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            await tools.aclose()
            await clients.aclose()
            await lease.release()
            if ledger is not None:
                await ledger.aclose()
            await self._close_fleet()

    def _why_stopped(self) -> AoeError | None:
        """The lease was taken over, or Redis was lost (exit 5, see ``aoe.coordination``)."""
        if self._lost is not None:
            return self._lost
        return self._fleet.lost if self._fleet is not None else None

    async def _open_fleet(self, p: PreparedRun, run_id: str) -> None:
        """The coordination hook: limits and budgets shared through Redis when aoe.yaml or
        AOE_REDIS_URL names one (``aoe.coordination``), the run's own otherwise. Losing
        Redis mid-run stops the run: no call is admitted past the shared limits."""
        fleet = await open_fleet(
            p.config,
            clock=self.clock,
            run_id=run_id,
            budget_usd=p.budget_usd,
            spent=p.spent,
            budget_names=p.options.budget_names,
        )
        self._fleet = fleet
        if fleet is not None:
            self._limiters = fleet.limiters
            self._budgets = fleet.budgets
            fleet.on_lost(lambda _: self.cancel())

    def _fleet_lease(self, lease: RunLease) -> RunLease:
        """With Redis, the run's lease is held there too: one process on any machine."""
        if self._fleet is None:
            return lease
        return self._fleet.run_lease(lease, heartbeat_s=self.prepared.options.lease_heartbeat_s)

    async def _close_fleet(self) -> None:
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.aclose()

    async def _heartbeat(self, lease: RunLease) -> None:
        """Renew the lease every ``heartbeat_s``; stop the run if it was taken over.

        A renewal the ledger could not write (locked too long by another process) is
        tried again at the next beat: the window allows missing a few.
        """
        while True:
            await self.clock.sleep(lease.heartbeat_s)
            try:
                await lease.renew()
            except RunLeaseLostError as lost:
                self._lost = lost
                self.cancel()
                return
            except LedgerError:
                continue
