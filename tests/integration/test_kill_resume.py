"""A run killed with SIGKILL at any moment resumes without paying again for finished agents."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

AGENTS = 24


def _workflow(tmp: Path) -> Path:
    lines = [
        "version: 1",
        "name: close",
        "defaults:",
        "  model: openai/gpt-4o-mini",
        "  max_tokens: 100",
        "agents:",
    ]
    for i in range(AGENTS):
        needs = f"[a{i - 1:02d}]" if i % 3 else "[]"
        lines += [
            f"  a{i:02d}:",
            f"    needs: {needs}",
            f"    prompt: 'step {i}'",
            "    simulate: {latency_s: 0.12, output_tokens: 20}",
        ]
    path = tmp / "close.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _aoe(*args: str, db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AOE_DB": str(db), "CI": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "aoe", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _completed(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            rows = conn.execute("select agent_id from attempts where state = 'COMPLETED'")
            return {r[0] for r in rows}
    except sqlite3.OperationalError:
        return set()


def _kill_after(proc: subprocess.Popen[str], db: Path, done_at_least: int) -> None:
    deadline = time.monotonic() + 30
    while len(_completed(db)) < done_at_least and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.1))  # land anywhere: mid-call, mid-write, between agents
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_pays_each_agent_once(tmp_path: Path) -> None:
    """Killed three times mid-run, resumed each time: every agent completes exactly once."""
    random.seed(1234)
    db = tmp_path / "ledger.db"
    wf = _workflow(tmp_path)
    _kill_after(_aoe("run", str(wf), "--simulate", "--no-live", db=db), db, 3)
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("select id from runs").fetchone()[0]
    for target in (9, 15):
        _kill_after(_aoe("run", "--resume", run_id, "--no-live", db=db), db, target)
        with sqlite3.connect(db) as conn:
            assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    before = _completed(db)
    final = _aoe("run", "--resume", run_id, "--no-live", "--json", db=db)
    out, _ = final.communicate(timeout=60)
    assert final.returncode == 0
    doc = json.loads(out)
    agents = doc["workflows"][0]["agents"]
    assert {a["state"] for a in agents.values()} == {"COMPLETED"}
    assert {a for a, v in agents.items() if v["resumed"]} == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
        completed = conn.execute(
            "select agent_id, count(*) from attempts where state = 'COMPLETED' group by agent_id"
        ).fetchall()
        assert sorted(completed) == [(f"a{i:02d}", 1) for i in range(AGENTS)]
        ok_calls = conn.execute(
            "select agent_id, count(*) from calls c where status = 'ok' and exists ("
            " select 1 from attempts a where a.run_id = c.run_id and a.agent_id = c.agent_id"
            " and a.attempt = c.attempt and a.state = 'COMPLETED') group by agent_id"
        ).fetchall()
        assert sorted(ok_calls) == [(f"a{i:02d}", 1) for i in range(AGENTS)]
