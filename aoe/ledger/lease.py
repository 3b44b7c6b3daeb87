"""A run's lease in the ledger: one process runs or resumes a run at a time.

The process that runs a run (new or resumed) holds its lease: a row of ``leases`` with
its pid, host, a random token, since when it holds it, and a heartbeat it renews every
``heartbeat_s`` (5 s by default) from a task of the run. Another process that asks for
the lease while the heartbeat is fresh is refused at once (``RunLeaseHeldError``, exit 2,
naming the holder); once the holder has missed ``MISSED_HEARTBEATS`` heartbeats in a row
(its heartbeat is older than three intervals: it was SIGKILLed, or its machine died), the
lease is stale and the next asker takes it over.

Why a heartbeat and not a pid check: a pid says nothing on another machine sharing the
ledger, and a dead process's pid may be reused. The holder states its own window
(``stale_after_s``) in the row, so a taker with other settings honours it. Heartbeats are
wall-clock stamps: machines that share a ledger must keep their clocks within a fraction
of that window of each other (NTP does).

Taking the lease is one write transaction (SQLite: ``BEGIN IMMEDIATE`` locks the file;
PostgreSQL: the row is inserted if absent, then locked with ``SELECT ... FOR UPDATE``; then
read the row, refuse or write ours), so of two processes asking at once exactly one wins,
on one machine or many. And the lease fences
the ledger: while a ``Ledger`` holds a run's lease, each batch of its writes first checks,
in the same transaction, that the lease is still its own (PostgreSQL: row-locked,
so a takeover waits for the batch to commit); a process whose lease was taken
over (it was paused past the window) can record nothing more, so it cannot record a call
as started, and a call is never sent unless it was recorded as started.

``LedgerLease`` is the ledger's implementation of ``aoe.services.RunLease``, in SQLite or
PostgreSQL.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from aoe.clock import Clock, SystemClock
from aoe.errors import LedgerError, RunLeaseHeldError, RunLeaseLostError
from aoe.ledger.dialect import Conn, dialect_of
from aoe.ledger.records import RunLeaseHolder

if TYPE_CHECKING:
    from aoe.ledger.writer import Writer

#: How often the holder renews its heartbeat, by default (``aoe run --lease-heartbeat``).
HEARTBEAT_S: Final = 5.0
#: Heartbeats a holder may miss in a row (a busy disk, a stalled event loop) before its
#: lease counts as abandoned: the window is this many intervals.
MISSED_HEARTBEATS: Final = 3

_COLUMNS = "token, pid, host, since, heartbeat_at, stale_after_s"


def new_holder(run_id: str, now: float, heartbeat_s: float = HEARTBEAT_S) -> RunLeaseHolder:
    """This process as the would-be holder of ``run_id``'s lease, from ``now``."""
    if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
        raise ValueError(f"a lease heartbeat must be a positive number of seconds: {heartbeat_s}")
    return RunLeaseHolder(
        run_id=run_id,
        token=secrets.token_hex(8),
        pid=os.getpid(),
        host=socket.gethostname(),
        since=now,
        heartbeat_at=now,
        stale_after_s=MISSED_HEARTBEATS * heartbeat_s,
    )


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def holder_of(conn: Conn, run_id: str, lock: str = "") -> RunLeaseHolder | None:
    """Who holds (or last held, if stale) the lease of ``run_id``; None if nobody."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM leases WHERE run_id = ?{lock}", (run_id,)
    ).fetchone()
    return None if row is None else RunLeaseHolder(run_id, *row)


def held_error(held: RunLeaseHolder, now: float) -> RunLeaseHeldError:
    """The error a process gets when ``held`` runs the run: who, where, since when."""
    return RunLeaseHeldError(
        f"run {held.run_id} is already being run by pid {held.pid} on {held.host} since "
        f"{_when(held.since)} (its last heartbeat was {max(now - held.heartbeat_at, 0.0):.1f} s "
        "ago): one process runs or resumes a run at a time",
        where=f"run {held.run_id}",
        hint=f"wait for it to end (`aoe show {held.run_id}`); if that process is gone, its "
        f"lease expires {held.stale_after_s:g} s after its last heartbeat (in "
        f"{max(held.heartbeat_at + held.stale_after_s - now, 0.0):.1f} s) and "
        f"`aoe run --resume {held.run_id}` then takes the run over",
    )


def claim(conn: Conn, want: RunLeaseHolder) -> None:
    """Inside a write transaction: make ``want`` the holder, or raise ``RunLeaseHeldError``.

    ``want.heartbeat_at`` is the claimer's now. A lease held under ``want.token`` already
    (the same process claiming again) is renewed; a stale one is taken over.
    """
    values = (
        want.run_id,
        want.token,
        want.pid,
        want.host,
        want.since,
        want.heartbeat_at,
        want.stale_after_s,
    )
    inserted = conn.execute(
        f"INSERT INTO leases (run_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id) DO NOTHING",
        values,
    ).rowcount
    if inserted:
        return
    held = holder_of(conn, want.run_id, dialect_of(conn).for_update)  # locked until commit
    if held is not None and held.token != want.token and not held.stale(want.heartbeat_at):
        raise held_error(held, want.heartbeat_at)
    conn.execute(
        "UPDATE leases SET token = ?, pid = ?, host = ?, since = ?, heartbeat_at = ?,"
        " stale_after_s = ? WHERE run_id = ?",
        (*values[1:], want.run_id),
    )


def lost_error(conn: Conn, mine: RunLeaseHolder) -> RunLeaseLostError:
    """The error of a holder whose lease another process has taken over (or removed)."""
    now = holder_of(conn, mine.run_id)
    who = "nobody holds it now" if now is None else f"pid {now.pid} on {now.host} holds it now"
    return RunLeaseLostError(
        f"this process lost the lease of run {mine.run_id}: it missed its heartbeats for "
        f"{mine.stale_after_s:g} s and {who}; it stops so that one process runs the run",
        where=f"run {mine.run_id}",
        hint="keep the machine awake and its clock in time while a run runs; "
        f"see `aoe show {mine.run_id}` for what the run did",
    )


def holds(conn: Conn, mine: RunLeaseHolder) -> bool:
    """Whether ``mine`` still holds its lease (the fence every batch of writes checks; on
    PostgreSQL the row stays locked until the batch commits)."""
    row = conn.execute(
        "SELECT 1 FROM leases WHERE run_id = ? AND token = ?" + dialect_of(conn).for_share,
        (mine.run_id, mine.token),
    ).fetchone()
    return row is not None


def renew(conn: Conn, beat: RunLeaseHolder) -> None:
    """Stamp the holder's heartbeat (``beat.heartbeat_at``), or raise ``RunLeaseLostError``."""
    cursor = conn.execute(
        "UPDATE leases SET heartbeat_at = ? WHERE run_id = ? AND token = ?",
        (beat.heartbeat_at, beat.run_id, beat.token),
    )
    if not cursor.rowcount:
        raise lost_error(conn, beat)


def release(conn: Conn, mine: RunLeaseHolder) -> None:
    """Give the lease up (only if it is still ours)."""
    conn.execute("DELETE FROM leases WHERE run_id = ? AND token = ?", (mine.run_id, mine.token))


class LedgerLease:
    """A run's lease kept in this ledger; ``aoe.services.RunLease`` for SQLite and
    PostgreSQL.

    Its writes go through the ledger's writer thread, committed in the same groups as the
    run's records. ``holder`` adopts a lease this process already took (``--resume``
    takes it before reading what to resume, see ``aoe.app.prepare``).
    """

    def __init__(
        self,
        writer: Writer,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Clock | None = None,
        holder: RunLeaseHolder | None = None,
    ) -> None:
        self._writer = writer
        self._clock: Clock = clock or SystemClock()
        self._heartbeat_s = heartbeat_s
        self._adopted = holder
        self._holder: RunLeaseHolder | None = None

    @property
    def heartbeat_s(self) -> float:
        return self._heartbeat_s

    @property
    def holder(self) -> RunLeaseHolder | None:
        """This process's hold on the lease, while it has one."""
        return self._holder

    async def acquire(self, run_id: str) -> None:
        """Take the lease of ``run_id``, or raise ``RunLeaseHeldError`` naming its holder."""
        now = self._clock.wall()
        adopted = self._adopted
        if adopted is not None and adopted.run_id == run_id:
            want = replace(adopted, heartbeat_at=now)
        else:
            want = new_holder(run_id, now, self._heartbeat_s)
        await self._writer.submit(claim, want)
        self._holder = want
        self._writer.fence = want

    async def renew(self) -> None:
        """Stamp the heartbeat; ``RunLeaseLostError`` if another process took the lease."""
        mine = self._holder
        if mine is not None:
            await self._writer.submit(renew, replace(mine, heartbeat_at=self._clock.wall()))

    async def release(self) -> None:
        """Give the lease up (a lease another process took over is left to it); from then on
        this ledger writes unfenced. A ledger that can write nothing more (its writes fail)
        leaves the lease to expire after its window."""
        mine = self._holder
        if mine is None:
            return
        try:
            await self._writer.submit(release, mine)
        except (RunLeaseLostError, LedgerError):
            pass
        finally:
            self._holder = None
            self._writer.fence = None
