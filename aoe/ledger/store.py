"""``Ledger``: the run ledger a run writes to and the commands read from.

Writes go through one writer thread (``aoe.ledger.writer``), committed in the order they
are made; which of them return only once committed, and why, is in the ``aoe.ledger``
docstring. Reads are synchronous, on their own connection, each inside one read
transaction, so they see a consistent snapshot even while another aoe process writes,
and every write this ``Ledger`` was handed before them. Several processes may share one
ledger file (WAL mode, busy timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

from aoe.clock import Clock, SystemClock
from aoe.errors import LedgerError, LedgerUnusableError
from aoe.ledger import lease, queries
from aoe.ledger.errors import connect, ledger_error
from aoe.ledger.files import create_private, private_dir
from aoe.ledger.lease import LedgerLease
from aoe.ledger.migrations import migrate
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


def default_db_path(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path:
    """``AOE_DB`` if set, else ``.aoe/aoe.db`` under ``cwd``; ``--db`` overrides both."""
    configured = environ.get("AOE_DB")
    if configured:
        return Path(configured).expanduser()
    return (cwd if cwd is not None else Path.cwd()) / DEFAULT_RELATIVE_PATH


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class Ledger:
    """An open ledger file. Create with ``Ledger.open``; end with ``aclose`` or ``close``."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, *, busy_timeout_s: float, lock_wait_s: float
    ) -> None:
        self.path = path
        self._conn = conn
        self._read_lock = threading.Lock()
        self._writer = Writer(path, busy_timeout_s=busy_timeout_s, lock_wait_s=lock_wait_s)

    @classmethod
    def open(cls, path: Path, *, busy_timeout_s: float = 5.0, lock_wait_s: float = 60.0) -> Ledger:
        """Open (creating the file and its directories) and migrate the ledger at ``path``.

        ``busy_timeout_s`` is how long one SQLite statement waits for another process's
        lock; ``lock_wait_s`` bounds the retries of a whole write before it fails.
        """
        try:
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
        return cls(path, conn, busy_timeout_s=busy_timeout_s, lock_wait_s=lock_wait_s)

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

    def _write_now(self, statement: Callable[[sqlite3.Connection], None]) -> None:
        """One write transaction on the reading connection, in the caller's thread."""
        with self._read_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    statement(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ledger_error(exc, self.path, "write to") from exc

    # --- reads: one snapshot each --------------------------------------------------------

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the run ``prefix`` names; unknown or ambiguous: ``UsageError``."""
        return self._read(lambda c: queries.resolve_run_id(c, prefix))

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        self._writer.drain()  # a read sees every write this ledger was handed before it
        with self._read_lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    return query(self._conn)
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ledger_error(exc, self.path, "read") from exc

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
        with self._read_lock:
            self._conn.close()

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
