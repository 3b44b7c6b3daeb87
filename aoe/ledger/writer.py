"""The ledger's writer thread: writes that never block the event loop.

Coroutines put ``(statement, record, future)`` on a queue: ``submit`` gives the future to
await, ``post`` queues a write nobody waits for. One thread with its own connection takes
everything that has arrived, applies it in a single ``BEGIN IMMEDIATE`` transaction and
commits (only if a write fails does it apply the batch again, each write in its own
savepoint, so that one bad awaited write fails alone). Only after the commit are the
futures resolved: when ``await ledger.start_call(...)`` returns, that row and every row
queued before it are in the database and survive the process being killed. Grouping what
arrives together is what keeps the cost per call low under load; nothing lingers to make
groups larger: a commit of this thread takes a few tens of microseconds, and whatever
arrives meanwhile makes the next group.

A posted write that fails (a record that cannot be stored, a lost lease, a lock held
past ``lock_wait_s``) fails every write after it, so that a commit never claims to cover
a write that was lost: ``failure`` holds its error, and every later write raises it.

``SQLITE_BUSY`` (another aoe process holds the write lock) is waited out by
``busy_timeout`` and then retried with a short backoff until ``lock_wait_s`` has passed;
so is a PostgreSQL deadlock or serialization failure. A PostgreSQL connection lost before
the batch's COMMIT was sent (the server rolled the batch back) is opened again and the
batch retried, until ``lock_wait_s``; one lost while the COMMIT was under way fails the
batch with an error saying so (it may or may not be recorded, so it is never sent again:
nothing is recorded twice). The SQL is the same for both databases
(``aoe.ledger.dialect``); ``Backend`` is what differs in opening and failing.

While ``fence`` names a run lease this process holds (``aoe.ledger.lease``), every batch
first checks, inside its transaction, that the lease is still its own; if another process
has taken it over, the whole batch fails with ``RunLeaseLostError`` and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from aoe.cost.money import optional_text, to_pusd
from aoe.errors import AoeError, LedgerError, RunLeaseLostError
from aoe.ledger.dialect import Conn, dialect_of
from aoe.ledger.errors import connect, ledger_error
from aoe.ledger.lease import holds, lost_error
from aoe.ledger.records import (
    ATTEMPT_STATES,
    CALL_INTERRUPTED,
    CALL_STARTED,
    AttemptEnd,
    AttemptStart,
    CallRecord,
    CallStart,
    RunLeaseHolder,
    RunStart,
    WorkflowStart,
)
from aoe.spec.models import thaw

Statement = Callable[[Conn, Any], None]
MAX_BATCH: Final = 1000
#: How long the writer keeps a batch open for more writes while nobody waits for any of
#: its writes (an awaited write closes it at once): more writes per transaction, and no
#: commit is later for it than this.
LINGER_S: Final = 0.002


def _json(value: Any) -> str:
    return json.dumps(thaw(value), ensure_ascii=False, separators=(",", ":"), default=str)


# --- the statements: one function per write --------------------------------------------


def write_run_start(conn: Conn, r: RunStart) -> None:
    """Insert a run, or reopen it (``--resume``): state RUNNING, owned by this process.

    Reopening, the calls an earlier process left in flight (started, never ended) are
    marked ``interrupted``: they stay spent at their reservations, unconfirmed, and no
    longer read as in flight while this process runs.
    """
    conn.execute(
        "INSERT INTO runs (id, started_at, ended_at, state, command, files, simulate,"
        " budget_usd, pid, host) VALUES (?, ?, NULL, 'RUNNING', ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET ended_at = NULL, state = 'RUNNING',"
        " budget_usd = excluded.budget_usd, pid = excluded.pid, host = excluded.host",
        (
            r.run_id,
            r.started_at,
            r.command,
            _json(list(r.files)),
            int(r.simulate),
            optional_text(r.budget_usd),
            os.getpid(),
            socket.gethostname(),
        ),
    )
    conn.execute(
        "UPDATE calls SET status = ? WHERE run_id = ? AND ended_at IS NULL AND status = ?",
        (CALL_INTERRUPTED, r.run_id, CALL_STARTED),
    )


def write_workflow_start(conn: Conn, w: WorkflowStart) -> None:
    """Insert a workflow instance, or reopen it on resume."""
    conn.execute(
        "INSERT INTO workflows (run_id, key, name, path, inputs, budget_usd, state,"
        " started_at, ended_at, graph_json) VALUES (?, ?, ?, ?, ?, ?, 'RUNNING', ?, NULL, ?)"
        " ON CONFLICT (run_id, key) DO UPDATE SET state = 'RUNNING', ended_at = NULL",
        (
            w.run_id,
            w.workflow_key,
            w.name,
            w.path,
            _json(w.inputs),
            optional_text(w.budget_usd),
            w.started_at,
            _json({agent: list(deps) for agent, deps in w.needs.items()}),
        ),
    )


def write_attempt_start(conn: Conn, a: AttemptStart) -> None:
    """Insert an attempt; until it has an end it reads as running, then as interrupted."""
    conn.execute(
        "INSERT INTO attempts (run_id, workflow_key, agent_id, attempt, module, model,"
        " started_at, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            a.run_id,
            a.workflow_key,
            a.agent_id,
            a.attempt,
            a.module,
            a.model,
            a.started_at,
            a.fingerprint,
        ),
    )


def write_call_start(conn: Conn, s: CallStart) -> None:
    """Insert a call whose request is about to leave: spent at its reservation, unconfirmed,
    with no end, until ``write_call`` completes the row."""
    conn.execute(
        "INSERT INTO calls (run_id, workflow_key, agent_id, attempt, turn, provider, model,"
        " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
        " reasoning_tokens, cost_pusd, cost_confirmed, started_at, ended_at, status,"
        " request_id, tool_calls, estimate_tokens)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, ?, 0, ?, NULL, ?, NULL, '[]', ?)",
        (
            s.run_id,
            s.workflow_key,
            s.agent_id,
            s.attempt,
            s.turn,
            s.provider,
            s.model,
            to_pusd(s.reserved_usd),
            s.started_at,
            CALL_STARTED,
            s.reserved_tokens,
        ),
    )


#: Completes a started row: only what the end adds, so the indexes on the call's key, its
#: model and its start time are left alone.
_COMPLETE_STARTED = (
    "UPDATE calls SET input_tokens = ?, output_tokens = ?, cache_read_tokens = ?,"
    " cache_write_tokens = ?, reasoning_tokens = ?, cost_pusd = ?, cost_confirmed = ?,"
    " ended_at = ?, status = ?, request_id = ?, tool_calls = ?, estimate_tokens = ?"
    " WHERE id = (SELECT id FROM calls WHERE run_id = ? AND workflow_key = ? AND agent_id = ?"
    " AND attempt = ? AND turn = ? AND ended_at IS NULL AND status = ? ORDER BY id LIMIT 1)"
)


def write_call(conn: Conn, c: CallRecord) -> None:
    """Complete the call's started row with how it ended and its exact cost (one row per
    call); a call that was never recorded as started is inserted whole."""
    end = (
        c.input_tokens,
        c.output_tokens,
        c.cache_read_tokens,
        c.cache_write_tokens,
        c.reasoning_tokens,
        to_pusd(c.cost_usd),
        int(c.cost_confirmed),
        c.ended_at,
        c.status,
        c.request_id,
        _json(c.tool_calls) if c.tool_calls else "[]",
        c.estimate_tokens,
    )
    key = (c.run_id, c.workflow_key, c.agent_id, c.attempt, c.turn)
    if conn.execute(_COMPLETE_STARTED, (*end, *key, CALL_STARTED)).rowcount:
        return
    conn.execute(
        "INSERT INTO calls (run_id, workflow_key, agent_id, attempt, turn, provider, model,"
        " started_at, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
        " reasoning_tokens, cost_pusd, cost_confirmed, ended_at, status, request_id,"
        " tool_calls, estimate_tokens)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*key, c.provider, c.model, c.started_at, *end),
    )


def write_attempt_end(conn: Conn, e: AttemptEnd) -> None:
    """End an attempt (creating it if it never started, e.g. SKIPPED) and keep its output."""
    if e.state not in ATTEMPT_STATES:
        raise ValueError(f"unknown attempt state {e.state!r}")
    conn.execute(
        "INSERT INTO attempts (run_id, workflow_key, agent_id, attempt, module, model,"
        " started_at, ended_at, state, error) VALUES (?, ?, ?, ?, NULL, '', ?, ?, ?, ?)"
        " ON CONFLICT (run_id, workflow_key, agent_id, attempt) DO UPDATE SET"
        " ended_at = excluded.ended_at, state = excluded.state, error = excluded.error",
        (e.run_id, e.workflow_key, e.agent_id, e.attempt, e.ended_at, e.ended_at, e.state, e.error),
    )
    if e.output is not None or e.state == "COMPLETED":
        conn.execute(
            "INSERT INTO outputs (run_id, workflow_key, agent_id, attempt, output)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, workflow_key, agent_id, attempt)"
            " DO UPDATE SET output = excluded.output",
            (e.run_id, e.workflow_key, e.agent_id, e.attempt, _json(e.output)),
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """The end of a workflow instance (``workflow_key`` set) or of a run."""

    run_id: str
    workflow_key: str | None
    state: str
    ended_at: float


def write_state_change(conn: Conn, s: StateChange) -> None:
    """Set the final state of a workflow instance or a run."""
    if s.workflow_key is None:
        conn.execute(
            "UPDATE runs SET state = ?, ended_at = ? WHERE id = ?",
            (s.state, s.ended_at, s.run_id),
        )
    else:
        conn.execute(
            "UPDATE workflows SET state = ?, ended_at = ? WHERE run_id = ? AND key = ?",
            (s.state, s.ended_at, s.run_id, s.workflow_key),
        )


# --- the thread ------------------------------------------------------------------------

#: One write: its statement and record, and who waits for its commit (a future and its
#: loop), or nobody (``post``).
_Item = tuple[Statement, Any, "asyncio.Future[None] | None", "asyncio.AbstractEventLoop | None"]
_STOP: Final = object()


def write_nothing(conn: Conn, record: Any) -> None:
    """A write that writes nothing: awaited, it returns once everything before it is
    committed (``Ledger.flush``); with a ``threading.Event`` as its record, the writer
    sets the event then (``Writer.drain``)."""


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class Backend(Protocol):
    """How the writer opens its connection and reads the driver's errors."""

    #: where the ledger is, for messages (a file path, or a URL without its password)
    where: str
    #: the driver's base error class(es)
    errors: tuple[type[BaseException], ...]

    def connect(self) -> Conn: ...

    def error(self, exc: BaseException, action: str) -> LedgerError: ...

    def is_busy(self, exc: BaseException) -> bool:
        """Another writer holds what this one needs: wait and retry."""
        ...

    def is_disconnect(self, exc: BaseException) -> bool:
        """The connection is gone: open it again (if COMMIT was not under way) and retry."""
        ...


class SqliteBackend:
    """A ledger file."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.where = str(path)
        self._busy_timeout_s = busy_timeout_s

    def connect(self) -> Conn:
        return connect(self.path, busy_timeout_s=self._busy_timeout_s)

    def error(self, exc: BaseException, action: str) -> LedgerError:
        return ledger_error(exc, self.path, action)

    def is_busy(self, exc: BaseException) -> bool:
        return _is_busy(exc)

    def is_disconnect(self, exc: BaseException) -> bool:
        return False


class _CommitUnknown(Exception):
    """The connection was lost while COMMIT was under way: the batch may be recorded."""


class _Busy(Exception):
    """The write lock could not be taken or kept; the whole batch is tried again."""


def _settle(results: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
    for fut, exc in results:
        if fut.done():  # the caller was cancelled; the write happened anyway
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


def _again(first: BaseException) -> AoeError:
    """What every write after a failed posted write raises: its error, saying that nothing
    after it is recorded (a lost lease stays a ``RunLeaseLostError``)."""
    kind = RunLeaseLostError if isinstance(first, RunLeaseLostError) else LedgerError
    if isinstance(first, AoeError):
        return kind(
            f"{first.message}; nothing after it is recorded", where=first.where, hint=first.hint
        )
    return kind(f"the ledger stopped recording: {first}")


class Writer:
    """One thread and one connection that apply every write, in arrival order.

    ``submit`` queues a write and gives a future that resolves once it is committed;
    ``post`` queues one that nobody waits for. Writes are committed in the order they
    were queued, a batch at a time, so a write's commit is also the commit of every write
    queued before it. A posted write that fails breaks that chain for good: it and every
    write after it fail with its error (``failure``), and nothing after it is committed.
    """

    def __init__(self, backend: Backend, *, lock_wait_s: float) -> None:
        self._backend = backend
        self._lock_wait_s = lock_wait_s
        self._conn: Conn | None = None
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._broken: LedgerError | None = None
        self._closed = False
        #: The first posted write that failed; from then on every write fails.
        self.failure: BaseException | None = None
        #: How long a batch that nobody waits for stays open for more writes.
        self.linger_s = LINGER_S
        self._urgent = threading.Event()  # set by a write that is waited for
        #: The run lease this ledger's writes are fenced by (set and cleared by its lease).
        self.fence: RunLeaseHolder | None = None

    def _check(self) -> None:
        if self._closed:
            raise LedgerError(
                "the ledger is closed",
                where=self._backend.where,
                hint="open the ledger again before writing",
            )
        if self._broken is not None:
            raise self._broken
        if self.failure is not None:
            raise _again(self.failure)
        if self._thread is None:
            self._start()

    def submit(self, statement: Statement, record: Any) -> asyncio.Future[None]:
        """Queue a write; the returned future resolves once it (and every write queued
        before it) is committed."""
        self._check()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((statement, record, fut, loop))
        self._urgent.set()
        return fut

    def post(self, statement: Statement, record: Any) -> None:
        """Queue a write that nobody waits for: it is committed with the next batch (the
        thread takes everything queued), and at the latest with the next awaited write."""
        self._check()
        self._queue.put((statement, record, None, None))

    def drain(self) -> None:
        """Block the calling thread until every write queued so far has been applied."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        applied = threading.Event()
        self._queue.put((write_nothing, applied, None, None))
        self._urgent.set()
        while not applied.wait(0.05) and thread.is_alive():
            pass

    def stop(self) -> threading.Thread | None:
        """Let the thread finish what is queued, then end; returns it for joining."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._urgent.set()
        return self._thread

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aoe-ledger-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        try:
            self._conn = self._backend.connect()
        except LedgerError as exc:
            self._broken = exc
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Item] = [first]  # type: ignore[list-item]
            stopping = self._gather(batch)
            if self.failure is not None:
                errors: list[BaseException | None] = [_again(self.failure)] * len(batch)
            else:
                errors = self._commit(batch)
                self._note_failure(batch, errors)
            self._resolve(batch, errors)
        if self._conn is not None:
            with contextlib.suppress(*self._backend.errors):
                self._conn.close()  # type: ignore[attr-defined]

    def _gather(self, batch: list[_Item]) -> bool:
        """Add to ``batch`` what is queued. While nobody waits for any of it, then wait up
        to ``linger_s`` for more (cut short by a write that is waited for), so that one
        transaction holds more writes. Returns whether the writer was told to stop."""
        self._urgent.clear()  # a write waited for from now on sets it; earlier ones are queued
        stopping, waited_for = self._take_queued(batch)
        if stopping or waited_for or self.linger_s <= 0 or len(batch) >= MAX_BATCH:
            return stopping
        self._urgent.wait(self.linger_s)
        return self._take_queued(batch)[0]

    def _take_queued(self, batch: list[_Item]) -> tuple[bool, bool]:
        """Move what is queued into ``batch``: (told to stop, someone waits for the batch)."""
        waited_for = any(fut is not None for _, _, fut, _ in batch)
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return True, waited_for
            batch.append(item)  # type: ignore[arg-type]
            waited_for = waited_for or item[2] is not None  # type: ignore[index]
        return False, waited_for

    def _note_failure(self, batch: list[_Item], errors: list[BaseException | None]) -> None:
        """Remember the first posted write that failed: the chain of commits ends there."""
        for (_, _, fut, _), err in zip(batch, errors, strict=True):
            if err is not None and fut is None:
                self.failure = err
                return

    def _commit(self, batch: list[_Item]) -> list[BaseException | None]:
        backend = self._backend
        if self._broken is not None:  # the first connection could not be made
            return [self._broken] * len(batch)
        deadline = time.monotonic() + self._lock_wait_s
        delay = 0.005
        while True:
            try:
                if self._conn is None:
                    self._conn = backend.connect()
                return self._apply(self._conn, batch)
            except _CommitUnknown as lost:
                self._conn = None
                err = backend.error(lost.__cause__ or lost, "commit to")
                err.message += (
                    "; the connection was lost during COMMIT, so whether this batch of writes "
                    "was recorded is unknown, and it is not sent again"
                )
                return [err] * len(batch)
            except _Busy as busy:
                if time.monotonic() >= deadline:
                    err = backend.error(busy.__cause__ or busy, "write to")
                    return [err] * len(batch)
                if busy.__cause__ is not None and backend.is_disconnect(busy.__cause__):
                    if self._conn is not None:
                        with contextlib.suppress(*backend.errors):
                            self._conn.close()  # type: ignore[attr-defined]
                    self._conn = None  # rolled back by the server: open again and retry
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except LedgerError as exc:  # could not connect again
                if time.monotonic() >= deadline:
                    return [exc] * len(batch)
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except backend.errors as exc:
                return [backend.error(exc, "write to")] * len(batch)

    def _retry(self, exc: BaseException) -> bool:
        return self._backend.is_busy(exc) or self._backend.is_disconnect(exc)

    def _apply(self, conn: Conn, batch: list[_Item]) -> list[BaseException | None]:
        """One transaction for the batch: every write at once, and only if one fails, each
        in its own savepoint (so one bad write fails alone)."""
        try:
            lost = self._begin(conn)
            if lost is not None:
                return [lost] * len(batch)
            try:
                for statement, record, _, _ in batch:
                    statement(conn, record)
            except Exception as exc:  # a bad write: find it, and write the others
                if isinstance(exc, self._backend.errors) and self._retry(exc):
                    raise
                conn.execute("ROLLBACK")
                lost = self._begin(conn)
                if lost is not None:
                    return [lost] * len(batch)
                errors = self._apply_each(conn, batch)
            else:
                errors = [None] * len(batch)
            try:
                conn.execute("COMMIT")
            except self._backend.errors as exc:
                if self._backend.is_disconnect(exc):
                    raise _CommitUnknown() from exc
                raise
        except self._backend.errors as exc:
            if self._retry(exc):
                raise _Busy() from exc
            if conn.in_transaction:  # type: ignore[attr-defined]
                conn.execute("ROLLBACK")
            raise
        return errors

    def _begin(self, conn: Conn) -> BaseException | None:
        """Open the batch's write transaction; if this process lost its run lease, end it
        and return the error every write of the batch fails with."""
        conn.execute(dialect_of(conn).begin_write)
        fence = self.fence
        if fence is not None and not holds(conn, fence):
            lost = lost_error(conn, fence)
            conn.execute("COMMIT")
            return lost
        return None

    def _apply_each(self, conn: Conn, batch: list[_Item]) -> list[BaseException | None]:
        """The batch again, each write in its own savepoint. An awaited write that fails
        fails alone; a posted one that fails ends the batch: nothing after it is written."""
        errors: list[BaseException | None] = []
        for statement, record, fut, _ in batch:
            conn.execute("SAVEPOINT w")
            try:
                statement(conn, record)
            except self._backend.errors as exc:
                if self._retry(exc):
                    raise
                conn.execute("ROLLBACK TO w")
                errors.append(self._backend.error(exc, "write to"))
            except AoeError as exc:  # a statement's own refusal (a lease held elsewhere)
                conn.execute("ROLLBACK TO w")
                errors.append(exc)
            except Exception as exc:  # a bad record fails alone; the thread must live on
                conn.execute("ROLLBACK TO w")
                errors.append(
                    LedgerError(
                        f"cannot record {type(record).__name__}: {type(exc).__name__}: {exc}",
                        where=self._backend.where,
                        hint="only JSON-able values and Decimal money can be stored",
                    )
                )
            else:
                errors.append(None)
            conn.execute("RELEASE w")
            if fut is None and errors[-1] is not None:
                rest = len(batch) - len(errors)
                errors.extend([_again(errors[-1])] * rest)
                break
        return errors

    @staticmethod
    def _resolve(batch: list[_Item], errors: list[BaseException | None]) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], BaseException | None]]
        ] = {}
        for (statement, record, fut, loop), err in zip(batch, errors, strict=True):
            if fut is not None and loop is not None:
                by_loop.setdefault(loop, []).append((fut, err))
            elif statement is write_nothing and record is not None:
                record.set()
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, results)
