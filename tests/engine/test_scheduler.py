"""The scheduler: dependencies without level barriers, priorities, limits, outcomes."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from aoe.clock import FakeClock
from aoe.cost.book import RunBudgets
from aoe.engine.results import AgentState, WorkflowState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob
from aoe.errors import AuthenticationError, ServerError
from aoe.graph import WorkflowGraph
from aoe.monitor.events import AgentSkipped
from aoe.services import NullRecorder
from aoe.spec.models import RetrySpec, WorkflowSpec, fingerprints
from tests.engine.scripted import FlatPrices, OneClient, ScriptedClient, agent, workflow


def runtime(client: ScriptedClient, **kw: object) -> Runtime:
    kw.setdefault("clock", client.clock)  # latencies pass on the engine's clock, in no real time
    return Runtime(clients=OneClient(client), **kw)  # type: ignore[arg-type]


async def run(spec, client, *, options=None, inputs=None, **kw):  # type: ignore[no-untyped-def]
    engine = Engine(runtime(client, **kw), options)
    return await engine.run([WorkflowJob.of(spec.name, spec, inputs or {})])


async def test_agent_starts_when_its_needs_are_done_without_level_barrier() -> None:
    """D (needs B) starts as soon as B is done, not after slow C on the same level."""
    spec = workflow(
        agent("A"), agent("B", "A"), agent("C", "A"), agent("D", "B"), agent("E", "C", "D")
    )
    client = ScriptedClient(latency_s={"A": 0.02, "B": 0.02, "C": 0.4, "D": 0.02, "E": 0.02})
    result = await run(spec, client)
    assert result.exit_code == 0
    assert client.started("D") < client.ended("C")
    assert client.started("E") >= max(client.ended("C"), client.ended("D"))
    assert client.started("B") >= client.ended("A")


async def test_higher_priority_goes_first_when_a_limit_makes_agents_wait() -> None:
    """With one slot, ready agents run by priority, then in file order."""
    spec = workflow(
        agent("low", priority=1),
        agent("high", priority=9),
        agent("mid", priority=5),
        agent("mid2", priority=5),
    )
    client = ScriptedClient()
    result = await run(spec, client, options=EngineOptions(max_parallel=1))
    assert result.exit_code == 0
    assert client.order() == ["high", "mid", "mid2", "low"]


async def test_max_parallel_agents_caps_one_workflow() -> None:
    """A workflow's max_parallel_agents bounds how many of its agents call at once."""
    spec = workflow(*(agent(f"a{i}") for i in range(12)), max_parallel_agents=3)
    client = ScriptedClient(latency_s={f"a{i}": 0.02 for i in range(12)})
    result = await run(spec, client)
    assert result.exit_code == 0
    assert client.peak_in_flight == 3


async def test_max_parallel_caps_the_whole_run_and_max_workflows_admits_in_order() -> None:
    """--max-parallel bounds calls across workflows; --max-workflows bounds open workflows."""
    specs = [workflow(agent("x"), agent("y"), name=f"w{i}") for i in range(5)]
    client = ScriptedClient(latency_s={"x": 0.02, "y": 0.02})
    engine = Engine(runtime(client), EngineOptions(max_parallel=3, max_workflows=2))
    open_now: set[str] = set()
    peak_open = 0

    class Watch:
        def handle(self, event) -> None:  # type: ignore[no-untyped-def]
            nonlocal peak_open
            if event.kind == "workflow_started":
                open_now.add(event.workflow)
                peak_open = max(peak_open, len(open_now))
            elif event.kind == "workflow_finished":
                open_now.discard(event.workflow)

    engine.rt.events.subscribe(Watch())
    result = await engine.run([WorkflowJob.of(s.name, s) for s in specs])
    assert [w.key for w in result.workflows] == [f"w{i}" for i in range(5)]
    assert all(w.state is WorkflowState.COMPLETED for w in result.workflows)
    assert client.peak_in_flight == 3
    assert peak_open == 2


async def test_first_permanent_failure_fails_the_workflow_and_cancels_running_agents() -> None:
    """Without allow_partial_completion one failure stops everything: exit code 1."""
    spec = workflow(agent("bad"), agent("slow"), agent("after", "slow"))
    client = ScriptedClient(
        script={"bad": [AuthenticationError("bad key", provider="script", status=401)]},
        latency_s={"bad": 0.01, "slow": 5.0},
    )
    result = await asyncio.wait_for(run(spec, client), 2)
    wf = result.workflows[0]
    assert wf.state is WorkflowState.FAILED
    assert result.exit_code == 1
    assert wf.agents["bad"].state is AgentState.FAILED
    assert wf.agents["slow"].state is AgentState.CANCELLED
    assert wf.agents["after"].state in (AgentState.SKIPPED, AgentState.CANCELLED)
    assert "bad key" in (wf.agents["bad"].error or "")


async def test_partial_completion_skips_dependents_and_ends_partially_completed() -> None:
    """With allow_partial_completion a failure skips its dependents; the rest completes."""
    spec = workflow(
        agent("a"),
        agent("b", "a"),
        agent("c"),
        agent("d"),
        agent("e"),
        allow_partial_completion=True,
        max_failure_rate=0.5,
    )
    client = ScriptedClient(script={"a": [ServerError("boom", provider="script", status=500)]})
    result = await run(spec, client)
    wf = result.workflows[0]
    assert wf.state is WorkflowState.PARTIALLY_COMPLETED
    assert result.exit_code == 4
    assert wf.agents["b"].state is AgentState.SKIPPED
    assert "needs 'a'" in (wf.agents["b"].error or "")
    assert [wf.agents[x].state for x in "cde"] == [AgentState.COMPLETED] * 3


async def test_failure_rate_above_the_limit_fails_the_workflow() -> None:
    """Skipped agents count as not completed against max_failure_rate."""
    spec = workflow(
        agent("a"),
        agent("b", "a"),
        agent("c"),
        allow_partial_completion=True,
        max_failure_rate=0.5,
    )
    client = ScriptedClient(script={"a": [ServerError("boom", provider="script", status=500)]})
    result = await run(spec, client)
    assert result.workflows[0].state is WorkflowState.FAILED
    assert "max_failure_rate" in (result.workflows[0].reason or "")


async def test_critical_agent_failure_fails_even_with_partial_completion() -> None:
    """An agent at or above critical_priority failing fails the workflow."""
    spec = workflow(
        agent("vip", priority=9),
        agent("x"),
        agent("y"),
        agent("z"),
        allow_partial_completion=True,
        max_failure_rate=0.9,
        critical_priority=8,
    )
    client = ScriptedClient(script={"vip": [ServerError("boom", provider="script", status=500)]})
    result = await run(spec, client)
    assert result.workflows[0].state is WorkflowState.FAILED
    assert "critical_priority" in (result.workflows[0].reason or "")


async def test_retriable_failures_are_retried_with_backoff_on_the_injected_clock() -> None:
    """Two 503s then success: three attempts, exponential delays 1 s and 2 s, no real sleep."""
    retry = RetrySpec(
        max_retries=3,
        strategy="exponential",
        base_delay_s=1,
        max_delay_s=30,
        exponential_base=2,
        jitter=False,
    )
    spec = workflow(agent("a", retry=retry))
    boom = ServerError("unavailable", provider="script", status=503)
    client = ScriptedClient(script={"a": [boom, boom, "fine"]})
    clock = FakeClock(autojump=True)
    result = await run(spec, client, clock=clock)
    a = result.workflows[0].agents["a"]
    assert a.state is AgentState.COMPLETED
    assert [x.attempt for x in a.attempts] == [1, 2, 3]
    assert [x.state for x in a.attempts] == [
        AgentState.FAILED,
        AgentState.FAILED,
        AgentState.COMPLETED,
    ]
    assert clock.slept == [1.0, 2.0]
    assert a.output == "fine"


async def test_non_retriable_error_is_not_retried() -> None:
    """A 401 fails at once, whatever max_retries says."""
    spec = workflow(agent("a", retry=RetrySpec(max_retries=5, jitter=False)))
    client = ScriptedClient(
        script={"a": [AuthenticationError("no", provider="script", status=401)]}
    )
    result = await run(spec, client, clock=FakeClock(autojump=True))
    assert len(result.workflows[0].agents["a"].attempts) == 1


async def test_invalid_structured_output_is_retried_and_the_error_recorded() -> None:
    """An answer that breaks output_schema is a retriable failure with the reason kept."""
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
    retry = RetrySpec(max_retries=2, strategy="immediate", jitter=False)
    spec = workflow(agent("a", retry=retry, output_schema=schema))
    client = ScriptedClient(script={"a": ['{"total": "lots"}', "not json", '{"total": 12.5}']})
    result = await run(spec, client, clock=FakeClock(autojump=True))
    a = result.workflows[0].agents["a"]
    assert a.state is AgentState.COMPLETED
    assert a.output == {"total": 12.5}
    assert "total" in (a.attempts[0].error or "")
    assert "not JSON" in (a.attempts[1].error or "")


async def test_outputs_flow_downstream_into_prompts() -> None:
    """A downstream prompt sees inputs and the parsed output of its needs."""
    schema = {"type": "object", "properties": {"vendor": {"type": "string"}}}
    spec = workflow(
        agent("extract", output_schema=schema, prompt="{{ inputs.text }}"),
        agent("check", "extract", prompt="vendor={{ agents.extract.output.vendor }}"),
    )
    seen: list[str] = []

    def answer(request):  # type: ignore[no-untyped-def]
        seen.append(request.messages[0].content)
        return "ok"

    client = ScriptedClient(script={"extract": [json.dumps({"vendor": "ACME"})], "check": [answer]})
    result = await run(spec, client, inputs={"text": "invoice 1"})
    assert result.exit_code == 0
    assert seen == ["vendor=ACME"]
    assert client.calls[0].agent == "extract"


async def test_resumed_agents_are_not_called_again() -> None:
    """Agents completed in an earlier run keep their outputs and cost nothing now."""
    spec = workflow(agent("a"), agent("b", "a", prompt="{{ agents.a.output }}!"))
    seen: list[str] = []
    client = ScriptedClient(script={"b": [lambda r: seen.append(r.messages[0].content) or "done"]})
    job = WorkflowJob(
        spec.name, spec, WorkflowGraph.build(spec), fingerprints(spec), completed={"a": "earlier"}
    )
    result = await Engine(runtime(client)).run([job])
    assert result.exit_code == 0
    assert client.order() == ["b"]
    assert seen == ["earlier!"]
    assert result.workflows[0].agents["a"].resumed


async def test_cancel_stops_the_run_promptly_with_exit_code_130() -> None:
    """Cancelling cancels in-flight calls, starts nothing new and ends CANCELLED."""
    spec = workflow(agent("a"), agent("b"), agent("c", "a"))
    client = ScriptedClient(latency_s={"a": 10.0, "b": 10.0})
    engine = Engine(runtime(client))
    task = asyncio.create_task(engine.run([WorkflowJob.of("wf", spec)]))
    await client.clock.sleep(0.05)
    engine.cancel()
    result = await asyncio.wait_for(task, 2)
    wf = result.workflows[0]
    assert result.exit_code == 130
    assert wf.state is WorkflowState.CANCELLED
    assert {a.state for a in wf.agents.values()} == {AgentState.CANCELLED}
    assert client.order() == ["a", "b"]
    assert [x.state for x in wf.agents["a"].attempts] == [AgentState.CANCELLED]
    assert wf.agents["c"].attempts == ()


async def test_a_resumed_chain_runs_only_what_is_left() -> None:
    """With a and b done before, only c runs, and it sees b's earlier output."""
    spec = workflow(agent("a"), agent("b", "a"), agent("c", "b", prompt="{{ agents.b.output }}"))
    seen: list[str] = []
    client = ScriptedClient(script={"c": [lambda r: seen.append(r.messages[0].content) or "ok"]})
    job = WorkflowJob(
        spec.name,
        spec,
        WorkflowGraph.build(spec),
        fingerprints(spec),
        completed={"b": "from b", "a": "from a"},
    )
    result = await Engine(runtime(client)).run([job])
    assert result.exit_code == 0
    assert client.order() == ["c"]
    assert seen == ["from b"]


@pytest.mark.parametrize("n", [200])
async def test_many_instances_each_get_their_own_outcome(n: int) -> None:
    """Many instances of one workflow run side by side; the worst outcome sets the exit code."""
    spec = workflow(agent("a"), agent("b", "a"))
    client = ScriptedClient()
    jobs = [WorkflowJob.of(f"wf#{i}", spec, {"row": i}) for i in range(n)]
    result = await Engine(runtime(client), EngineOptions(max_workflows=20)).run(jobs)
    assert len(result.workflows) == n
    assert result.exit_code == 0
    assert len(client.calls) == 2 * n


async def test_cancel_before_the_run_starts_runs_nothing() -> None:
    """Ctrl-C while the run is being set up: no agent is called, the run ends CANCELLED."""
    spec = workflow(agent("a"), agent("b"))
    client = ScriptedClient()
    engine = Engine(runtime(client))
    engine.cancel()
    result = await asyncio.wait_for(engine.run([WorkflowJob.of("wf", spec)]), 2)
    assert result.exit_code == 130
    assert client.calls == []


async def test_a_ledger_that_cannot_record_a_workflow_stops_the_run() -> None:
    """Nothing runs that the ledger cannot record: the error surfaces, nothing hangs."""
    from aoe.errors import LedgerError

    class BrokenLedger(NullRecorder):
        async def start_workflow(self, record: object) -> None:
            raise LedgerError("database is locked", where="ledger.db")

    client = ScriptedClient()
    engine = Engine(runtime(client, recorder=BrokenLedger()))
    with pytest.raises(LedgerError, match="locked"):
        await asyncio.wait_for(engine.run([WorkflowJob.of("wf", workflow(agent("a")))]), 2)
    assert client.calls == []


async def test_a_client_bug_fails_the_agent_and_holds_no_budget_or_slot() -> None:
    """An unexpected exception from a client is a FAILED agent; its reservation and its
    rate-limit slot are given back, so nothing else waits for them."""
    from decimal import Decimal

    from aoe.clock import SystemClock
    from aoe.cost.book import RunBudgets
    from aoe.ratelimit import RateLimiter
    from aoe.spec.models import LimitsSpec

    class Prices:
        def cost_usd(self, model, usage):  # type: ignore[no-untyped-def]
            return Decimal("0.01")

        def max_cost_usd(self, model, input_tokens, max_output_tokens):  # type: ignore[no-untyped-def]
            return Decimal("0.01")

    limiter = RateLimiter(LimitsSpec(concurrent_requests=1), clock=SystemClock(), name="k")

    class Limits:
        def for_model(self, provider: str, model: str) -> RateLimiter:
            return limiter

    budgets = RunBudgets(Decimal("0.05"))
    spec = workflow(agent("a"), agent("b"), agent("c"), allow_partial_completion=True,
                    max_failure_rate=0.5)
    client = ScriptedClient(script={"a": [ValueError("boom")]})
    result = await asyncio.wait_for(
        run(spec, client, budgets=budgets, prices=Prices(), limiters=Limits()), 5
    )
    agents = result.workflows[0].agents
    assert agents["a"].state is AgentState.FAILED
    assert "ValueError: boom" in (agents["a"].error or "")
    assert agents["b"].state is agents["c"].state is AgentState.COMPLETED
    run_budget = budgets.state("run")
    assert run_budget.reserved_usd == 0
    assert run_budget.unconfirmed_usd == Decimal("0.01")
    assert limiter.stats().in_flight == 0


# -- the run's exit code: the worst workflow outcome -----------------------------------------

# DESIGN.md section 1: exit codes of the outcomes a workflow can reach, and (results.SEVERITY)
# which outcome is worse, worst first. Written out here so the test does not trust the code.
EXIT_CODE = {
    WorkflowState.COMPLETED: 0,
    WorkflowState.FAILED: 1,
    WorkflowState.BUDGET_EXCEEDED: 3,
    WorkflowState.PARTIALLY_COMPLETED: 4,
    WorkflowState.CANCELLED: 130,
}
WORST_FIRST = [
    WorkflowState.CANCELLED,
    WorkflowState.FAILED,
    WorkflowState.BUDGET_EXCEEDED,
    WorkflowState.PARTIALLY_COMPLETED,
    WorkflowState.COMPLETED,
]


def _ending(outcome: WorkflowState, name: str) -> WorkflowSpec:
    """A workflow that reaches ``outcome`` in the scripts of ``_outcome_client``."""
    if outcome is WorkflowState.PARTIALLY_COMPLETED:
        return workflow(
            agent("flaky"),
            agent("fine"),
            allow_partial_completion=True,
            max_failure_rate=0.5,
            name=name,
        )
    if outcome is WorkflowState.FAILED:
        return workflow(agent("broken"), name=name)
    if outcome is WorkflowState.BUDGET_EXCEEDED:  # a cent per call, a tenth of a cent budget
        return workflow(agent("fine"), budget_usd=Decimal("0.001"), name=name)
    if outcome is WorkflowState.CANCELLED:  # still running when the run is cancelled
        return workflow(agent("endless"), name=name)
    return workflow(agent("fine"), name=name)


def _outcome_client() -> ScriptedClient:
    return ScriptedClient(
        script={
            "flaky": [ServerError("boom", provider="script", status=500)] * 2,
            "broken": [AuthenticationError("bad key", provider="script", status=401)] * 2,
        },
        latency_s={"fine": 1.0, "flaky": 1.0, "broken": 1.0, "endless": 1000.0},
    )


@pytest.mark.parametrize("second", list(EXIT_CODE), ids=str)
@pytest.mark.parametrize("first", list(EXIT_CODE), ids=str)
async def test_the_run_exits_with_the_code_of_its_worst_workflow(
    first: WorkflowState, second: WorkflowState
) -> None:
    """Two workflows in one run, every pair of outcomes: the exit code is the worst one's
    (interrupted 130 > failed 1 > budget 3 > partial 4 > completed 0)."""
    client = _outcome_client()
    rt = runtime(client, budgets=RunBudgets(), prices=FlatPrices("0.01"))
    engine = Engine(rt)
    jobs = [
        WorkflowJob.of("first", _ending(first, "first")),
        WorkflowJob.of("second", _ending(second, "second")),
    ]
    running = asyncio.create_task(engine.run(jobs))
    if WorkflowState.CANCELLED in (first, second):
        await client.clock.sleep(50)  # every other workflow has ended by now
        engine.cancel()
    result = await asyncio.wait_for(running, 2)
    assert [w.state for w in result.workflows] == [first, second]
    worst = min(first, second, key=WORST_FIRST.index)
    assert result.state is worst
    assert result.exit_code == EXIT_CODE[worst]


# -- skipping downstream of a failure ---------------------------------------------------------


async def test_everything_downstream_of_a_failure_is_skipped_naming_it() -> None:
    """a -> b -> c -> d, a fails for good: b, c and d are SKIPPED, each with a reason naming
    a and an AgentSkipped event, none of them called; the side branch runs to completion."""
    spec = workflow(
        agent("a"),
        agent("b", "a"),
        agent("c", "b"),
        agent("d", "c"),
        agent("side"),
        agent("side_next", "side"),
        allow_partial_completion=True,
        max_failure_rate=0.7,
    )
    client = ScriptedClient(
        script={"a": [AuthenticationError("bad key", provider="script", status=401)]},
        latency_s={"side": 1.0, "side_next": 1.0},  # still running when a fails
    )
    engine = Engine(runtime(client))
    skipped: list[AgentSkipped] = []

    class Watch:
        def handle(self, event: object) -> None:
            if isinstance(event, AgentSkipped):
                skipped.append(event)

    engine.rt.events.subscribe(Watch())
    result = await engine.run([WorkflowJob.of("wf", spec)])
    wf = result.workflows[0]
    for downstream in "bcd":
        assert wf.agents[downstream].state is AgentState.SKIPPED
        assert wf.agents[downstream].error == "needs 'a', which ended FAILED"
    assert sorted((e.agent, e.reason) for e in skipped) == [
        (x, "needs 'a', which ended FAILED") for x in "bcd"
    ]
    assert client.order() == ["a", "side", "side_next"]
    assert wf.agents["side"].state is wf.agents["side_next"].state is AgentState.COMPLETED
    assert wf.state is WorkflowState.PARTIALLY_COMPLETED
    assert result.exit_code == 4
