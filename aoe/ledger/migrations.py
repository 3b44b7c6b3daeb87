"""The ledger's schema, as an append-only list of named migrations.

One list for SQLite and PostgreSQL: the statements are written with SQLite's type names and
``aoe.ledger.dialect`` turns them into PostgreSQL's (and says where the version is kept).
SQLite's ``PRAGMA user_version`` (PostgreSQL: table ``aoe_schema_version``) holds how many
migrations a database has had. Never edit or
reorder a migration that has shipped: add a new one at the end. Each migration runs in
its own write transaction together with the version bump (PostgreSQL: under an advisory
lock), so two aoe
processes opening a fresh ledger at once cannot both apply it, and a crash mid-migration
leaves the previous version intact.

Money is stored as INTEGER (PostgreSQL: BIGINT) pico-dollars (1e-12 USD) in ``cost_pusd``:
both sum integers exactly (a float sum would not be), and pico-dollars represent any price given
to six decimal places per million tokens without rounding. Budgets are TEXT decimals.
JSON values (files, inputs, outputs, tool calls) are TEXT holding JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aoe.ledger.dialect import Conn, dialect_of

Migration = Callable[[Conn], None]


def _ddl(conn: Conn, text: str) -> None:
    conn.execute(dialect_of(conn).ddl(text))


def m001_initial(conn: Conn) -> None:
    """Runs, workflow instances, agent attempts, provider calls and attempt outputs."""
    _ddl(
        conn,
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            ended_at REAL,
            state TEXT NOT NULL,
            command TEXT NOT NULL,
            files TEXT NOT NULL,
            simulate INTEGER NOT NULL,
            budget_usd TEXT,
            pid INTEGER,
            host TEXT
        )""",
    )
    _ddl(
        conn,
        """CREATE TABLE workflows (
            run_id TEXT NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            inputs TEXT NOT NULL,
            budget_usd TEXT,
            state TEXT NOT NULL,
            started_at REAL,
            ended_at REAL,
            PRIMARY KEY (run_id, key)
        )""",
    )
    _ddl(
        conn,
        """CREATE TABLE attempts (
            run_id TEXT NOT NULL,
            workflow_key TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            module TEXT,
            model TEXT NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            state TEXT,
            error TEXT,
            PRIMARY KEY (run_id, workflow_key, agent_id, attempt)
        )""",
    )
    _ddl(
        conn,
        """CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            workflow_key TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            turn INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_pusd INTEGER NOT NULL,
            cost_confirmed INTEGER NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL NOT NULL,
            status TEXT NOT NULL,
            request_id TEXT,
            tool_calls TEXT NOT NULL,
            estimate_tokens INTEGER
        )""",
    )
    _ddl(
        conn,
        """CREATE TABLE outputs (
            run_id TEXT NOT NULL,
            workflow_key TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            output TEXT NOT NULL,
            PRIMARY KEY (run_id, workflow_key, agent_id, attempt)
        )""",
    )
    _ddl(conn, "CREATE INDEX calls_by_attempt ON calls (run_id, workflow_key, agent_id, attempt)")


def m002_report_indexes(conn: Conn) -> None:
    """Indexes for ``aoe runs`` (newest first) and ``cost-report --since/--until``."""
    _ddl(conn, "CREATE INDEX runs_by_start ON runs (started_at DESC)")
    _ddl(conn, "CREATE INDEX calls_by_time ON calls (started_at)")
    _ddl(conn, "CREATE INDEX calls_by_model ON calls (provider, model)")


def m003_workflow_graph(conn: Conn) -> None:
    """Each workflow's ``needs`` as JSON: ``aoe report`` draws the DAG and its critical path."""
    _ddl(conn, "ALTER TABLE workflows ADD COLUMN graph_json TEXT")


def m004_attempt_fingerprint(conn: Conn) -> None:
    """What each attempt ran (a hash of its agent's spec): a resume re-runs an agent whose
    spec changed since it completed, instead of reusing an output made by other settings."""
    _ddl(conn, "ALTER TABLE attempts ADD COLUMN fingerprint TEXT")


def m005_started_calls_and_run_leases(conn: Conn) -> None:
    """A call is recorded when it starts, before its request leaves, and completed when it
    ends: ``calls.ended_at`` may be empty (in flight, or lost with its process). SQLite
    cannot drop a NOT NULL, so the table is rebuilt with its rows and indexes. And
    ``leases``: the one process that runs or resumes each run, and its last heartbeat.
    PostgreSQL drops the NOT NULL in place."""
    if dialect_of(conn).can_drop_not_null:
        _ddl(conn, "ALTER TABLE calls ALTER COLUMN ended_at DROP NOT NULL")
    else:
        _rebuild_calls_with_nullable_end(conn)
    _ddl(
        conn,
        """CREATE TABLE leases (
            run_id TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            since REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            stale_after_s REAL NOT NULL
        )""",
    )


def _rebuild_calls_with_nullable_end(conn: Conn) -> None:
    conn.execute(
        """CREATE TABLE calls_m005 (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            workflow_key TEXT NOT NULL,
            agent_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            turn INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            reasoning_tokens INTEGER NOT NULL,
            cost_pusd INTEGER NOT NULL,
            cost_confirmed INTEGER NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            status TEXT NOT NULL,
            request_id TEXT,
            tool_calls TEXT NOT NULL,
            estimate_tokens INTEGER
        )"""
    )
    columns = (
        "id, run_id, workflow_key, agent_id, attempt, turn, provider, model, input_tokens,"
        " output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_pusd,"
        " cost_confirmed, started_at, ended_at, status, request_id, tool_calls, estimate_tokens"
    )
    conn.execute(f"INSERT INTO calls_m005 ({columns}) SELECT {columns} FROM calls")
    conn.execute("DROP TABLE calls")
    conn.execute("ALTER TABLE calls_m005 RENAME TO calls")
    conn.execute("CREATE INDEX calls_by_attempt ON calls (run_id, workflow_key, agent_id, attempt)")
    conn.execute("CREATE INDEX calls_by_time ON calls (started_at)")
    conn.execute("CREATE INDEX calls_by_model ON calls (provider, model)")


MIGRATIONS: Final[tuple[Migration, ...]] = (
    m001_initial,
    m002_report_indexes,
    m003_workflow_graph,
    m004_attempt_fingerprint,
    m005_started_calls_and_run_leases,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def user_version(conn: Conn) -> int:
    """The number of migrations this database has had."""
    return dialect_of(conn).schema_version(conn)


def migrate(conn: Conn, *, upto: int = SCHEMA_VERSION) -> list[str]:
    """Apply every pending migration (up to ``upto``); return the names applied.

    ``conn`` must be in autocommit mode (sqlite3's ``isolation_level=None``). Raises the
    driver's errors as they come; the caller translates them.
    A database newer than this aoe raises ``RuntimeError``.
    """
    applied: list[str] = []
    if user_version(conn) == upto:
        return applied
    dialect = dialect_of(conn)
    for index in range(upto):
        conn.execute(dialect.begin_write)
        try:
            dialect.lock_schema(conn)
            current = user_version(conn)  # re-read under the write lock
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"ledger schema version {current} is newer than this aoe "
                    f"knows ({SCHEMA_VERSION})"
                )
            if current > index:
                conn.execute("COMMIT")
                continue
            MIGRATIONS[index](conn)
            dialect.set_schema_version(conn, index + 1)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # type: ignore[attr-defined]
                conn.execute("ROLLBACK")
            raise
        applied.append(MIGRATIONS[index].__name__)
    return applied
