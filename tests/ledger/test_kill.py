"""A run SIGKILLed at random moments leaves a consistent, resumable ledger.

The writer process writes as the engine does: a call's start is waited for, everything
else is queued; a line is printed only once a commit covers the write it names.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("writer_proc.py")


def _run_until_killed(db: Path, run_id: str, delay_s: float, stall_s: float) -> list[str]:
    """Run the writer, and SIGKILL it after ``delay_s``; with ``stall_s``, while this test
    holds the ledger's write lock for that long first (another process writing), so that
    its queued writes pile up uncommitted and die with it. Its output goes to a file, so a
    full pipe never pauses it."""
    out = db.with_name(f"out-{time.monotonic_ns()}.txt")
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), "agents", str(db), run_id],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.monotonic() + 30
    while not out.read_text().startswith("started\n") and proc.poll() is None:
        assert time.monotonic() < deadline, "the writer never started"
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    time.sleep(delay_s)
    blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        if stall_s:
            blocker.execute("BEGIN IMMEDIATE")
            time.sleep(stall_s)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        blocker.close()
    assert proc.returncode == -signal.SIGKILL
    return [line for line in out.read_text().splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """Every committed call survives, completed agents are never re-run, resume works."""
    db = tmp_path / "aoe.db"
    rng = random.Random(1234)
    printed: list[str] = []
    for i in range(8):
        stall = rng.uniform(0.01, 0.1) if i % 2 else 0.0
        printed += _run_until_killed(db, "run-k", rng.uniform(0.0, 0.25), stall)

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = set(conn.execute("SELECT agent_id, attempt, turn FROM calls").fetchall())
    ended = set(
        conn.execute("SELECT agent_id, attempt, turn FROM calls WHERE status = 'ok'").fetchall()
    )
    conn.close()

    def lines(kind: str) -> set[tuple[str, int, int]]:
        return {
            (a, int(n), int(t))
            for k, a, n, t in (line.split() for line in printed if line.startswith(kind + " "))
        }

    assert lines("call"), "the writer never got to record a call's end"
    assert lines("start") <= stored  # a call start that returned is committed
    assert lines("call") <= ended  # and so is every end queued before it

    with Ledger.open(db) as ledger:
        state = ledger.resume_state("run-k")
        detail = ledger.get_run("run-k")
        total = ledger.cost_report("agent", run_id="run-k").total
    assert state.state == detail.run.state == "INTERRUPTED"
    wf = state.workflows["wf"]
    completed_lines = {line.split()[1] for line in printed if line.startswith("completed ")}
    assert completed_lines <= set(wf.completed)
    for agent in detail.workflows[0].agents:
        done = [a for a in agent.attempts if a.state == "COMPLETED"]
        assert len(done) <= 1  # a completed agent is never started again
        if done:
            assert wf.completed[agent.agent_id] == {"k": int(agent.agent_id.split("-")[1])}
            assert {c.turn for c in agent.calls if c.attempt == done[0].attempt} == {1, 2, 3}
        for attempt in agent.attempts:
            assert attempt.state in {"COMPLETED", "INTERRUPTED"}
    assert total.calls == len(stored)
    assert total.cost_usd == Decimal("0.000123") * len(stored)
    assert state.spent_usd == total.cost_usd
