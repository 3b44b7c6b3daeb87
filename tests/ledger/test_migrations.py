"""Schema versions: a fresh ledger and one written by an older aoe both reach the current one."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.errors import LedgerError
from aoe.ledger import Ledger
from aoe.ledger.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, user_version


def _tables(conn: sqlite3.Connection, kind: str) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,)).fetchall()
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


def test_fresh_ledger_gets_every_migration(tmp_path: Path) -> None:
    """A new ledger file is created at the current schema version, in WAL mode."""
    path = tmp_path / "new" / "aoe.db"
    Ledger.open(path).close()
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION == len(MIGRATIONS)
    assert _tables(conn, "table") == {"runs", "workflows", "attempts", "calls", "outputs", "leases"}
    assert {"runs_by_start", "calls_by_time"} <= _tables(conn, "index")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_older_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    """A ledger at version 1 (no report indexes) is upgraded in place; its runs still read."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, upto=1) == ["m001_initial"]
    conn.execute(
        "INSERT INTO runs (id, started_at, ended_at, state, command, files, simulate,"
        " budget_usd) VALUES ('old-run', ?, ?, 'COMPLETED', 'aoe run a.yaml', '[\"a.yaml\"]',"
        " 0, NULL)",
        (time.time() - 60, time.time()),
    )
    conn.execute(
        "INSERT INTO calls (run_id, workflow_key, agent_id, attempt, turn, provider, model,"
        " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
        " reasoning_tokens, cost_pusd, cost_confirmed, started_at, ended_at, status,"
        " tool_calls) VALUES ('old-run', 'a', 'x', 1, 1, 'openai', 'gpt-4o', 10, 5, 0, 0, 0,"
        " 2500000000, 1, 1.0, 2.0, 'ok', '[]')"
    )
    assert user_version(conn) == 1
    conn.close()

    async with Ledger.open(path) as ledger:
        (run,) = ledger.list_runs()
        assert (run.run_id, run.state, run.cost_usd) == ("old-run", "COMPLETED", Decimal("0.0025"))
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION
    assert "calls_by_time" in _tables(conn, "index")
    conn.close()


def test_ledger_from_a_newer_aoe_is_refused(tmp_path: Path) -> None:
    """A ledger written by a newer aoe is not touched; the error says to upgrade."""
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerError) as err:
        Ledger.open(path)
    assert "upgrade aoe" in (err.value.hint or "")
    assert err.value.where == str(path)


async def test_a_ledger_from_before_started_calls_keeps_its_calls(tmp_path: Path) -> None:
    """A version-4 ledger is upgraded in place: its calls keep their ids, costs and indexes,
    and from then on a call can be recorded as started, with no end, and completed."""
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, upto=4)[-1] == "m004_attempt_fingerprint"
    conn.execute(
        "INSERT INTO runs (id, started_at, ended_at, state, command, files, simulate,"
        " budget_usd) VALUES ('old-run', 1.0, 2.0, 'COMPLETED', 'aoe run a.yaml', '[\"a.yaml\"]',"
        " 0, NULL)"
    )
    for n, (cost, confirmed) in enumerate([(2500000000, 1), (700000000, 0)], 1):
        conn.execute(
            "INSERT INTO calls (id, run_id, workflow_key, agent_id, attempt, turn, provider,"
            " model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
            " reasoning_tokens, cost_pusd, cost_confirmed, started_at, ended_at, status,"
            " tool_calls) VALUES (?, 'old-run', 'a', 'x', ?, 1, 'openai', 'gpt-4o', 10, 5, 0, 0,"
            " 0, ?, ?, 1.0, 2.0, 'ok', '[]')",
            (10 * n, n, cost, confirmed),
        )
    conn.close()

    async with Ledger.open(path) as ledger:
        (run,) = ledger.list_runs()
        assert (run.cost_usd, run.unconfirmed_usd) == (Decimal("0.0032"), Decimal("0.0007"))
        assert run.in_flight_calls == 0
        assert ledger.resume_state("old-run").workflows == {}
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT id, attempt, cost_pusd FROM calls ORDER BY id").fetchall() == [
        (10, 1, 2500000000),
        (20, 2, 700000000),
    ]
    assert {"calls_by_attempt", "calls_by_time", "calls_by_model"} <= _tables(conn, "index")
    nullable = {row[1]: not row[3] for row in conn.execute("PRAGMA table_info(calls)")}
    assert nullable["ended_at"]
    assert not nullable["started_at"]
    assert "leases" in _tables(conn, "table")
    conn.close()
