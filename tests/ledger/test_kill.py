"""A run SIGKILLed at random moments leaves a consistent, resumable ledger."""

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


def _run_until_killed(db: Path, run_id: str, delay_s: float) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), "agents", str(db), run_id],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == "started\n", proc.stderr.read() if proc.stderr else ""
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return [line for line in out.splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    """Every committed call survives, completed agents are never re-run, resume works."""
    db = tmp_path / "aoe.db"
    rng = random.Random(1234)
    printed: list[str] = []
    for _ in range(6):
        printed += _run_until_killed(db, "run-k", rng.uniform(0.0, 0.25))

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = set(conn.execute("SELECT agent_id, attempt, turn FROM calls").fetchall())
    conn.close()
    committed = {
        (a, int(n), int(t))
        for kind, a, n, t in (line.split() for line in printed if line.startswith("call "))
    }
    assert committed, "the writer never got to record a call"
    assert committed <= stored

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
