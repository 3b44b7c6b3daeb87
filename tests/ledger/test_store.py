"""The ledger store: round trips, exact money, reports, resume, errors, non-blocking writes."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.cost.money import format_usd
from aoe.errors import LedgerError, UsageError
from aoe.ledger import Ledger, default_db_path
from aoe.ledger.store import Target
from ledger.factory import (
    attempt_end,
    attempt_start,
    call,
    call_start,
    run_start,
    workflow_start,
)


@pytest.fixture
async def ledger(db: Target) -> AsyncIterator[Ledger]:
    led = Ledger.open(db)
    yield led
    await led.aclose()


async def test_round_trip_of_a_run(ledger: Ledger) -> None:
    """`aoe show` gives back exactly what the pipeline recorded: calls, attempts, outputs."""
    await ledger.start_run(run_start())
    await ledger.start_workflow(workflow_start())
    await ledger.start_attempt(attempt_start())
    first = call(
        cost="0.0000123",
        cost_confirmed=False,
        status="ProviderTimeout",
        tool_calls=({"name": "lookup_vendor", "arguments": {"name": "ACME"}},),
    )
    await ledger.record_call(first)
    await ledger.finish_attempt(attempt_end(state="FAILED", error="timed out"))
    await ledger.start_attempt(attempt_start(attempt=2))
    second = call(attempt=2, cost="0.0002", input_tokens=500, cache_read_tokens=128)
    await ledger.record_call(second)
    await ledger.finish_attempt(attempt_end(attempt=2, output={"vendor": "ACME", "total": 12}))
    await ledger.finish_workflow("run-1", "invoice", "COMPLETED", time.time())
    await ledger.finish_run("run-1", "COMPLETED", time.time())

    detail = ledger.get_run("run-1")
    assert detail.run.state == "COMPLETED"
    assert detail.run.budget_usd == Decimal("1.25")
    assert detail.run.agents_completed == 1
    assert detail.run.agents_failed == 0
    (wf,) = detail.workflows
    assert wf.inputs == {"invoice_text": "ACME 12 USD"}
    (agent,) = wf.agents
    assert agent.calls == (first, second)
    assert [(a.attempt, a.state, a.error) for a in agent.attempts] == [
        (1, "FAILED", "timed out"),
        (2, "COMPLETED", None),
    ]
    assert agent.output == {"vendor": "ACME", "total": 12}
    assert agent.cost_usd == Decimal("0.0002123") == detail.run.cost_usd
    assert detail.run.unconfirmed_usd == Decimal("0.0000123")
    assert agent.module == "accounts_payable"


async def test_money_sums_are_exact(ledger: Ledger) -> None:
    """Report totals equal the exact Decimal sum of the calls, with no float drift."""
    rng = random.Random(7)
    await ledger.start_run(run_start())
    costs = []
    for i in range(2000):
        cost = Decimal(rng.randrange(1, 10**9)).scaleb(-12)  # down to pico-dollars
        costs.append(cost)
        key = f"invoice#{i % 3}"
        if i < 3:
            await ledger.start_workflow(workflow_start(key=key))
        await ledger.record_call(
            call(
                key=key, agent=f"a{i % 7}", cost=cost, cost_confirmed=i % 5 != 0, model=f"m{i % 2}"
            )
        )
    exact = sum(costs, Decimal(0))
    for by in ("workflow", "agent", "module", "model", "day"):
        report = ledger.cost_report(by)  # type: ignore[arg-type]
        assert report.total.cost_usd == exact
        assert sum((r.cost_usd for r in report.rows), Decimal(0)) == exact
        assert sum(r.calls for r in report.rows) == report.total.calls == 2000
    unconfirmed = sum((c for i, c in enumerate(costs) if i % 5 == 0), Decimal(0))
    assert ledger.cost_report("model").total.unconfirmed_usd == unconfirmed
    assert ledger.list_runs()[0].cost_usd == exact


async def test_cost_report_groups_and_filters(ledger: Ledger) -> None:
    """--by groups as named, --run and --since/--until select the calls counted."""
    day1 = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    day2 = datetime(2024, 5, 2, 12, tzinfo=UTC).timestamp()
    for run_id, at in (("run-a", day1), ("run-b", day2)):
        await ledger.start_run(run_start(run_id, started_at=at))
        await ledger.start_workflow(workflow_start(run_id, key="invoice#1"))
        await ledger.start_attempt(attempt_start(run_id, key="invoice#1", module="ap"))
        await ledger.record_call(call(run_id, key="invoice#1", started_at=at, cost="0.01"))
        await ledger.start_attempt(
            attempt_start(
                run_id, key="invoice#1", agent="route", module=None, model="anthropic/claude"
            )
        )
        await ledger.record_call(
            call(
                run_id,
                key="invoice#1",
                agent="route",
                started_at=at,
                provider="anthropic",
                model="claude",
                cost="0.03",
            )
        )
    by_agent = ledger.cost_report("agent")
    assert [r.keys for r in by_agent.rows] == [("invoice", "route"), ("invoice", "extract")]
    assert by_agent.key_names == ("workflow", "agent")
    by_module = ledger.cost_report("module")
    assert {r.keys: r.cost_usd for r in by_module.rows} == {
        ("",): Decimal("0.06"),
        ("ap",): Decimal("0.02"),
    }
    by_model = ledger.cost_report("model", run_id="run-b")
    assert by_model.total.cost_usd == Decimal("0.04")
    assert by_model.rows[0].keys == ("anthropic", "claude")
    by_day = ledger.cost_report("day")
    assert [r.keys for r in by_day.rows] == [("2024-05-01",), ("2024-05-02",)]
    window = ledger.cost_report("day", since=datetime(2024, 5, 2, tzinfo=UTC))
    assert window.total.cost_usd == Decimal("0.04")
    assert window.rows[0].keys == ("2024-05-02",)
    before = ledger.cost_report("workflow", until=datetime(2024, 5, 2, tzinfo=UTC))
    assert before.total.cost_usd == Decimal("0.04")
    assert before.total.calls == 2


async def test_unknown_and_ambiguous_run_ids_are_usage_errors(ledger: Ledger) -> None:
    """`aoe show` with a wrong id exits 2 and points at `aoe runs`; a unique prefix works."""
    await ledger.start_run(run_start("20240501-aaaa"))
    await ledger.start_run(run_start("20240501-aabb"))
    assert ledger.get_run("20240501-aab").run.run_id == "20240501-aabb"
    with pytest.raises(UsageError) as unknown:
        ledger.get_run("nope")
    assert unknown.value.exit_code == 2
    assert "aoe runs" in (unknown.value.hint or "")
    with pytest.raises(UsageError, match="ambiguous"):
        ledger.get_run("20240501-aa")
    with pytest.raises(UsageError):
        ledger.cost_report("workflow", run_id="nope")


async def test_resume_state(ledger: Ledger) -> None:
    """--resume gets completed outputs, spend incl. unconfirmed, and fresh attempt numbers."""
    await ledger.start_run(run_start())
    await ledger.start_workflow(workflow_start())
    await ledger.start_attempt(attempt_start())
    await ledger.record_call(call(cost="0.01"))
    await ledger.finish_attempt(attempt_end(output="plain text answer"))
    for n in (1, 2):
        await ledger.start_attempt(attempt_start(agent="check", attempt=n))
        await ledger.record_call(call(agent="check", attempt=n, cost="0.02", cost_confirmed=False))
    await ledger.finish_attempt(attempt_end(agent="check", state="FAILED", error="500"))
    await ledger.finish_attempt(attempt_end(agent="skipped_one", state="SKIPPED"))

    state = ledger.resume_state("run-1")
    assert state.state == "RUNNING"  # this process still owns it
    wf = state.workflows["invoice"]
    assert wf.completed == {"extract": "plain text answer"}
    assert wf.spent_usd == Decimal("0.05") == state.spent_usd
    assert wf.agent_spent_usd == {"extract": Decimal("0.01"), "check": Decimal("0.04")}
    assert wf.next_attempt == {"extract": 2, "check": 3, "skipped_one": 2}
    assert wf.inputs == {"invoice_text": "ACME 12 USD"}
    assert ledger.get_run("run-1").workflows[0].agents[1].attempts[1].state == "RUNNING"

    await ledger.finish_run("run-1", "FAILED", time.time())
    await ledger.start_run(run_start(budget_usd=Decimal("2")))  # resuming reopens the run
    reopened = ledger.list_runs()[0]
    assert (reopened.state, reopened.ended_at, reopened.budget_usd) == (
        "RUNNING",
        None,
        Decimal("2"),
    )


async def test_writes_do_not_block_the_event_loop(tmp_path: Path) -> None:
    """A run's other tasks keep running while 2,500 calls are recorded (a start and an end
    each), even under a lock."""
    path = tmp_path / "aoe.db"
    ledger = Ledger.open(path)
    await ledger.start_run(run_start())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a while
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    async def record_many() -> None:
        for i in range(2500):  # a call's start is waited for, its end is queued
            await ledger.start_call(call_start(turn=i))
            await ledger.record_call(call(turn=i))
        await ledger.flush()

    ticking = asyncio.create_task(ticker())
    recording = asyncio.create_task(record_many())
    await asyncio.sleep(0.3)
    assert not recording.done()  # waiting for the lock, in the writer thread
    ticked_while_locked = len(ticks)
    blocker.execute("COMMIT")
    blocker.close()
    await recording
    stop.set()
    await ticking
    assert ticked_while_locked > 50
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.1
    assert ledger.cost_report("workflow").total.calls == 2500
    await ledger.aclose()


async def test_one_bad_awaited_write_fails_alone(ledger: Ledger) -> None:
    """A write that is waited for and cannot be made (a duplicate run id would not do: it
    reopens) is a LedgerError for that write only; the others of its batch are committed."""
    await ledger.start_run(run_start())
    results = await asyncio.gather(
        ledger.start_call(call_start(turn=1)),
        ledger.start_call(call_start(turn=2, reserved="NaN")),  # no money is NaN
        ledger.start_call(call_start(turn=3)),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], LedgerError)
    assert "cannot record CallStart" in results[1].message
    assert results[2] is None
    await ledger.finish_run("run-1", "COMPLETED", time.time())  # the ledger goes on
    assert ledger.cost_report("agent").total.calls == 2


async def test_a_queued_write_that_fails_stops_the_ledger(ledger: Ledger) -> None:
    """A queued write (nobody waits for it) that cannot be made is never lost silently: it
    and every write after it fail, nothing after it is committed (so no later commit can
    claim the writes before it are recorded), and the next write or flush raises it."""
    await ledger.start_run(run_start())
    await ledger.start_attempt(attempt_start())
    await ledger.record_call(call())
    await ledger.finish_attempt(attempt_end(output={(1, 2): "tuple keys are not JSON"}))
    await ledger.record_call(call(turn=2))  # after the bad one: never committed
    with pytest.raises(LedgerError) as failed:
        await ledger.flush()
    assert "cannot record AttemptEnd" in failed.value.message
    assert "nothing after it is recorded" in failed.value.message
    assert "JSON" in (failed.value.hint or "")
    with pytest.raises(LedgerError):
        await ledger.start_call(call_start(turn=3))
    with pytest.raises(LedgerError):
        await ledger.record_call(call(turn=4))
    assert ledger.cost_report("agent").total.calls == 1  # the call before the bad write


async def test_cancelled_caller_still_records(ledger: Ledger) -> None:
    """A call start whose awaiting agent is cancelled is still recorded: nothing is lost."""
    await ledger.start_run(run_start())
    task = asyncio.create_task(ledger.start_call(call_start()))
    await asyncio.sleep(0)
    task.cancel()
    await ledger.start_call(call_start(turn=2))  # FIFO: the first is committed before this
    assert ledger.cost_report("workflow").total.calls == 2


def test_not_a_database_is_a_ledger_error(tmp_path: Path) -> None:
    """A --db that points at some other file fails with the path and a hint, not a crash."""
    path = tmp_path / "notes.txt"
    path.write_text("this is not sqlite\n" * 100)
    with pytest.raises(LedgerError) as err:
        Ledger.open(path)
    assert err.value.where == str(path)
    assert "--db" in (err.value.hint or "")


def test_default_db_path(tmp_path: Path) -> None:
    """AOE_DB wins; otherwise the ledger lives in .aoe/aoe.db under the working directory."""
    assert default_db_path({"AOE_DB": "/x/y.db"}, tmp_path) == Path("/x/y.db")
    assert default_db_path({}, tmp_path) == tmp_path / ".aoe" / "aoe.db"


def test_money_is_shown_with_four_to_six_decimals() -> None:
    """Tables show `$0.0123`, and tiny costs keep their significant digits."""
    assert format_usd(Decimal("0.0123")) == "$0.0123"
    assert format_usd(Decimal("0.00001234")) == "$0.000012"
    assert format_usd(Decimal("2")) == "$2.0000"
