"""A provider call is in the ledger, as started, before its request leaves; else it stays home."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

from aoe.clock import FakeClock
from aoe.cost.book import RunBudgets
from aoe.engine.results import AgentState
from aoe.engine.runtime import Runtime
from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob
from aoe.errors import LedgerError
from aoe.ledger import CallStart, Ledger
from aoe.providers.base import CompletionRequest
from aoe.providers.sim import SimulatorClient
from aoe.ratelimit import RateLimiter
from aoe.spec.models import LimitsSpec
from tests.engine.scripted import (
    CallLog,
    FlatPrices,
    OneClient,
    OneLimiter,
    ScriptedClient,
    workflow,
)
from tests.engine.scripted import agent as agent_spec

CENT = Decimal("0.01")


def _runtime(client: ScriptedClient, **kw: object) -> tuple[Runtime, RateLimiter]:
    limiter = RateLimiter(
        LimitsSpec(concurrent_requests=4, tokens_per_minute=100_000), clock=client.clock, name="k"
    )
    rt = Runtime(
        clients=OneClient(client),
        clock=client.clock,
        limiters=OneLimiter(limiter),
        prices=FlatPrices(CENT),
        **kw,  # type: ignore[arg-type]
    )
    return rt, limiter


async def test_the_ledger_holds_the_call_before_the_provider_sees_it(tmp_path: Path) -> None:
    """When the provider receives a request, its call is committed to the ledger as started,
    at its reservation, unconfirmed; when it answers, that same row holds the true cost."""
    db = tmp_path / "aoe.db"
    seen: list[tuple[object, ...]] = []

    def answer(request: CompletionRequest) -> str:
        with sqlite3.connect(db) as conn:  # another connection: what a new process would see
            seen.extend(
                conn.execute(
                    "SELECT agent_id, attempt, turn, status, cost_pusd, cost_confirmed,"
                    " ended_at IS NULL FROM calls"
                ).fetchall()
            )
        return "done"

    client = ScriptedClient(script={"a": [answer]})
    async with Ledger.open(db) as ledger:
        rt, _ = _runtime(client, recorder=ledger)
        engine = Engine(rt, EngineOptions(run_id="run-1"))
        result = await engine.run([WorkflowJob.of("wf", workflow(agent_spec("a")))])
        assert result.exit_code == 0
        assert seen == [("a", 1, 1, "started", 10**10, 0, 1)]
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT status, cost_pusd, cost_confirmed, ended_at IS NULL FROM calls"
            ).fetchall()
        assert rows == [("ok", 10**10, 1, 0)]


class _StartFails(CallLog):
    """A ledger that cannot record a call's start (full disk, lost lease)."""

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None:
        raise LedgerError("cannot write to the ledger: disk I/O error", hint="free some space")


async def test_a_call_whose_start_cannot_be_recorded_is_never_sent() -> None:
    """If the ledger cannot record a call as started, the request does not leave and
    nothing stays held: no budget, no rate-limit slot; the agent fails with the error."""
    client = ScriptedClient()
    budgets = RunBudgets(Decimal(1))
    rt, limiter = _runtime(client, recorder=_StartFails(), budgets=budgets)
    result = await Engine(rt).run([WorkflowJob.of("wf", workflow(agent_spec("a")))])
    a = result.workflows[0].agents["a"]
    assert a.state is AgentState.FAILED
    assert "disk I/O error" in (a.error or "")
    assert client.calls == []
    run = budgets.state("run")
    assert (run.reserved_usd, run.spent_usd, run.unconfirmed_usd) == (0, 0, 0)
    assert limiter.stats().in_flight == 0


class _SlowStart(CallLog):
    """A ledger whose commits wait (a busy disk): like the SQLite ledger, a start it was
    handed is written all the same when its caller stops waiting."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.started: list[CallStart] = []

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None:
        self.started.append(record)
        await self.clock.sleep(5.0)


async def test_a_call_cancelled_while_its_start_is_written_is_never_sent() -> None:
    """Ctrl-C while a call's start is being recorded: the request never leaves, its budget
    and slot are given back, and the started record is ended at $0 (nothing to pay)."""
    client = ScriptedClient()
    budgets = RunBudgets(Decimal(1))
    log = _SlowStart(client.clock)
    rt, limiter = _runtime(client, recorder=log, budgets=budgets)
    engine = Engine(rt)
    running = asyncio.create_task(engine.run([WorkflowJob.of("wf", workflow(agent_spec("a")))]))
    await client.clock.sleep(1.0)
    engine.cancel()
    result = await asyncio.wait_for(running, 2)
    assert result.exit_code == 130
    assert client.calls == []
    assert len(log.started) == 1
    (ended,) = log.calls
    assert (ended.status, ended.cost_usd, ended.cost_confirmed) == ("CancelledError", 0, True)
    assert (ended.attempt, ended.turn) == (log.started[0].attempt, log.started[0].turn)
    run = budgets.state("run")
    assert (run.reserved_usd, run.spent_usd, run.unconfirmed_usd) == (0, 0, 0)
    assert limiter.stats().in_flight == 0
    assert result.cost_usd == 0


class _Waits(CallLog):
    """A recorder that notes whether each call start was waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[bool] = []

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None:
        self.waited.append(wait)


class _Unpriced:
    """A price source that knows no price (a model missing from the price table)."""

    def cost_usd(self, model: object, usage: object) -> None:
        return None

    def max_cost_usd(self, model: object, input_tokens: int, max_output_tokens: int) -> None:
        return None


async def test_only_a_call_that_cannot_cost_money_goes_without_waiting_for_its_start() -> None:
    """A call with a price waits for its start record's commit, and so does one whose price
    is unknown (it may still be billed); one priced at zero, and the simulator's (which
    sends nothing), only queue theirs."""
    cases = {
        "priced": (ScriptedClient(), FlatPrices(CENT)),
        "unknown price": (ScriptedClient(), _Unpriced()),
        "priced at zero": (ScriptedClient(), FlatPrices(0)),
        "simulator": (SimulatorClient(clock=FakeClock(autojump=True)), FlatPrices(CENT)),
    }
    waited = {}
    for name, (client, prices) in cases.items():
        log = _Waits()
        rt = Runtime(clients=OneClient(client), recorder=log, prices=prices)  # type: ignore[arg-type]
        result = await Engine(rt).run([WorkflowJob.of("wf", workflow(agent_spec("a")))])
        assert result.exit_code == 0, name
        waited[name] = log.waited
    assert waited == {
        "priced": [True],
        "unknown price": [True],
        "priced at zero": [False],
        "simulator": [False],
    }
