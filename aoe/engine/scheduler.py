"""The scheduler: every agent starts the moment all of its ``needs`` are completed.

There are no barriers between levels. Ready agents wait in a heap per workflow and are
taken by priority (then file order) whenever a slot is free under the workflow's
``max_parallel_agents`` and the run's ``max_parallel``. Workflow instances are admitted in
order, at most ``max_workflows`` at once. The engine is event-driven, in the manner of
``graphlib.TopologicalSorter``: a finished agent releases its dependents and the
dispatcher fills free slots; nothing polls. A finished agent is settled at the end of its
own task, so its dependents start on the next turn of the event loop.

Memory per agent (tracemalloc over 10,000 agents, ``bench/bench_chain.py``): about 90 B
while pending (its entries in ``_WorkflowRun``), 5 KB while running (its task and
coroutine frames, ``AgentTask``, ``Attempt``, request and ticket), 600 B once finished
(its ``AgentResult``), besides its spec and its share of the graph (about 1 KB).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import os
import uuid
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from aoe.cost.budget import BudgetScope
from aoe.engine import policy
from aoe.engine.pipeline import run_agent
from aoe.engine.results import AgentResult, AgentState, RunResult, WorkflowResult
from aoe.engine.runtime import Runtime
from aoe.engine.task import AgentTask
from aoe.graph import WorkflowGraph
from aoe.ledger.records import RunStart, WorkflowStart
from aoe.monitor.events import (
    AgentFinished,
    AgentSkipped,
    Envelope,
    RunFinished,
    RunStarted,
    WorkflowFinished,
    WorkflowStarted,
)
from aoe.spec.models import WorkflowSpec, fingerprints


@dataclass(frozen=True, slots=True)
class WorkflowJob:
    """One workflow instance to run: a spec, its validated graph, and its inputs.

    ``fingerprints`` are the agents' ``agent_fingerprint``s, recorded with each attempt
    for ``--resume``. ``completed`` holds outputs of agents that finished in an earlier run
    (``--resume``); they are not called again. Instances of one spec share its graph and
    fingerprints.
    """

    key: str
    spec: WorkflowSpec
    graph: WorkflowGraph
    fingerprints: Mapping[str, str]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    completed: Mapping[str, Any] = field(default_factory=dict)
    next_attempts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.graph.agent_ids != tuple(self.spec.agents) or self.fingerprints.keys() != (
            self.spec.agents.keys()
        ):
            raise ValueError(f"job {self.key}: its graph and fingerprints are not of its spec")

    @classmethod
    def of(
        cls, key: str, spec: WorkflowSpec, inputs: Mapping[str, Any] | None = None
    ) -> WorkflowJob:
        """A job of ``spec``, its graph built here (raises ``SpecError`` if it has none)."""
        return cls(key, spec, WorkflowGraph.build(spec), fingerprints(spec), inputs or {})


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Run-wide limits. ``None`` means no limit."""

    max_parallel: int | None = None
    max_workflows: int | None = None
    simulate: bool = False
    budget_usd: Decimal | None = None
    run_id: str | None = None
    command: str = ""


class _WorkflowRun:
    """Mutable bookkeeping of one workflow instance while it runs."""

    def __init__(self, job: WorkflowJob, index: int, envelope: Envelope, now: float) -> None:
        self.job = job
        self.index = index
        self.envelope = envelope
        spec = job.spec
        self.graph = job.graph
        self.states: dict[str, AgentState] = dict.fromkeys(spec.agents, AgentState.PENDING)
        self.results: dict[str, AgentResult] = {}
        self.views: dict[str, Mapping[str, Any]] = {}
        self.upstream = MappingProxyType(self.views)
        self.waiting: dict[str, int] = {a: len(deps) for a, deps in job.graph.needs.items()}
        self.order = {a: i for i, a in enumerate(spec.agents)}
        self.ready: list[tuple[int, int, str]] = []
        self.running: dict[str, asyncio.Task[AgentResult]] = {}
        self.tasks: dict[str, AgentTask] = {}  # of the running agents
        self.limit = spec.max_parallel_agents or 0
        self.stop_reason: str | None = None
        self.cancelled = False
        self.opened = False
        self.started_at = now
        self.budget_scopes: tuple[BudgetScope, ...] = ()
        self.scope_names: set[str] = set()  # every budget scope of this instance
        self.env = {name: os.environ.get(name, "") for name in spec.env}

    def push_ready(self, agent_id: str) -> None:
        prio = self.job.spec.agents[agent_id].priority
        heapq.heappush(self.ready, (-prio, self.order[agent_id], agent_id))

    def has_capacity(self) -> bool:
        return not self.limit or len(self.running) < self.limit

    def idle(self) -> bool:
        return not self.running and (not self.ready or self.stop_reason is not None)


class Engine:
    """Runs workflow jobs to completion under the run's limits; see the module docstring."""

    def __init__(self, runtime: Runtime, options: EngineOptions | None = None) -> None:
        self.rt = runtime
        self.options = options or EngineOptions()
        self.run_id = self.options.run_id or uuid.uuid4().hex[:12]
        self.envelope = Envelope(self.run_id)
        self._active: list[_WorkflowRun] = []
        self._queue: deque[_WorkflowRun] = deque()
        self._results: dict[str, WorkflowResult] = {}
        self._running_total = 0
        self._bookkeeping: set[asyncio.Task[None]] = set()
        self._done = asyncio.Event()
        self._interrupted = False
        self._fatal: BaseException | None = None

    # -- public -----------------------------------------------------------------------

    async def run(self, jobs: Sequence[WorkflowJob]) -> RunResult:
        """Run every job; returns when all have reached a final state (or were cancelled)."""
        clock, opts = self.rt.clock, self.options
        started = clock.wall()
        await self.rt.recorder.start_run(
            RunStart(
                self.run_id,
                started,
                opts.command,
                tuple(dict.fromkeys(str(j.spec.path) for j in jobs)),
                opts.simulate,
                opts.budget_usd,
            )
        )
        self.rt.events.publish(
            RunStarted(
                self.envelope,
                started,
                workflows=tuple(j.key for j in jobs),
                simulate=opts.simulate,
                budget_usd=opts.budget_usd,
            )
        )
        self._queue.extend(
            _WorkflowRun(job, i, self.envelope.of_workflow(job.key), started)
            for i, job in enumerate(jobs)
        )
        if self._interrupted:  # cancelled while the run was being set up
            for wf in self._queue:
                wf.cancelled, wf.stop_reason = True, "interrupted"
        order = [j.key for j in jobs]
        self._admit()
        if not self._active:
            self._done.set()
        await self._done.wait()
        while self._bookkeeping:
            done = await asyncio.gather(*list(self._bookkeeping), return_exceptions=True)
            failed = [d for d in done if isinstance(d, BaseException)]
            if failed and self._fatal is None:
                self._fatal = failed[0]
        if self._fatal is not None:
            raise self._fatal
        result = RunResult(
            self.run_id,
            tuple(self._results[k] for k in order if k in self._results),
            started,
            clock.wall(),
            simulate=opts.simulate,
            interrupted=self._interrupted,
        )
        await self.rt.recorder.finish_run(self.run_id, result.state.value, result.ended_at)
        self.rt.events.publish(
            RunFinished(
                self.envelope,
                result.ended_at,
                state=result.state.value,
                exit_code=result.exit_code,
                cost_usd=result.cost_usd,
                duration_s=result.ended_at - started,
            )
        )
        return result

    def cancel(self) -> None:
        """Stop starting agents, cancel the running ones; ``run`` then returns promptly."""
        self._interrupted = True
        for wf in list(self._queue):
            wf.cancelled = True
            wf.stop_reason = "interrupted"
        for wf in self._active:
            wf.cancelled = True
            wf.stop_reason = "interrupted"
            _cancel(wf)
        self._admit()
        for wf in list(self._active):
            self._maybe_finish(wf)

    # -- admission and dispatch ---------------------------------------------------------

    def _admit(self) -> None:
        limit = self.options.max_workflows or 0
        while self._queue and (not limit or len(self._active) < limit):
            wf = self._queue.popleft()
            self._active.append(wf)
            self._spawn(self._open(wf))

    async def _open(self, wf: _WorkflowRun) -> None:
        """Record the workflow before any of its agents can record an attempt."""
        spec = wf.job.spec
        wf.budget_scopes = self.rt.budgets.scopes_for_workflow(wf.job.key, spec)
        wf.scope_names.update(s.name for s in wf.budget_scopes)
        wf.started_at = self.rt.clock.wall()
        self.rt.events.publish(
            WorkflowStarted(
                wf.envelope,
                wf.started_at,
                name=spec.name,
                agents_total=len(spec.agents),
                budget_usd=spec.budget_usd,
            )
        )
        try:
            await self.rt.recorder.start_workflow(
                WorkflowStart(
                    self.run_id,
                    wf.job.key,
                    spec.name,
                    str(spec.path),
                    dict(wf.job.inputs),
                    spec.budget_usd,
                    started_at=wf.started_at,
                    needs=wf.graph.needs,
                )
            )
        except Exception as exc:  # nothing may run that the ledger cannot record
            self._fatal = exc
            wf.opened = True
            self.cancel()
            self._maybe_finish(wf)
            return
        wf.opened = True
        try:
            self._begin(wf)
        except Exception as exc:  # a bug here must end the run, not leave it waiting
            self._fail(exc)

    def _begin(self, wf: _WorkflowRun) -> None:
        """Settle resumed agents, queue the ready ones, and start what fits."""
        resumed = [a for a in wf.job.completed if a in wf.states]
        for agent_id in resumed:
            wf.states[agent_id] = AgentState.COMPLETED
        now = self.rt.clock.wall()
        for agent_id in resumed:
            self._settle(
                wf,
                AgentResult(
                    agent_id,
                    AgentState.COMPLETED,
                    output=wf.job.completed[agent_id],
                    started_at=now,
                    ended_at=now,
                    resumed=True,
                ),
                publish=False,
            )
        for agent_id, deps in wf.graph.needs.items():
            if not deps and wf.states[agent_id] is AgentState.PENDING:
                wf.push_ready(agent_id)
        if wf.cancelled:
            wf.stop_reason = "interrupted"
        self._dispatch()
        self._maybe_finish(wf)

    def _dispatch(self) -> None:
        cap = self.options.max_parallel or 0
        while not cap or self._running_total < cap:
            best: _WorkflowRun | None = None
            best_key: tuple[int, int, int] | None = None
            for wf in self._active:
                if wf.ready and wf.stop_reason is None and wf.has_capacity():
                    prio, order, _ = wf.ready[0]
                    key = (prio, wf.index, order)
                    if best_key is None or key < best_key:
                        best, best_key = wf, key
            if best is None:
                return
            _, _, agent_id = heapq.heappop(best.ready)
            if best.states[agent_id] is AgentState.PENDING:
                self._launch(best, agent_id)

    def _launch(self, wf: _WorkflowRun, agent_id: str) -> None:
        spec = wf.job.spec
        agent = spec.agents[agent_id]
        wf.states[agent_id] = AgentState.RUNNING
        agent_scope = self.rt.budgets.scope_for_agent(wf.job.key, agent)
        wf.scope_names.add(agent_scope.name)
        task = AgentTask(
            envelope=wf.envelope.of_agent(agent_id),
            workflow=spec,
            agent=agent,
            fingerprint=wf.job.fingerprints[agent_id],
            inputs=wf.job.inputs,
            upstream=wf.upstream,
            env=wf.env,
            budget_scopes=(*wf.budget_scopes, agent_scope),
            first_attempt=wf.job.next_attempts.get(agent_id, 1),
        )
        runner = asyncio.create_task(self._run_agent(wf, agent_id, task), name=task.where)
        wf.running[agent_id] = runner
        wf.tasks[agent_id] = task
        self._running_total += 1
        runner.add_done_callback(functools.partial(self._on_done, wf, agent_id))

    # -- completion ---------------------------------------------------------------------

    async def _run_agent(self, wf: _WorkflowRun, agent_id: str, task: AgentTask) -> AgentResult:
        """Run the agent, and settle it at the end of its own task: its dependents start
        one turn of the event loop sooner than from a done callback."""
        result = await run_agent(task, self.rt)
        try:
            self._agent_ended(wf, agent_id, result)
        except Exception as exc:  # a bug here must end the run, not leave it waiting
            self._fail(exc)
        return result

    def _on_done(self, wf: _WorkflowRun, agent_id: str, task: asyncio.Task[AgentResult]) -> None:
        """Settle an agent whose task did not return (cancelled, or an internal error)."""
        if agent_id not in wf.running:  # settled at the end of its own task
            return
        try:
            self._agent_done(wf, agent_id, task)
        except Exception as exc:  # a bug here must end the run, not leave it waiting
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop everything and let ``run`` raise ``exc`` once the agents have wound down."""
        if self._fatal is None:
            self._fatal = exc
        try:
            self.cancel()
        finally:
            if not any(wf.running for wf in self._active):
                self._done.set()

    def _agent_done(self, wf: _WorkflowRun, agent_id: str, task: asyncio.Task[AgentResult]) -> None:
        task_of = wf.tasks.get(agent_id)
        attempts = tuple(task_of.attempts) if task_of is not None else ()
        now = self.rt.clock.wall()
        if task.cancelled():
            result = AgentResult(
                agent_id,
                AgentState.CANCELLED,
                attempts,
                error="cancelled",
                started_at=attempts[0].started_at if attempts else now,
                ended_at=now,
            )
        elif (exc := task.exception()) is not None:
            result = AgentResult(
                agent_id,
                AgentState.FAILED,
                error=f"internal error: {type(exc).__name__}: {exc}",
                started_at=now,
                ended_at=now,
            )
        else:
            result = task.result()
        self._agent_ended(wf, agent_id, result)

    def _agent_ended(self, wf: _WorkflowRun, agent_id: str, result: AgentResult) -> None:
        wf.running.pop(agent_id, None)
        wf.tasks.pop(agent_id, None)
        self._running_total -= 1
        self._settle(wf, result)
        # A provider billing past a budget stops the workflow (letting running agents end);
        # otherwise only a failure can settle a workflow's outcome early.
        if wf.stop_reason is None:
            wf.stop_reason = self._overrun(wf)
        if wf.stop_reason is None and result.state is not AgentState.COMPLETED:
            wf.stop_reason = policy.stop_reason(wf.job.spec, wf.states)
            if wf.stop_reason is not None and policy.cancels_running(wf.states):
                _cancel(wf)
        self._dispatch()
        self._maybe_finish(wf)

    def _settle(self, wf: _WorkflowRun, result: AgentResult, *, publish: bool = True) -> None:
        agent_id = result.agent_id
        wf.states[agent_id] = result.state
        wf.results[agent_id] = result
        if publish:
            self.rt.events.publish(
                AgentFinished(
                    wf.envelope.of_agent(agent_id),
                    self.rt.clock.wall(),
                    state=result.state.value,
                    attempts=len(result.attempts),
                    duration_s=result.duration_s,
                    usage=result.usage,
                    cost_usd=result.cost_usd,
                    error=result.error,
                    module=wf.job.spec.agents[agent_id].module,
                )
            )
        if result.state is AgentState.COMPLETED:
            wf.views[agent_id] = MappingProxyType({"output": result.output})
            for dep in wf.graph.dependents(agent_id):
                wf.waiting[dep] -= 1
                if wf.waiting[dep] == 0 and wf.states[dep] is AgentState.PENDING:
                    wf.push_ready(dep)
        elif result.state is not AgentState.CANCELLED:
            self._skip_downstream(wf, agent_id)

    def _skip_downstream(self, wf: _WorkflowRun, failed: str) -> None:
        """Every agent that waits, directly or not, for one that ended for good: SKIPPED."""
        reason = f"needs '{failed}', which ended {wf.states[failed].value}"
        now = self.rt.clock.wall()
        for agent_id in wf.graph.downstream(failed):
            if wf.states[agent_id] is not AgentState.PENDING:
                continue
            wf.states[agent_id] = AgentState.SKIPPED
            wf.results[agent_id] = AgentResult(agent_id, AgentState.SKIPPED, error=reason)
            self.rt.events.publish(AgentSkipped(wf.envelope.of_agent(agent_id), now, reason=reason))

    def _maybe_finish(self, wf: _WorkflowRun) -> None:
        if not wf.opened or wf not in self._active or not wf.idle():
            return
        now = self.rt.clock.wall()
        spec = wf.job.spec
        for agent_id, state in wf.states.items():
            if state is not AgentState.PENDING:
                continue
            reason = f"not started: {wf.stop_reason}" if wf.stop_reason else "not started"
            final = AgentState.CANCELLED if wf.cancelled else AgentState.SKIPPED
            wf.states[agent_id] = final
            wf.results[agent_id] = AgentResult(agent_id, final, error=reason)
            envelope = wf.envelope.of_agent(agent_id)
            if final is AgentState.CANCELLED:
                self.rt.events.publish(
                    AgentFinished(
                        envelope,
                        now,
                        state=final.value,
                        attempts=0,
                        duration_s=0.0,
                        error=reason,
                        module=spec.agents[agent_id].module,
                    )
                )
            else:
                self.rt.events.publish(AgentSkipped(envelope, now, reason=reason))
        outcome, why = policy.outcome(
            spec, wf.states, cancelled=wf.cancelled, overrun=self._overrun(wf)
        )
        result = WorkflowResult(
            wf.job.key,
            spec.name,
            str(spec.path),
            outcome,
            MappingProxyType({a: wf.results[a] for a in spec.agents}),
            wf.started_at,
            now,
            inputs=wf.job.inputs,
            reason=why,
        )
        self._results[wf.job.key] = result
        self._active.remove(wf)
        counts: dict[str, int] = {}
        for s in wf.states.values():
            counts[s.value] = counts.get(s.value, 0) + 1
        self.rt.events.publish(
            WorkflowFinished(
                wf.envelope,
                now,
                state=outcome.value,
                duration_s=result.ended_at - result.started_at,
                cost_usd=result.cost_usd,
                counts=tuple(sorted(counts.items())),
            )
        )
        self._spawn(self.rt.recorder.finish_workflow(self.run_id, wf.job.key, outcome.value, now))
        self._admit()
        if not self._active and not self._queue:
            self._done.set()

    def _overrun(self, wf: _WorkflowRun) -> str | None:
        """How a provider billed past one of this instance's budgets, if it did."""
        for overrun in self.rt.budgets.overruns():
            if overrun.scope in wf.scope_names:
                return overrun.message
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)


def _cancel(wf: _WorkflowRun) -> None:
    """Cancel the running agents of ``wf`` once: an agent already winding down (recording
    what its call cost) is not interrupted a second time by another Ctrl-C or a stopping
    policy, and one settling an answered call is cancelled once that is recorded."""
    for agent_id, runner in wf.running.items():
        guard = wf.tasks[agent_id].guard
        if guard.held:
            guard.deferred = True
        elif not runner.cancelling():
            runner.cancel()
