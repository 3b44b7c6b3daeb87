"""``Ledger``: the run ledger a run writes to and the commands read from.

Writes go through one writer thread (``aoe.ledger.writer``), committed in the order they
are made; which of them return only once committed, and why, is in the ``aoe.ledger``
docstring. Reads are synchronous, on their own connection, each inside one read
transaction, so they see a consistent snapshot even while another aoe process writes,
and every write this ``Ledger`` was handed before them. Several processes may share one
ledger file (WAL mode, busy timeout), or, on many machines, one PostgreSQL database
(``--db postgresql://...``, ``aoe.ledger.postgres``): the same statements, schema and
migrations (``aoe.ledger.dialect``), and the same guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from aoe.clock import Clock, SystemClock
from aoe.errors import LedgerError, LedgerUnusableError
from aoe.ledger import lease, postgres, queries
from aoe.ledger.dialect import Conn, dialect_of
from aoe.ledger.errors import connect, ledger_error
from aoe.ledger.files import create_private, private_dir
from aoe.ledger.lease import LedgerLease
from aoe.ledger.migrations import migrate, user_version
from aoe.ledger.records import (
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    CostGroup,
    CostReport,
    ResumeState,
    RunDetail,
    RunLeaseHolder,
    RunStart,
    RunSummary,
    WorkflowStart,
)
from aoe.ledger.writer import (
    Backend,
    SqliteBackend,
    StateChange,
    Writer,
    write_attempt_end,
    write_attempt_start,
    write_call,
    write_call_start,
    write_nothing,
    write_run_start,
    write_state_change,
    write_workflow_start,
)

DEFAULT_RELATIVE_PATH: Final = Path(".aoe") / "aoe.db"
T = TypeVar("T")


#: Where a ledger is: a file, or a ``postgresql://`` URL (a ``str``).
Target = Path | str


def is_postgres(target: Target | None) -> bool:
    """Whether ``target`` (a ``--db`` or ``AOE_DB`` value) is a PostgreSQL URL."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def db_target(value: str | Path | None, environ: Mapping[str, str] = os.environ) -> Target:
    """What ``--db VALUE`` names (a URL stays a string: a ``Path`` would mangle its ``//``),
    else ``default_db_path``."""
    if value is None or value == "":
        return default_db_path(environ)
    text = str(value)
    return text if is_postgres(text) else Path(text).expanduser()


def ledger_exists(target: Target) -> bool:
    """Whether there is a ledger to read at ``target`` (a PostgreSQL database: yes; opening
    it says if it cannot be reached)."""
    return True if is_postgres(target) else Path(target).exists()


def shown(target: Target) -> str:
    """``target`` as messages show it: a URL without its password."""
    if is_postgres(target):
        return postgres.redact(str(target))
    return str(target)


def default_db_path(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Target:
    """``AOE_DB`` if set (a file, or a ``postgresql://`` URL), else ``.aoe/aoe.db`` under
    ``cwd``; ``--db`` overrides both."""
    configured = environ.get("AOE_DB")
    if configured:
        return configured if is_postgres(configured) else Path(configured).expanduser()
    return (cwd if cwd is not None else Path.cwd()) / DEFAULT_RELATIVE_PATH


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


@dataclass(frozen=True, slots=True)
class Migrated:
    """What ``migrate_ledger`` did: the migrations it applied, and the version now."""

    where: str
    dialect: str
    applied: tuple[str, ...]
    version: int


def migrate_ledger(target: Target, *, busy_timeout_s: float = 5.0) -> Migrated:
    """Create or bring up to date the ledger at ``target`` (``aoe db migrate``); a ledger
    from a newer aoe: ``LedgerUnusableError`` (exit 2), untouched."""
    try:
        if is_postgres(target):
            backend: Backend = postgres.PgBackend(str(target), busy_timeout_s)
            conn: Conn = backend.connect()
        else:
            path = Path(target)
            private_dir(path.parent)
            with contextlib.suppress(OSError):
                create_private(path)
            backend = SqliteBackend(path, busy_timeout_s)
            conn = backend.connect()
    except OSError as exc:
        raise LedgerUnusableError(
            f"cannot create the ledger directory: {exc}",
            where=str(Path(target).parent),
            hint="pass --db or set AOE_DB to a writable path",
        ) from exc
    except LedgerError as failed:
        raise LedgerUnusableError(failed.message, where=failed.where, hint=failed.hint) from failed
    try:
        applied = migrate(conn)
        version = user_version(conn)
    except (backend.errors[0], RuntimeError) as exc:
        err = backend.error(exc, "migrate")
        if isinstance(exc, RuntimeError):
            err.hint = "upgrade aoe, or point --db at another ledger"
        raise LedgerUnusableError(err.message, where=err.where, hint=err.hint) from exc
    finally:
        with contextlib.suppress(*backend.errors):
            conn.close()  # type: ignore[attr-defined]
    return Migrated(backend.where, dialect_of(conn).name, tuple(applied), version)


class Ledger:
    """An open ledger (a file, or a PostgreSQL database). Create with ``Ledger.open``; end
    with ``aclose`` or ``close``."""

    def __init__(self, backend: Backend, conn: Conn, *, lock_wait_s: float) -> None:
        self.path: Path | None = getattr(backend, "path", None)  # None: PostgreSQL
        #: where the ledger is, as messages show it (a URL without its password)
        self.where = backend.where
        self.dialect = dialect_of(conn)
        self._backend = backend
        self._conn = conn
        self._read_lock = threading.Lock()
        self._writer = Writer(backend, lock_wait_s=lock_wait_s)

    @classmethod
    def open(
        cls, path: Target, *, busy_timeout_s: float = 5.0, lock_wait_s: float = 60.0
    ) -> Ledger:
        """Open (creating the file and its directories, or the tables) and migrate the
        ledger at ``path``: a file, or a ``postgresql://`` URL.

        ``busy_timeout_s`` is how long one SQLite statement waits for another process's
        lock (PostgreSQL: how long connecting may take); ``lock_wait_s`` bounds the retries
        of a whole write before it fails.
        """
        try:
            if is_postgres(path):
                return cls._open_postgres(str(path), busy_timeout_s, lock_wait_s)
            return cls._open(Path(path), busy_timeout_s, lock_wait_s)
        except LedgerUnusableError:
            raise
        except LedgerError as err:
            raise LedgerUnusableError(err.message, where=err.where, hint=err.hint) from (
                err.__cause__ or err
            )

    @classmethod
    def _open(cls, path: Path, busy_timeout_s: float, lock_wait_s: float) -> Ledger:
        try:
            private_dir(path.parent)
        except OSError as exc:
            raise LedgerError(
                f"cannot create the ledger directory: {exc}",
                where=str(path.parent),
                hint="pass --db or set AOE_DB to a writable path",
            ) from exc
        with contextlib.suppress(OSError):  # sqlite3 says best what is wrong with the path
            create_private(path)  # 0600 before SQLite makes it (its -wal, -shm follow)
        conn = connect(path, busy_timeout_s=busy_timeout_s)
        try:
            migrate(conn)
        except (sqlite3.Error, RuntimeError) as exc:
            conn.close()
            err = ledger_error(exc, path, "migrate")
            if isinstance(exc, RuntimeError):
                err.hint = "upgrade aoe, or point --db at another ledger"
            raise err from exc
        return cls(SqliteBackend(path, busy_timeout_s), conn, lock_wait_s=lock_wait_s)

    @classmethod
    def _open_postgres(cls, url: str, connect_timeout_s: float, lock_wait_s: float) -> Ledger:
        backend = postgres.PgBackend(url, connect_timeout_s)
        conn = backend.connect()
        try:
            migrate(conn)
        except (backend.errors[0], RuntimeError) as exc:
            conn.close()
            raise postgres.ledger_error(exc, url, "migrate") from exc
        return cls(backend, conn, lock_wait_s=lock_wait_s)

    # --- writes (see the package docstring for which are awaited, and why) -------------

    async def start_run(self, record: RunStart) -> None:
        """Record a run starting, or reopen a run being resumed; returns once committed."""
        await self._writer.submit(write_run_start, record)

    async def start_workflow(self, record: WorkflowStart) -> None:
        """Record a workflow instance starting (or reopening on resume), committed."""
        await self._writer.submit(write_workflow_start, record)

    async def start_attempt(self, record: AttemptStart) -> None:
        """Queue an agent attempt's start (committed in order, nobody waits); with no end
        it reads as interrupted."""
        self._writer.post(write_attempt_start, record)

    async def start_call(self, record: CallStart, *, wait: bool = True) -> None:
        """Record a provider call as started, before its request leaves: from the commit on,
        it counts as spent at its reservation (unconfirmed) until ``record_call`` ends it.

        Returns once it, and every write queued before it, is committed; with ``wait``
        false (a call that cannot cost money) it is only queued.
        """
        if wait:
            await self._writer.submit(write_call_start, record)
        else:
            self._writer.post(write_call_start, record)

    async def record_call(self, record: CallRecord) -> None:
        """Queue how a provider call ended, completing its started row (or inserting one if
        it was never started); committed in order, nobody waits."""
        self._writer.post(write_call, record)

    async def finish_attempt(self, record: AttemptEnd) -> None:
        """Queue how an attempt ended, with its output; committed in order, nobody waits."""
        self._writer.post(write_attempt_end, record)

    async def finish_workflow(
        self, run_id: str, workflow_key: str, state: str, ended_at: float
    ) -> None:
        """Record the final state of a workflow instance, committed."""
        await self._writer.submit(
            write_state_change, StateChange(run_id, workflow_key, state, ended_at)
        )

    async def finish_run(self, run_id: str, state: str, ended_at: float) -> None:
        """Record the final state of a run; returns once it and every write before it is
        committed."""
        await self._writer.submit(write_state_change, StateChange(run_id, None, state, ended_at))

    async def flush(self) -> None:
        """Return once every write queued so far is committed; raise what a queued write
        failed with (``LedgerError``, ``RunLeaseLostError``)."""
        await self._writer.submit(write_nothing, None)

    # --- the run lease (see aoe.ledger.lease) ------------------------------------------

    def run_lease(
        self,
        *,
        heartbeat_s: float = lease.HEARTBEAT_S,
        clock: Clock | None = None,
        holder: RunLeaseHolder | None = None,
    ) -> LedgerLease:
        """The lease a run takes in this ledger (``holder``: one this process took already)."""
        return LedgerLease(self._writer, heartbeat_s=heartbeat_s, clock=clock, holder=holder)

    def take_lease_now(
        self, run_id: str, *, heartbeat_s: float = lease.HEARTBEAT_S, clock: Clock | None = None
    ) -> RunLeaseHolder:
        """Take the lease of ``run_id`` synchronously, for ``--resume`` to hold it before it
        reads what to resume; ``RunLeaseHeldError`` if a live process holds it."""
        want = lease.new_holder(run_id, (clock or SystemClock()).wall(), heartbeat_s)
        self._write_now(lambda c: lease.claim(c, want))
        return want

    def release_lease_now(self, holder: RunLeaseHolder) -> None:
        """Give up a lease taken with ``take_lease_now`` that no run will use."""
        self._write_now(lambda c: lease.release(c, holder))

    def lease_holder(self, run_id: str) -> RunLeaseHolder | None:
        """Who holds (or last held, if stale) the lease of ``run_id``."""
        return self._read(lambda c: lease.holder_of(c, run_id))

    def _write_now(self, statement: Callable[[Conn], None]) -> None:
        """One write transaction on the reading connection, in the caller's thread."""
        self._on_reader(self.dialect.begin_write, statement, "write to")

    def _on_reader(self, begin: str, work: Callable[[Conn], T], action: str) -> T:
        """One transaction on the reading connection; a PostgreSQL connection found lost
        before the transaction could commit is opened again, once, and the work redone."""
        with self._read_lock:
            for again in (True, False):
                try:
                    return self._transaction(begin, work)
                except self._backend.errors as exc:
                    if not (again and self._backend.is_disconnect(exc)):
                        raise self._backend.error(exc, action) from exc
                    with contextlib.suppress(*self._backend.errors):
                        self._conn.close()  # type: ignore[attr-defined]
                    try:
                        self._conn = self._backend.connect()
                    except LedgerError:
                        raise self._backend.error(exc, action) from exc
            raise AssertionError("unreachable")

    def _transaction(self, begin: str, work: Callable[[Conn], T]) -> T:
        conn = self._conn
        conn.execute(begin)
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction:  # type: ignore[attr-defined]
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # --- reads: one snapshot each --------------------------------------------------------

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the run ``prefix`` names; unknown or ambiguous: ``UsageError``."""
        return self._read(lambda c: queries.resolve_run_id(c, prefix))

    def _read(self, query: Callable[[Conn], T]) -> T:
        self._writer.drain()  # a read sees every write this ledger was handed before it
        return self._on_reader(self.dialect.begin_read, query, "read")

    def list_runs(self, limit: int = 20) -> list[RunSummary]:
        """The newest runs, newest first."""
        return self._read(lambda c: queries.list_runs(c, limit))

    def get_run(self, run_id: str) -> RunDetail:
        """One run in full; ``run_id`` may be a unique prefix. Unknown: ``UsageError``."""
        return self._read(lambda c: queries.get_run(c, run_id))

    def cost_report(
        self,
        by: CostGroup = "workflow",
        run_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> CostReport:
        """Cost grouped ``by``, calls from ``since`` (inclusive) to ``until`` (exclusive)."""
        return self._read(
            lambda c: queries.cost_report(c, by, run_id, _epoch(since), _epoch(until))
        )

    def resume_state(self, run_id: str, *, lease: RunLeaseHolder | None = None) -> ResumeState:
        """What ``aoe run --resume`` needs to continue ``run_id`` without paying twice;
        ``lease``: the run's lease, taken by the caller (so its last process is gone)."""
        return self._read(lambda c: queries.resume_state(c, run_id, lease))

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Commit everything queued, stop the writer thread, close the connections."""
        thread = self._writer.stop()
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._close_reader()

    def close(self) -> None:
        """Synchronous close, for readers (a pending writer is drained first)."""
        thread = self._writer.stop()
        if thread is not None:
            thread.join()
        self._close_reader()

    def _close_reader(self) -> None:
        with self._read_lock, contextlib.suppress(*self._backend.errors):
            self._conn.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
