"""A call is on record from before its request leaves: in flight, ended, or lost with its run."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from aoe.ledger import CallStart, Ledger
from aoe.ledger.records import CALL_INTERRUPTED, CALL_STARTED
from aoe.ledger.store import Target
from ledger.conftest import execute
from ledger.factory import attempt_start, call, run_start, workflow_start

RESERVED = Decimal("0.000750")


def _start(agent: str = "extract", attempt: int = 1, turn: int = 1) -> CallStart:
    return CallStart(
        "run-1",
        "invoice",
        agent,
        attempt,
        turn,
        "openai",
        "gpt-4o-mini",
        RESERVED,
        1300,
        time.time(),
    )


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _die(db: Target) -> None:
    """What a SIGKILL leaves: the run's process is gone, its rows stay as they were."""
    execute(db, "UPDATE runs SET pid = ?", (_dead_pid(),))


@pytest.fixture
async def ledger(db: Target) -> AsyncIterator[Ledger]:
    led = Ledger.open(db)
    led.target = db  # type: ignore[attr-defined]  # where the helpers below reach it
    await led.start_run(run_start())
    await led.start_workflow(workflow_start())
    await led.start_attempt(attempt_start())
    yield led
    await led.aclose()


def _target(ledger: Ledger) -> Target:
    return ledger.target  # type: ignore[attr-defined,no-any-return]


def _rows(ledger: Ledger) -> list[tuple[object, ...]]:
    return [
        tuple(int(v) if isinstance(v, bool) else v for v in row)
        for row in execute(
            _target(ledger),
            "SELECT id, status, cost_pusd, cost_confirmed, ended_at IS NULL, estimate_tokens"
            " FROM calls ORDER BY id",
        )
    ]


async def test_a_started_call_is_spent_at_its_reservation_until_it_ends(ledger: Ledger) -> None:
    """Once a call is recorded as started, show and cost-report count its reservation as
    unconfirmed and say it is in flight; its end completes that same row, at its true cost."""
    await ledger.start_call(_start())
    assert _rows(ledger) == [(1, CALL_STARTED, 750_000_000, 0, 1, 1300)]
    detail = ledger.get_run("run-1")
    assert detail.run.state == "RUNNING"
    assert (detail.run.cost_usd, detail.run.unconfirmed_usd) == (RESERVED, RESERVED)
    assert detail.run.in_flight_calls == 1
    (flying,) = detail.workflows[0].agents[0].calls
    assert (flying.status, flying.ended_at, flying.cost_confirmed) == (CALL_STARTED, None, False)
    total = ledger.cost_report("agent", run_id="run-1").total
    assert (total.calls, total.cost_usd, total.unconfirmed_usd) == (1, RESERVED, RESERVED)

    await ledger.record_call(call(cost="0.000123", started_at=flying.started_at))
    await ledger.flush()  # queued, then committed: now another process sees it
    assert _rows(ledger) == [(1, "ok", 123_000_000, 1, 0, 900)]
    detail = ledger.get_run("run-1")
    assert (detail.run.cost_usd, detail.run.unconfirmed_usd) == (Decimal("0.000123"), 0)
    assert detail.run.in_flight_calls == 0
    assert ledger.cost_report("agent", run_id="run-1").total.calls == 1


async def test_each_call_of_an_agent_completes_its_own_started_row(ledger: Ledger) -> None:
    """Turns and attempts of one agent each keep their own row; a call recorded without a
    start (an older writer) is added whole."""
    await ledger.start_call(_start(turn=1))
    await ledger.start_call(_start(turn=2))
    await ledger.record_call(call(turn=2, cost="0.0002"))
    await ledger.record_call(call(turn=3, cost="0.0003"))
    await ledger.record_call(call(turn=1, cost="0.0001"))
    await ledger.flush()  # another connection reads: what was queued must be committed
    rows = execute(_target(ledger), "SELECT id, turn, cost_pusd, status FROM calls ORDER BY id")
    assert rows == [
        (1, 1, 100_000_000, "ok"),
        (2, 2, 200_000_000, "ok"),
        (3, 3, 300_000_000, "ok"),
    ]


async def test_a_call_lost_with_its_process_counts_on_resume(ledger: Ledger) -> None:
    """A call in flight when the process died reads as interrupted, counts at its
    reservation in the run's, the workflow's and the agent's spend, and its agent is
    tried again under a new attempt number; the resume marks it and reports it once."""
    await ledger.record_call(call(agent="other", cost="0.0001"))
    await ledger.start_call(_start())
    _die(_target(ledger))

    state = ledger.resume_state("run-1")
    assert state.state == "INTERRUPTED"
    ((lost),) = state.lost_calls
    assert (lost.workflow_key, lost.agent_id, lost.attempt, lost.turn) == (
        "invoice",
        "extract",
        1,
        1,
    )
    assert lost.reserved_usd == RESERVED
    assert state.spent_usd == RESERVED + Decimal("0.0001")
    wf = state.workflows["invoice"]
    assert wf.spent_usd == RESERVED + Decimal("0.0001")
    assert wf.agent_spent_usd["extract"] == RESERVED
    assert "extract" not in wf.completed
    assert wf.next_attempt["extract"] == 2

    detail = ledger.get_run("run-1")
    assert detail.run.state == "INTERRUPTED"
    assert detail.run.in_flight_calls == 1
    assert detail.run.unconfirmed_usd == RESERVED
    extract = next(a for a in detail.workflows[0].agents if a.agent_id == "extract")
    assert [(c.status, c.ended_at) for c in extract.calls] == [(CALL_INTERRUPTED, None)]
    by_agent = {r.keys[1]: r for r in ledger.cost_report("agent", run_id="run-1").rows}
    assert by_agent["extract"].unconfirmed_usd == by_agent["extract"].cost_usd == RESERVED

    await ledger.start_run(run_start())  # --resume reopens the run
    assert [r[1] for r in _rows(ledger)] == ["ok", CALL_INTERRUPTED]
    _die(_target(ledger))
    again = ledger.resume_state("run-1")
    assert again.lost_calls == ()  # told once, by the resume that found it
    assert again.spent_usd == state.spent_usd  # and still counted


async def test_a_resumer_holding_the_lease_finds_the_lost_calls_even_under_the_same_pid(
    ledger: Ledger,
) -> None:
    """A resume whose pid is the dead run's own (a container's pid 1, restarted) still
    reads that run as stopped and its call as lost, because it holds the run's lease."""
    await ledger.start_call(_start())
    lease = ledger.take_lease_now("run-1")  # this process: the same pid as the run's
    assert ledger.resume_state("run-1").lost_calls == ()  # to anyone else, it runs
    state = ledger.resume_state("run-1", lease=lease)
    assert state.state == "INTERRUPTED"
    assert [c.agent_id for c in state.lost_calls] == ["extract"]
