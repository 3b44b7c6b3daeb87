"""One provider call: what its budget hold and its rate-limit permit become when it fails."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.clock import FakeClock
from aoe.cost.book import RunBudgets
from aoe.cost.tokens import estimate_request
from aoe.engine.results import AgentState, RunResult, WorkflowState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, WorkflowJob
from aoe.errors import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimitedError,
)
from aoe.graph import WorkflowGraph
from aoe.ledger.records import CallRecord
from aoe.monitor.events import Event, EventBus, RateLimitHit
from aoe.providers.base import CompletionRequest, ModelInfo, Usage
from aoe.ratelimit import RateLimiter, Reservation, TierStats
from aoe.spec.models import LimitsSpec, ModelRef, RetrySpec, WorkflowSpec, fingerprints
from tests.engine.scripted import (
    CallLog,
    FlatPrices,
    OneClient,
    OneLimiter,
    ScriptedClient,
    agent,
    workflow,
)

CENT = Decimal("0.01")
RETRY = RetrySpec(max_retries=3, strategy="constant", base_delay_s=1, jitter=False)


def _runtime(client: ScriptedClient, limiter: RateLimiter, **kw: object) -> Runtime:
    return Runtime(
        clients=OneClient(client),
        clock=client.clock,
        limiters=OneLimiter(limiter),
        prices=FlatPrices(CENT),
        **kw,  # type: ignore[arg-type]
    )


def _one_slot(clock: FakeClock) -> RateLimiter:
    return RateLimiter(LimitsSpec(concurrent_requests=1), clock=clock, name="key")


def _hog_and_waiter() -> WorkflowSpec:
    """``hog`` takes the only slot for 10 s; ``waiter`` queues behind it."""
    return workflow(
        agent("hog", priority=9),
        agent("waiter", priority=1),
        allow_partial_completion=True,
        max_failure_rate=0.5,
    )


async def _later_call_fits(budgets: RunBudgets, clock: FakeClock) -> RunResult:
    """A second run on the same budget book: one more call of a cent."""
    client = ScriptedClient(clock=clock)
    rt = _runtime(client, _one_slot(clock), budgets=budgets)
    spec = workflow(agent("later"), name="later")
    return await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("later", spec)]), 2)


async def test_a_rate_limit_wait_that_times_out_holds_no_budget() -> None:
    """A call that gave up waiting for a rate-limit slot never held money (the permit comes
    before the reservation), so what it never spent stays available to later calls."""
    client = ScriptedClient(latency_s={"hog": 10.0})
    budgets = RunBudgets(Decimal("0.02"))  # the hog's cent and one more
    rt = _runtime(client, _one_slot(client.clock), budgets=budgets, rate_limit_timeout_s=1.0)
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", _hog_and_waiter())]), 2)
    agents = result.workflows[0].agents
    assert agents["hog"].state is AgentState.COMPLETED
    assert agents["waiter"].state is AgentState.RATE_LIMITED
    assert "rate limits" in (agents["waiter"].error or "")
    assert client.order() == ["hog"]  # the waiter never called
    assert all(s.reserved_usd == 0 for s in budgets.states())
    assert budgets.state("run").spent_usd == CENT
    later = await _later_call_fits(budgets, client.clock)
    assert later.workflows[0].agents["later"].state is AgentState.COMPLETED
    assert budgets.state("run").spent_usd == 2 * CENT


async def test_a_rate_limit_wait_cut_short_by_cancel_holds_no_budget() -> None:
    """Ctrl-C while a call waits for a rate-limit slot: it held no money while it waited;
    only the call in flight keeps its reservation (as unconfirmed spend: it may be billed)."""
    client = ScriptedClient(latency_s={"hog": 10.0})
    budgets = RunBudgets(Decimal("0.02"))
    rt = _runtime(client, _one_slot(client.clock), budgets=budgets)
    engine = Engine(rt)
    running = asyncio.create_task(engine.run([WorkflowJob.of("wf", _hog_and_waiter())]))
    await client.clock.sleep(1.0)
    assert budgets.state("run").reserved_usd == CENT  # the hog's; the waiter holds nothing
    engine.cancel()
    result = await asyncio.wait_for(running, 2)
    assert result.exit_code == 130
    assert {a.state for a in result.workflows[0].agents.values()} == {AgentState.CANCELLED}
    assert all(s.reserved_usd == 0 for s in budgets.states())
    run = budgets.state("run")
    assert (run.spent_usd, run.unconfirmed_usd) == (0, CENT)  # the hog's call, in flight
    later = await _later_call_fits(budgets, client.clock)
    assert later.workflows[0].state is WorkflowState.COMPLETED


def _tiers(limiter: RateLimiter) -> dict[str, int]:
    tiers: tuple[TierStats, ...] = limiter.stats().tiers
    return {t.name: t.used for t in tiers}


@pytest.mark.parametrize(
    ("error", "tokens_kept"),
    [
        pytest.param(
            ProviderTimeout("no answer in 60 s", provider="script", outcome_unknown=True),
            True,
            id="timeout-after-sending",
        ),
        pytest.param(
            ProviderConnectionError("connection broke", provider="script", outcome_unknown=True),
            True,
            id="connection-cut-after-sending",
        ),
        pytest.param(
            ProviderConnectionError("cannot connect", provider="script", outcome_unknown=False),
            False,
            id="connection-refused",
        ),
    ],
)
async def test_tokens_of_a_call_of_unknown_outcome_stay_taken(
    error: ProviderError, tokens_kept: bool
) -> None:
    """A call that may have reached the provider keeps its tokens in the per-minute window
    (the provider may have counted them); one that surely never left gives them back."""
    client = ScriptedClient(script={"a": [error]})
    limits = LimitsSpec(requests_per_minute=100, tokens_per_minute=100_000, concurrent_requests=4)
    limiter = RateLimiter(limits, clock=client.clock, name="key")
    log = CallLog()
    rt = _runtime(client, limiter, recorder=log)
    result = await Engine(rt).run([WorkflowJob.of("wf", workflow(agent("a")))])
    assert result.workflows[0].agents["a"].state is AgentState.FAILED
    (record,) = log.calls
    assert record.status == type(error).__name__
    assert record.cost_confirmed is not tokens_kept
    reserved = record.estimate_tokens or 0
    assert reserved > 0
    assert _tiers(limiter)["tokens_per_minute"] == (reserved if tokens_kept else 0)
    assert limiter.stats().in_flight == 0


async def test_tokens_of_a_call_cancelled_in_flight_stay_taken() -> None:
    """Ctrl-C during a call: the provider may still bill it, so its tokens stay counted."""
    client = ScriptedClient(latency_s={"a": 10.0})
    limits = LimitsSpec(tokens_per_minute=100_000)
    limiter = RateLimiter(limits, clock=client.clock, name="key")
    log = CallLog()
    engine = Engine(_runtime(client, limiter, recorder=log))
    running = asyncio.create_task(engine.run([WorkflowJob.of("wf", workflow(agent("a")))]))
    await client.clock.sleep(1.0)
    engine.cancel()
    result = await asyncio.wait_for(running, 2)
    assert result.exit_code == 130
    (record,) = log.calls
    assert record.status == "CancelledError"
    assert _tiers(limiter) == {"tokens_per_minute": record.estimate_tokens}
    assert limiter.stats().in_flight == 0


class _NoLimiterFor:
    """A limiter source that knows no key for the model (a plugin naming itself apart)."""

    def for_model(self, provider: str, model: str) -> RateLimiter:
        raise ConfigError(f"no provider {provider!r} is configured")

    def all_stats(self) -> tuple[()]:
        return ()


async def test_a_call_whose_limiter_cannot_be_found_holds_no_budget() -> None:
    """A config error finding the limiter fails the agent with nothing reserved; the run ends."""
    clock = FakeClock(autojump=True)
    client = ScriptedClient(clock=clock)
    budgets = RunBudgets(Decimal(1))
    rt = Runtime(
        clients=OneClient(client),
        clock=clock,
        limiters=_NoLimiterFor(),
        prices=FlatPrices(CENT),
        budgets=budgets,
    )
    spec = workflow(agent("a"), agent("b"), allow_partial_completion=True, max_failure_rate=1)
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    states = {a.state for a in result.workflows[0].agents.values()}
    assert states == {AgentState.FAILED}
    assert all(s.reserved_usd == 0 for s in budgets.states())
    assert client.calls == []


async def test_a_call_cancelled_in_flight_counts_its_unconfirmed_cost_in_the_results() -> None:
    """Ctrl-C mid-call: the summary, --json and events show the cost the ledger keeps."""
    clock = FakeClock(autojump=True)
    client = ScriptedClient(latency_s={"a": 10.0}, clock=clock)
    log = CallLog()
    engine = Engine(_runtime(client, _one_slot(clock), recorder=log))
    run = asyncio.create_task(engine.run([WorkflowJob.of("wf", workflow(agent("a")))]))
    await clock.sleep(1)
    engine.cancel()
    result = await asyncio.wait_for(run, 2)
    (call,) = log.calls
    assert (call.cost_usd, call.cost_confirmed) == (CENT, False)
    agent_result = result.workflows[0].agents["a"]
    assert agent_result.state is AgentState.CANCELLED
    assert agent_result.cost_usd == CENT
    assert result.cost_usd == CENT


class _SlowLog(CallLog):
    """A recorder whose call writes take a while (a busy disk, a remote database)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.finished_run_after: int | None = None

    async def record_call(self, record: CallRecord) -> None:
        await self.clock.sleep(0.5)
        await super().record_call(record)

    async def finish_run(self, run_id: str, state: str, ended_at: float) -> None:
        self.finished_run_after = len(self.calls)


async def test_a_second_cancel_does_not_lose_the_record_of_a_call_in_flight() -> None:
    """Ctrl-C twice: the call in flight is still recorded, before the run is closed."""
    clock = FakeClock(autojump=True)
    client = ScriptedClient(latency_s={"a": 10.0}, clock=clock)
    log = _SlowLog(clock)
    engine = Engine(_runtime(client, _one_slot(clock), recorder=log))
    run = asyncio.create_task(engine.run([WorkflowJob.of("wf", workflow(agent("a")))]))
    await clock.sleep(1)
    engine.cancel()
    await asyncio.sleep(0)
    engine.cancel()
    result = await asyncio.wait_for(run, 2)
    assert result.exit_code == 130
    assert [c.cost_confirmed for c in log.calls] == [False]
    assert log.finished_run_after == 1


def test_a_job_whose_graph_is_of_another_spec_is_refused() -> None:
    """A job built by hand with a graph or fingerprints of another file fails at once."""
    spec, other = workflow(agent("a")), workflow(agent("b"))
    with pytest.raises(ValueError, match="not of its spec"):
        WorkflowJob("wf", spec, WorkflowGraph.build(other), fingerprints(spec))
    with pytest.raises(ValueError, match="not of its spec"):
        WorkflowJob("wf", spec, WorkflowGraph.build(spec), fingerprints(other))


class _BillsPastTheBound(FlatPrices):
    """A provider that bills more than the bound aoe reserved (it should not, but may)."""

    def cost_usd(self, model: ModelRef, usage: Usage) -> Decimal:
        return self.per_call_usd * 3


async def test_a_provider_billing_past_a_budget_ends_the_run_with_exit_3() -> None:
    """Every agent completed, but the provider billed past the workflow's budget: the run
    never ends 0; it ends BUDGET_EXCEEDED naming the budget, the amount and the calls."""
    clock = FakeClock(autojump=True)
    client = ScriptedClient(clock=clock)
    budgets = RunBudgets(None)
    rt = Runtime(
        clients=OneClient(client), clock=clock, prices=_BillsPastTheBound(CENT), budgets=budgets
    )
    spec = workflow(agent("a"), agent("b", "a"), budget_usd=Decimal("0.025"))
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    flow = result.workflows[0]
    assert result.exit_code == 3
    assert flow.state is WorkflowState.BUDGET_EXCEEDED
    assert flow.reason is not None
    assert "budget workflow:wf ($0.0250) was passed by $0.0050" in flow.reason
    assert "wf/a#1" in flow.reason
    b = flow.agents["b"]
    assert b.state is AgentState.SKIPPED  # the workflow stopped starting agents at once
    assert b.error is not None
    assert "was passed by" in b.error


class _Events:
    """An event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> None:
        self.events.append(event)


async def test_a_429_is_published_and_teaches_the_limiter_before_the_permit_is_freed() -> None:
    """Each provider 429 is an event naming the provider, the model, what it limited and the
    wait it asked; the limiter hears of it while the call still counts as in flight."""
    refusal = RateLimitedError(
        "too many concurrent requests",
        provider="script",
        status=429,
        retry_after_s=1.0,
        concurrency=True,
    )
    client = ScriptedClient(script={"a": [refusal]}, latency_s={"b": 5.0, "c": 5.0})
    limiter = RateLimiter(LimitsSpec(), clock=client.clock, name="key")
    sink = _Events()
    rt = _runtime(client, limiter, events=EventBus([sink]))
    spec = workflow(agent("a", retry=RETRY), agent("b"), agent("c"))
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    assert result.exit_code == 0
    (hit,) = [e for e in sink.events if isinstance(e, RateLimitHit) and e.provider_429]
    assert (hit.agent, hit.provider, hit.model) == ("a", "script", "script/m")
    assert (hit.limited, hit.retry_after_s, hit.limiter) == ("concurrency", 1.0, "key")
    assert limiter.stats().learned_concurrency == 1  # half of the 3 that were in flight
    assert limiter.stats().rate_limited == 1


async def test_a_retry_after_past_the_cap_ends_the_agent_and_those_waiting_at_once() -> None:
    """A 429 asking for 300 s: the agent that got it and the two waiting for the key end
    RATE_LIMITED at once, each told when the key opens again; no time passes."""
    refusal = RateLimitedError("slow down", provider="script", status=429, retry_after_s=300)
    client = ScriptedClient(script={"first": [refusal]}, latency_s={"first": 1.0})
    rt = _runtime(client, _one_slot(client.clock))
    spec = workflow(
        agent("first", priority=9, retry=RETRY),
        agent("second", retry=RETRY),
        agent("third", retry=RETRY),
        allow_partial_completion=True,
        max_failure_rate=1,
    )
    result = await asyncio.wait_for(Engine(rt).run([WorkflowJob.of("wf", spec)]), 2)
    agents = result.workflows[0].agents
    assert {a.state for a in agents.values()} == {AgentState.RATE_LIMITED}
    for ended in agents.values():
        assert "opens again at 2026-01-01 00:05:01 UTC" in (ended.error or "")
        assert len(ended.attempts) == 1  # not retried: 300 s is past the retry cap
    assert client.order() == ["first"]
    assert client.clock.now() == pytest.approx(1.0)  # the one call's latency, nothing more


async def test_a_request_the_client_refused_as_configured_holds_and_costs_nothing() -> None:
    """A bad base_url (the client raises ConfigError before sending): the reservation and the
    permit come back whole and the call is recorded at no cost."""
    bad_url = ConfigError("provider 'script': cannot call 'ftp://x': bad URL")
    client = ScriptedClient(script={"a": [bad_url]})
    limiter = RateLimiter(
        LimitsSpec(requests_per_minute=10, tokens_per_minute=10_000), clock=client.clock, name="key"
    )
    budgets = RunBudgets(Decimal(1))
    log = CallLog()
    rt = _runtime(client, limiter, budgets=budgets, recorder=log)
    result = await Engine(rt).run([WorkflowJob.of("wf", workflow(agent("a")))])
    assert result.workflows[0].agents["a"].state is AgentState.FAILED
    run = budgets.state("run")
    assert (run.reserved_usd, run.spent_usd, run.unconfirmed_usd) == (0, 0, 0)
    (record,) = log.calls
    assert (record.status, record.cost_usd, record.cost_confirmed) == ("ConfigError", 0, True)
    assert _tiers(limiter) == {"requests_per_minute": 0, "tokens_per_minute": 0}


class _SlowSettle(RateLimiter):
    """A limiter whose settling takes a while (a limiter kept in Redis, far away)."""

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        await self._clock.sleep(1.0)
        await super().settle(reservation, actual_tokens)


async def test_a_cancel_while_an_answer_is_settled_waits_until_it_is_recorded() -> None:
    """Ctrl-C while an answered call is being settled: the settling is not cut short (the
    permit, the budget and the ledger all get the call's true cost), then the agent stops."""
    clock = FakeClock(autojump=True)
    client = ScriptedClient(latency_s={"a": 1.0}, clock=clock)
    log = CallLog()
    limiter = _SlowSettle(LimitsSpec(concurrent_requests=1), clock=clock, name="key")
    budgets = RunBudgets(Decimal(1))
    engine = Engine(_runtime(client, limiter, recorder=log, budgets=budgets))
    run = asyncio.create_task(engine.run([WorkflowJob.of("wf", workflow(agent("a")))]))
    await clock.sleep(1.5)  # the answer came at 1 s; its permit settles until 2 s
    assert client.calls
    assert not log.calls  # still settling
    engine.cancel()
    result = await asyncio.wait_for(run, 2)
    (call,) = log.calls
    assert (call.status, call.cost_usd, call.cost_confirmed) == ("ok", CENT, True)
    assert limiter.stats().in_flight == 0
    run_budget = budgets.state("run")
    assert (run_budget.reserved_usd, run_budget.spent_usd) == (0, CENT)
    assert result.exit_code == 130
    assert result.workflows[0].agents["a"].state is AgentState.CANCELLED


class _OwnApiClient(ScriptedClient):
    """A client at the model's own API: it has the model's tokenizer, as OpenAI's has."""

    def model_info(self, model: str) -> ModelInfo:
        return ModelInfo(provider=self.name, name=model, tokenizer="o200k_base")


@pytest.mark.parametrize("own_api", [True, False], ids=["own-api", "compatible-server"])
async def test_the_limiter_takes_the_exact_count_where_the_budget_made_one(
    own_api: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the model's own API the budget counts the prompt exactly, and the tokens-per-minute
    tier reserves that count too, not the byte estimate (about 1.5x for English text)
    that still holds behind any other endpoint."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    sent: list[CompletionRequest] = []
    client = (_OwnApiClient if own_api else ScriptedClient)(
        script={"a": [lambda request: sent.append(request) or "ok"]}, latency_s={"a": 10.0}
    )
    limiter = RateLimiter(LimitsSpec(tokens_per_minute=1_000_000), clock=client.clock, name="k")
    log = CallLog()
    prompt = "Match every invoice line against its purchase order and report the gaps. " * 20
    model = ModelRef("openai", "gpt-4o-mini")
    spec = workflow(replace(agent("a", prompt=prompt), model=model, max_tokens=50))
    running = asyncio.create_task(
        Engine(_runtime(client, limiter, recorder=log)).run([WorkflowJob.of("wf", spec)])
    )
    await client.clock.sleep(1.0)  # the call is out: its permit holds the reserved tokens
    held = _tiers(limiter)["tokens_per_minute"]
    result = await asyncio.wait_for(running, 2)
    assert result.exit_code == 0
    (request,) = sent
    assert request.messages[-1].content == prompt
    exact = estimate_request(model, request, exact=True).total_tokens
    estimated = estimate_request(model, request).total_tokens
    assert exact < estimated / 1.3  # the byte estimate is well above the real count
    assert held == (exact if own_api else estimated)
    assert log.calls[0].estimate_tokens == held
