"""A PostgreSQL ledger as a user names it: ``--db``/``AOE_DB`` URLs, ``aoe db migrate``,
and the exit-2 cases (unreachable, wrong password, newer ledger, missing driver), never
showing the URL's password."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aoe.errors import LedgerError, LedgerUnusableError
from aoe.ledger import Ledger
from aoe.ledger.migrations import SCHEMA_VERSION
from aoe.ledger.postgres import redact
from aoe.ledger.store import db_target, default_db_path, migrate_ledger
from ledger.conftest import execute
from ledger.factory import (
    attempt_end,
    attempt_start,
    call,
    call_start,
    run_start,
    workflow_start,
)
from ledger.pg import PgCluster, _free_port

pytestmark = pytest.mark.timeout(60)


def _aoe(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "aoe", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=50,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def _record_a_run(url: str) -> None:
    async with Ledger.open(url) as ledger:
        await ledger.start_run(run_start())
        await ledger.start_workflow(workflow_start())
        await ledger.start_attempt(attempt_start())
        await ledger.record_call(call(cost="0.000123"))
        await ledger.finish_attempt(attempt_end(output={"total": 12}))
        await ledger.finish_run("run-1", "COMPLETED", time.time())


async def test_runs_show_cost_report_and_report_read_a_postgres_ledger(
    pg_url: str, tmp_path: Path
) -> None:
    """`--db URL` and `AOE_DB=URL` reach the same ledger from any directory; the password
    is in no output."""
    await _record_a_run(pg_url)
    code, out = _aoe("runs", "--db", pg_url, "--json", cwd=tmp_path)
    assert code == 0, out
    (run,) = json.loads(out)["runs"] if isinstance(json.loads(out), dict) else json.loads(out)
    assert run["run_id"] == "run-1"
    code, out = _aoe("show", "run-1", "--json", env={"AOE_DB": pg_url}, cwd=tmp_path)
    assert code == 0, out
    assert "0.000123" in out
    code, out = _aoe("cost-report", "--by", "agent", env={"AOE_DB": pg_url}, cwd=tmp_path)
    assert code == 0, out
    assert "extract" in out
    html = tmp_path / "run.html"
    code, out = _aoe("report", "run-1", "--db", pg_url, "--html", str(html), cwd=tmp_path)
    assert code == 0, out
    assert "extract" in html.read_text()
    assert PgCluster.PASSWORD not in out
    assert not (tmp_path / ".aoe").exists()  # no SQLite file was made on the side


@pytest.mark.parametrize("problem", ["unreachable", "wrong password", "no such database"])
def test_a_ledger_that_cannot_be_reached_is_exit_2_without_the_password(
    problem: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = {
        "unreachable": f"postgresql://aoe:secret-pw@127.0.0.1:{_free_port()}/aoe",
        "wrong password": pg_cluster.url().replace(PgCluster.PASSWORD, "secret-wrong"),
        "no such database": pg_cluster.url("missing_db"),
    }[problem]
    for args in (["runs", "--db", url], ["db", "migrate", "--db", url]):
        code, out = _aoe(*args, cwd=tmp_path)
        assert code == 2, out
        assert "cannot open the ledger" in out
        assert "secret" not in out
        assert "aoe:***@127.0.0.1" in out
        assert "Traceback" not in out


def test_a_ledger_from_a_newer_aoe_is_refused_untouched(pg_url: str) -> None:
    """The same words as for an SQLite file: exit 2, upgrade aoe."""
    assert migrate_ledger(pg_url).version == SCHEMA_VERSION
    execute(pg_url, "UPDATE aoe_schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerUnusableError) as err:
        Ledger.open(pg_url)
    assert f"ledger schema version {SCHEMA_VERSION + 1} is newer than this aoe" in err.value.message
    assert "upgrade aoe" in (err.value.hint or "")
    code, out = _aoe("db", "migrate", "--db", pg_url)
    assert code == 2, out
    assert "is newer than this aoe" in out
    assert "secret-pw" not in out
    assert execute(pg_url, "SELECT version FROM aoe_schema_version") == [(SCHEMA_VERSION + 1,)]


def test_db_migrate_creates_then_finds_nothing_to_do(pg_url: str, tmp_path: Path) -> None:
    code, out = _aoe("db", "migrate", "--db", pg_url)
    assert code == 0, out
    assert f"applied {SCHEMA_VERSION} migration(s)" in out
    assert "(postgresql)" in out
    assert "secret-pw" not in out
    code, out = _aoe("db", "migrate", env={"AOE_DB": pg_url})
    assert code == 0, out
    assert f"up to date at schema version {SCHEMA_VERSION}" in out
    code, out = _aoe("db", "migrate", "--db", str(tmp_path / "a.db"))
    assert code == 0, out
    assert "(sqlite)" in out


def test_many_processes_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "aoe", "db", "migrate", "--db", pg_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=50)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    applied = sum(1 for o in outs if "applied" in o)
    assert applied >= 1
    assert execute(pg_url, "SELECT version FROM aoe_schema_version") == [(SCHEMA_VERSION,)]


def test_without_the_driver_a_postgres_url_says_how_to_install_it(pg_url: str) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from aoe.cli.main import main\n"
        f"raise SystemExit(main(['runs', '--db', {pg_url!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'aoe[postgres]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_driver_is_imported_only_for_a_postgres_ledger(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from aoe.cli.main import main\n"
        f"rc = main(['db', 'migrate', '--db', {str(tmp_path / 'x.db')!r}])\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported for an SQLite ledger'\n"
        "raise SystemExit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr


def test_urls_are_told_from_paths_and_shown_without_password() -> None:
    url = "postgresql://ci:hunter2@db.example:5432/aoe?sslmode=require"
    assert db_target(url) == url  # a Path would fold its "//"
    assert db_target("x/y.db") == Path("x/y.db")
    assert default_db_path({"AOE_DB": url}) == url
    assert redact(url) == "postgresql://ci:***@db.example:5432/aoe?sslmode=require"
    assert redact("postgres://tokenonly@h/aoe") == "postgres://***@h/aoe"
    assert "pw" not in redact("postgresql:///aoe?host=/tmp&password=pw")


class _SleepOnce:
    """A write that holds its batch's transaction open (``pg_sleep``) the first time it
    runs, so the test can drop the connection in the middle of that transaction."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, conn: Any, record: object) -> None:
        self.runs += 1
        if self.runs == 1:
            conn.execute("SELECT pg_sleep(5)")


def _wait_for_sleeper(cluster: PgCluster, url: str, query: str = "%pg_sleep%") -> None:
    """Until a connection to the database of ``url`` sleeps in ``pg_sleep`` while running
    a statement like ``query``."""
    name = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE %s"
                " AND state = 'active' AND wait_event = 'PgSleep'",
                (name, query),
            ).fetchone()
        if row is not None:
            return
        time.sleep(0.01)
    raise AssertionError("the writer never reached its sleeping statement")


async def test_a_connection_dropped_mid_transaction_is_retried_and_records_once(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    """``pg_terminate_backend`` while a batch's transaction is open (its call starts
    written, not committed): the server rolls it back, the writer connects again and
    commits the batch once; a later read on a dropped reading connection reconnects too."""
    async with Ledger.open(pg_url) as ledger:
        await ledger.start_run(run_start())
        await ledger.start_workflow(workflow_start())
        await ledger.start_attempt(attempt_start())
        assert ledger.list_runs()[0].run_id == "run-1"
        sleeper = _SleepOnce()
        for turn in range(1, 4):
            await ledger.start_call(call_start(turn=turn), wait=False)  # queued, same batch
        held = asyncio.ensure_future(ledger._writer.submit(sleeper, None))
        await asyncio.to_thread(_wait_for_sleeper, pg_cluster, pg_url)
        assert await asyncio.to_thread(pg_cluster.terminate_backends, pg_url) == 2
        await asyncio.wait_for(held, 20)  # retried on a new connection, then committed
        await ledger.start_call(call_start(turn=4))
        assert sleeper.runs == 2
        rows = execute(pg_url, "SELECT turn FROM calls ORDER BY id")
        assert rows == [(1,), (2,), (3,), (4,)]  # each once: the dropped batch left nothing
        assert ledger.get_run("run-1").run.in_flight_calls == 4  # the reader reconnected


async def test_a_ledger_that_stays_unreachable_fails_the_writes_clearly(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    """The database refuses connections from the moment the connection drops: the write
    is retried until ``lock_wait_s``, then fails with a LedgerError that says where (no
    password), and every later write fails too: nothing is recorded out of order."""
    ledger = Ledger.open(pg_url, lock_wait_s=0.5)
    await ledger.start_run(run_start())
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    try:
        pg_cluster.terminate_backends(pg_url)
        await ledger.start_attempt(attempt_start())
        with pytest.raises(LedgerError) as failed:
            await ledger.start_call(call_start())
        assert "cannot open the ledger" in failed.value.message  # it could not reconnect
        assert failed.value.where is not None
        assert "secret-pw" not in str(failed.value.where) + failed.value.message
        with pytest.raises(LedgerError):
            await ledger.flush()
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await ledger.aclose()
    assert execute(pg_url, "SELECT COUNT(*) FROM calls") == [(0,)]


async def test_both_dialects_read_back_the_same_answers(pg_url: str, tmp_path: Path) -> None:
    """The same writes recorded in an SQLite file and in PostgreSQL read back identically:
    `runs`, `show`, every `cost-report` grouping and what `--resume` continues from."""
    t0 = 1_714_554_000.0  # 2024-05-01 09:00 UTC; a second workflow starts on the next day
    writes: list[tuple[str, object]] = [
        ("start_run", run_start(started_at=t0)),
        ("start_workflow", workflow_start(started_at=t0)),
        ("start_workflow", workflow_start(key="invoice#2", started_at=t0 + 86_400)),
    ]
    for key, day in (("invoice", 0), ("invoice#2", 86_400)):
        for n, agent in enumerate(("extract", "check", "book")):
            at = t0 + day + n * 10
            writes += [
                ("start_attempt", attempt_start(key=key, agent=agent, started_at=at)),
                ("start_call", call_start(key=key, agent=agent)._replace(started_at=at)),
                ("record_call", call(key=key, agent=agent, cost=f"0.00{n + 1}7", started_at=at)),
            ]
            if agent != "book" or key == "invoice":
                writes.append(
                    (
                        "finish_attempt",
                        attempt_end(key=key, agent=agent, ended_at=at + 5, output={"n": n}),
                    )
                )
    writes.append(("start_call", call_start(key="invoice#2", agent="book", turn=2)))  # lost
    answers = []
    for target in (tmp_path / "aoe.db", pg_url):
        async with Ledger.open(target) as ledger:
            for method, record in writes:
                await getattr(ledger, method)(record)
            await ledger.flush()
            lease = ledger.take_lease_now("run-1")
            answers.append(
                (
                    ledger.list_runs(),
                    ledger.get_run("run"),
                    [
                        ledger.cost_report(by)
                        for by in ("workflow", "agent", "module", "model", "day")
                    ],
                    ledger.cost_report("agent", since=datetime.fromtimestamp(t0 + 86_400, UTC)),
                    ledger.resume_state("run-1", lease=lease),
                )
            )
    sqlite, postgres = answers
    assert postgres == sqlite
    days = [r.keys for r in sqlite[2][4].rows]
    assert days[:2] == [("2024-05-01",), ("2024-05-02",)]  # then the lost call's: today
    assert len(sqlite[4].lost_calls) == 1


async def test_a_connection_dropped_during_commit_is_never_sent_again(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    """A deferred trigger makes COMMIT itself take a while; the connection is dropped then.
    Whether the batch was recorded cannot be known from the client, so it is not sent
    again (it could be recorded twice): the write fails saying so (its call is never sent);
    the next write goes on a new connection."""
    ledger = Ledger.open(pg_url)
    try:
        await ledger.start_run(run_start())
        execute(
            pg_url,
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
            " 'BEGIN PERFORM pg_sleep(5); RETURN NULL; END'",
        )
        execute(
            pg_url,
            "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON calls DEFERRABLE INITIALLY"
            " DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        )
        start = asyncio.ensure_future(ledger.start_call(call_start()))
        await asyncio.to_thread(_wait_for_sleeper, pg_cluster, pg_url, "COMMIT")
        await asyncio.to_thread(pg_cluster.terminate_backends, pg_url)
        with pytest.raises(LedgerError) as lost:
            await asyncio.wait_for(start, 20)
        assert "lost during COMMIT" in lost.value.message
        assert "not sent again" in lost.value.message
        execute(pg_url, "DROP TRIGGER slow ON calls")
        await ledger.start_call(call_start(turn=2))
    finally:
        await ledger.aclose()
    # the dropped COMMIT was rolled back by the server, and never sent again
    assert execute(pg_url, "SELECT turn FROM calls") == [(2,)]
