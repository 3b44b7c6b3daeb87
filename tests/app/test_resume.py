"""--resume after a crash: calls lost in flight count against every budget, and are told."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.app.prepare import RunOptions, prepare
from aoe.app.run import RunHandle
from aoe.cli.main import main
from aoe.clock import FakeClock
from aoe.engine.results import AgentState
from aoe.errors import RunLeaseHeldError, RunLeaseLostError
from aoe.ledger import (
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    Ledger,
    RunStart,
    WorkflowStart,
)
from aoe.ledger.lease import HEARTBEAT_S

A_COST = Decimal("0.05")
LOST = Decimal("0.30")


def _workflow(tmp: Path, *, budget: str = "", b_limit: str = "") -> Path:
    path = tmp / "close.yaml"
    path.write_text(
        "version: 1\nname: close\n"
        + (f"budget_usd: {budget}\n" if budget else "")
        + "defaults: {model: openai/gpt-4o-mini, max_tokens: 50}\n"
        "agents:\n"
        "  a: {prompt: accrue, simulate: {latency_s: 0.5}}\n"
        "  b:\n    needs: [a]\n    prompt: reconcile\n    simulate: {latency_s: 0.5}\n"
        + (f"    cost_limit_usd: {b_limit}\n" if b_limit else "")
    )
    return path


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


async def _crashed_run(db: Path, wf: Path, budget: Decimal | None = None) -> None:
    """What a run SIGKILLed while ``b``'s call was in flight leaves in the ledger."""
    now = time.time()
    async with Ledger.open(db) as ledger:
        await ledger.start_run(RunStart("run-1", now, "aoe run", (str(wf),), True, budget))
        await ledger.start_workflow(WorkflowStart("run-1", "close", "close", str(wf)))
        model = "openai/gpt-4o-mini"
        await ledger.start_attempt(AttemptStart("run-1", "close", "a", 1, None, model, now))
        await ledger.record_call(
            CallRecord(
                "run-1",
                "close",
                "a",
                1,
                1,
                "sim",
                "gpt-4o-mini",
                10,
                5,
                0,
                0,
                0,
                A_COST,
                True,
                now,
                now + 0.5,
                "ok",
            )
        )
        await ledger.finish_attempt(
            AttemptEnd("run-1", "close", "a", 1, "COMPLETED", now, None, "x")
        )
        await ledger.start_attempt(AttemptStart("run-1", "close", "b", 1, None, model, now))
        await ledger.start_call(
            CallStart("run-1", "close", "b", 1, 1, "sim", "gpt-4o-mini", LOST, 900, now + 1)
        )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET pid = ?", (_dead_pid(),))


async def test_resume_counts_the_lost_call_and_says_so(tmp_path: Path) -> None:
    """The call in flight at the crash stays spent at its reservation in the run's, the
    workflow's and the agent's spend; the warning says how many calls, what they cost and
    which agents run again; only those run, and the lost cost is still in the ledger."""
    db, wf = tmp_path / "aoe.db", _workflow(tmp_path)
    await _crashed_run(db, wf)
    prepared = prepare(RunOptions(resume="run-1", db_path=db))
    assert prepared.warnings[0] == (
        "1 call was in flight when run run-1 stopped: its cost stays counted as unconfirmed "
        "($0.3000) and agent b runs again"
    )
    assert prepared.spent == {
        "run": A_COST + LOST,
        "close": A_COST + LOST,
        "close/a": A_COST,
        "close/b": LOST,
    }
    result = await RunHandle(prepared, clock=FakeClock(autojump=True)).execute()
    assert result.exit_code == 0
    agents = result.workflows[0].agents
    assert agents["a"].resumed
    assert [t.attempt for t in agents["b"].attempts] == [2]
    async with Ledger.open(db) as ledger:
        run = ledger.get_run("run-1").run
        assert run.unconfirmed_usd == LOST
        assert run.cost_usd == A_COST + LOST + agents["b"].cost_usd
        assert ledger.lease_holder("run-1") is None  # released at the end


@pytest.mark.parametrize(
    ("scope", "budget", "b_limit", "run_budget"),
    [
        ("run", "", "", Decimal("0.35")),
        ("workflow", "0.35", "", None),
        ("agent", "", "0.30", None),
    ],
)
async def test_a_lost_call_counts_against_every_budget_it_was_under(
    tmp_path: Path, scope: str, budget: str, b_limit: str, run_budget: Decimal | None
) -> None:
    """A budget that the lost call's reservation fills up stops the resumed agent: the
    money that may have been billed is not spent a second time."""
    db, wf = tmp_path / "aoe.db", _workflow(tmp_path, budget=budget, b_limit=b_limit)
    await _crashed_run(db, wf, run_budget)
    prepared = prepare(RunOptions(resume="run-1", db_path=db))
    result = await RunHandle(prepared, clock=FakeClock(autojump=True)).execute()
    b = result.workflows[0].agents["b"]
    assert b.state is AgentState.BUDGET_EXCEEDED, scope
    assert result.exit_code == 3
    assert b.cost_usd == 0


async def test_a_resume_while_the_run_runs_is_refused_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aoe run --resume R` while another process holds R's lease: exit 2 at once, naming
    the holder; nothing is written, and the holder keeps its lease."""
    db, wf = tmp_path / "aoe.db", _workflow(tmp_path)
    await _crashed_run(db, wf)
    with Ledger.open(db) as other:
        holder = other.take_lease_now("run-1")
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT COUNT(*), SUM(cost_pusd) FROM calls").fetchone()
    with pytest.raises(RunLeaseHeldError):
        prepare(RunOptions(resume="run-1", db_path=db))
    assert main(["run", "--resume", "run-1", "--db", str(db), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert f"error: run run-1: run run-1 is already being run by pid {os.getpid()}" in err
    assert socket.gethostname() in err
    assert f"expires {3 * HEARTBEAT_S:g} s after its last heartbeat" in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(cost_pusd) FROM calls").fetchone() == before
    with Ledger.open(db) as ledger:
        assert ledger.lease_holder("run-1") == holder


def test_the_cli_default_heartbeat_is_the_ledgers() -> None:
    """`aoe run` renews its lease as often as the ledger's documented default."""

    from aoe.cli.run_cmd import run

    default = inspect.signature(run).parameters["lease_heartbeat"].default
    assert default == HEARTBEAT_S


async def test_a_run_whose_lease_is_taken_over_stops_and_records_nothing_more(
    tmp_path: Path,
) -> None:
    """If another process takes the run over while this one runs (this one was paused past
    its window), its next heartbeat stops it at once with RunLeaseLostError, even in the
    middle of an hour-long call, and from then on it records nothing: not even its end."""
    wf = tmp_path / "slow.yaml"
    wf.write_text(
        "version: 1\nname: slow\ndefaults: {model: openai/gpt-4o-mini, max_tokens: 50}\n"
        "agents:\n  s0: {prompt: go, timeout_s: 3600, simulate: {latency_s: 3000}}\n"
        "  s1: {prompt: next, needs: [s0]}\n"
    )
    db = tmp_path / "aoe.db"
    # time moves only when the test says: the ledger's writes are real I/O, and a clock
    # that jumped over them would jump the hour-long call's deadline too
    clock = FakeClock()
    prepared = prepare(RunOptions(files=(wf,), simulate=True, db_path=db))
    running = asyncio.create_task(RunHandle(prepared, clock=clock).execute())
    # the ledger's writer thread commits the lease and the call: no event to await
    while not _query(db, "SELECT 1 FROM calls"):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    ((run_id,),) = _query(db, "SELECT run_id FROM leases")
    with sqlite3.connect(db) as conn:  # another process takes it over
        conn.execute("UPDATE leases SET token = 'thief', pid = 1, host = 'elsewhere'")
    await clock.advance(HEARTBEAT_S)  # the next heartbeat
    with pytest.raises(RunLeaseLostError) as lost:
        await asyncio.wait_for(running, 10)
    assert "pid 1 on elsewhere holds it now" in lost.value.message
    assert lost.value.exit_code == 1
    assert clock.now() == HEARTBEAT_S  # stopped by that heartbeat, mid-call
    assert _query(db, "SELECT status, ended_at FROM calls") == [("started", None)]
    assert _query(db, "SELECT state, ended_at FROM runs") == [("RUNNING", None)]
    assert _query(db, "SELECT token FROM leases WHERE run_id = '" + run_id + "'") == [("thief",)]


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
