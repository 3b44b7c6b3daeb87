"""A run with its ledger in PostgreSQL, SIGKILLed on one "host" and resumed on another.

Two real ``aoe`` processes, each started in its own working directory (a host's checkout
with its own ``aoe.yaml``), share nothing but the PostgreSQL database named by ``--db``
(or ``AOE_DB``). The provider is the loopback server ``tests/fakeprovider.py``, which
bills every call it completes, also those whose client was killed mid-call. After the
resume: every agent completed exactly once, every bill is on record, and no agent the
ledger knew had completed is paid again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fakeprovider import FakeProvider
from tests.ledger.pg import PgCluster

pytestmark = pytest.mark.timeout(180)

AGENTS = 6
HEARTBEAT = "0.2"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    pg = PgCluster()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def _query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()
    except psycopg.errors.UndefinedTable:  # not created yet
        return []


def _host(root: Path, name: str, server: FakeProvider) -> Path:
    """A host's working directory, with its aoe.yaml and its copy of the workflow."""
    home = root / name
    home.mkdir()
    (home / "aoe.yaml").write_text(
        "providers:\n  openai: {type: openai, api_key_env: OPENAI_API_KEY,"
        f" base_url: '{server.openai_base_url}'}}\n"
    )
    body = "".join(
        f"  a{i:02d}:\n    needs: {f'[a{i - 1:02d}]' if i % 3 else '[]'}\n    prompt: 'step {i}'\n"
        for i in range(AGENTS)
    )
    (home / "close.yaml").write_text(
        "version: 1\nname: close\n"
        "defaults:\n  model: openai/gpt-4o-mini\n  max_tokens: 100\n  timeout_s: 10\n"
        "agents:\n" + body
    )
    return home


def _aoe(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "AOE_DB"}
    return subprocess.Popen(
        [sys.executable, "-m", "aoe", *args],
        cwd=cwd,
        env={**clean, "OPENAI_API_KEY": "sk-test-pg", "CI": "true", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["after two agents", "with a call in flight"])
def test_killed_on_one_host_resumed_on_another_pays_no_completed_agent_again(
    moment: str, cluster: PgCluster, tmp_path: Path
) -> None:
    url = cluster.new_database()
    server = FakeProvider(latency_s=0.15)
    server.start()
    try:
        host_a, host_b = _host(tmp_path, "a", server), _host(tmp_path, "b", server)
        run = _aoe(
            host_a, "run", "close.yaml", "--no-live", "--lease-heartbeat", HEARTBEAT,
            env={"AOE_DB": url},
        )  # fmt: skip
        if moment == "after two agents":
            done = "SELECT COUNT(*) FROM attempts WHERE state = 'COMPLETED'"
            _until(lambda: (_query(url, done) or [(0,)])[0][0] >= 2, run, 60)
        else:
            flying = "SELECT COUNT(*) FROM calls WHERE ended_at IS NULL"
            _until(lambda: (_query(url, flying) or [(0,)])[0][0] >= 1, run, 60)
            time.sleep(0.05)  # shorter than the server's latency: the call is out
        assert run.poll() is None, run.communicate()
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=10)
        known_done = {
            r[0] for r in _query(url, "SELECT agent_id FROM attempts WHERE state = 'COMPLETED'")
        }
        ((run_id,),) = _query(url, "SELECT id FROM runs")
        stale = "SELECT COUNT(*) FROM leases WHERE heartbeat_at + stale_after_s > %s"
        deadline = time.monotonic() + 10
        while _query(url, stale, time.time())[0][0] and time.monotonic() < deadline:
            time.sleep(0.05)

        resume = _aoe(
            host_b, "run", "--resume", run_id, "--no-live", "--lease-heartbeat", HEARTBEAT,
            "--db", url, env={},
        )  # fmt: skip
        out, err = resume.communicate(timeout=120)
        assert resume.returncode == 0, err
        assert PgCluster.PASSWORD not in out + err
        deadline = time.monotonic() + 10
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

        billed = Counter(f"a{int(b.prompt.split()[-1]):02d}" for b in server.billed)
        on_record = Counter(r[0] for r in _query(url, "SELECT agent_id FROM calls"))
        completed = _query(
            url,
            "SELECT agent_id, COUNT(*) FROM attempts WHERE state = 'COMPLETED'"
            " GROUP BY agent_id ORDER BY agent_id",
        )
        assert completed == [(f"a{i:02d}", 1) for i in range(AGENTS)]
        for agent in known_done:
            assert billed[agent] == 1, f"{agent} completed before the kill and was paid again"
        for agent, bills in billed.items():
            assert bills <= on_record[agent], f"a bill of {agent} is not on record"
        if moment == "after two agents":
            assert len(known_done) >= 2
        else:  # the lost call is counted at its reservation and its agent runs again
            assert "in flight" in err, err
        assert _query(url, "SELECT COUNT(*) FROM leases") == [(0,)]  # released at the end
        assert not (host_a / ".aoe").exists()  # nothing went to a local SQLite ledger
        assert not (host_b / ".aoe").exists()
    finally:
        server.stop()
