"""A run's lease in Redis: one process on any machine runs or resumes a run at a time.

The semantics are the ledger's lease (``aoe.ledger.lease``): the holder renews a heartbeat
every ``heartbeat_s``; another process asking while it is fresh is refused at once
(``RunLeaseHeldError``, exit 2, naming the holder's pid and host); once the holder missed
``MISSED_HEARTBEATS`` heartbeats in a row the lease is stale and the next asker takes it
over; the old holder's next renewal is ``RunLeaseLostError``, and the run stops.

Kept in Redis, the lease is seen by every machine, not only those sharing a ledger file,
and its heartbeats are stamped with the server's ``TIME``: hosts whose clocks disagree
still agree on when a lease went stale. Each step is one script (``lua/lease.lua``), so of
two processes asking at once exactly one wins.

``FleetLease`` holds this lease *and* the run's ledger lease (which fences the ledger's
writes): Redis first, so a second machine is refused before it touches its ledger.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Final, Protocol

from redis.exceptions import RedisError

from aoe.clock import Clock
from aoe.coordination.connection import KEY_PREFIX, Connection, CoordinationLostError
from aoe.coordination.scripts import lua_source
from aoe.errors import RunLeaseLostError
from aoe.ledger.lease import HEARTBEAT_S, MISSED_HEARTBEATS, held_error
from aoe.ledger.records import RunLeaseHolder

__all__ = ["FleetLease", "RedisRunLease"]

_LOST: Final = "this process lost the lease of run {run}: it missed its heartbeats for {window:g} s"


class RedisRunLease:
    """``aoe.services.RunLease`` kept in Redis (see the module)."""

    def __init__(
        self,
        conn: Connection,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Clock,
        server_time: bool = True,
    ) -> None:
        if not (math.isfinite(heartbeat_s) and heartbeat_s > 0):
            raise ValueError(f"a lease heartbeat must be positive seconds: {heartbeat_s}")
        self._conn = conn
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._server_time = server_time
        self._script = conn.client.register_script(lua_source("lease"))
        self._token = secrets.token_hex(8)
        self._run_id: str | None = None

    @property
    def heartbeat_s(self) -> float:
        return self._heartbeat_s

    async def acquire(self, run_id: str) -> None:
        """Take the lease of ``run_id``, or raise ``RunLeaseHeldError`` naming its holder."""
        stale_after = MISSED_HEARTBEATS * self._heartbeat_s
        reply = await self._run(
            "acquire", run_id, str(os.getpid()), socket.gethostname(), repr(stale_after)
        )
        if reply[0] == "held":
            raise held_error(self._holder(run_id, reply), float(reply[6]))
        self._run_id = run_id

    async def renew(self) -> None:
        """Stamp the heartbeat; ``RunLeaseLostError`` if another process took the lease."""
        run_id = self._run_id
        if run_id is None:
            return
        try:
            reply = await self._run("renew", run_id)
        except CoordinationLostError:
            return  # the run was told (Connection.on_lost) and is stopping
        if reply[0] == "lost":
            self._run_id = None
            who = (
                f"pid {reply[1]} on {reply[2]} holds it now" if reply[1] else "nobody holds it now"
            )
            raise RunLeaseLostError(
                _LOST.format(run=run_id, window=MISSED_HEARTBEATS * self._heartbeat_s)
                + f" and {who}; it stops so that one process runs the run",
                where=f"run {run_id}",
                hint="keep the machine awake and its link to Redis up while a run runs; "
                f"see `aoe show {run_id}` for what the run did",
            )

    async def release(self) -> None:
        """Give the lease up (a lease another process took over is left to it)."""
        run_id, self._run_id = self._run_id, None
        if run_id is not None:
            try:
                await self._run("release", run_id)
            except RunLeaseLostError:
                pass
            except Exception:  # a lost server: the lease goes stale by itself
                if self._conn.lost_error is None:
                    raise

    async def _run(self, op: str, run_id: str, *args: str) -> tuple[str, ...]:
        if self._conn.lost_error is not None:
            raise self._conn.lost_error
        now = "" if self._server_time else repr(self._clock.wall())
        try:
            raw: Sequence[bytes] = await self._script(
                keys=[f"{KEY_PREFIX}:lease:{run_id}"], args=[op, now, self._token, *args]
            )
        except (RedisError, OSError) as exc:
            raise self._conn.lost(exc, f"{op} the lease of run {run_id}") from exc
        return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)

    def _holder(self, run_id: str, reply: tuple[str, ...]) -> RunLeaseHolder:
        return RunLeaseHolder(
            run_id=run_id,
            token="",
            pid=int(reply[1]),
            host=reply[2],
            since=float(reply[3]),
            heartbeat_at=float(reply[4]),
            stale_after_s=float(reply[5]),
        )


class _Lease(Protocol):
    """``aoe.services.RunLease`` (a floor above this one, so named here by shape)."""

    @property
    def heartbeat_s(self) -> float: ...

    async def acquire(self, run_id: str) -> None: ...

    async def renew(self) -> None: ...

    async def release(self) -> None: ...


class FleetLease:
    """The Redis lease and the ledger's, taken in that order and released in reverse."""

    def __init__(self, fleet: RedisRunLease, ledger: _Lease) -> None:
        self._fleet = fleet
        self._ledger = ledger

    @property
    def heartbeat_s(self) -> float:
        return min(self._fleet.heartbeat_s, self._ledger.heartbeat_s)

    async def acquire(self, run_id: str) -> None:
        await self._fleet.acquire(run_id)
        try:
            await self._ledger.acquire(run_id)
        except BaseException:
            await self._fleet.release()
            raise

    async def renew(self) -> None:
        await self._fleet.renew()
        await self._ledger.renew()

    async def release(self) -> None:
        try:
            await self._ledger.release()
        finally:
            await self._fleet.release()
