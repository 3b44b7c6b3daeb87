"""The one call a run makes: the Redis-backed services when a coordinator is configured.

``open_fleet`` returns None without a Redis URL (one process: in-memory limits and
budgets, the ledger's lease) and otherwise connects, proving the server answers before a
cent is spent (``CoordinationUnavailableError``, exit 2), and hands back the limiters
(``RedisLimiters``) and budgets (``RedisBudgets``) to use instead of the in-memory ones.
``run_lease`` holds the run's lease in Redis beside the ledger's, so one process on any
machine runs a run. ``on_lost`` tells the run when Redis goes away mid-run, so it stops
admitting calls.

Which shared budgets (``budgets:`` in aoe.yaml) a run draws on: the names in
``AOE_BUDGET_NAME`` (comma-separated), checked against aoe.yaml before anything is spent.

redis-py is the optional extra ``aoe[redis]``: it is imported only once a URL is
configured, so a run without a coordinator never needs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from aoe.clock import Clock
from aoe.coordination.config import (
    CoordinationLostError,
    CoordinationUnavailableError,
    settings_for,
)
from aoe.errors import ConfigError
from aoe.spec.models import Config

if TYPE_CHECKING:
    from aoe.coordination.budgets import RedisBudgets
    from aoe.coordination.connection import Connection
    from aoe.coordination.lease import FleetLease, _Lease
    from aoe.coordination.limiter import RedisLimiters
    from aoe.coordination.wake import Wakeups

__all__ = ["BUDGET_NAME_ENV", "Fleet", "open_fleet"]

#: Shared budgets every call of the run draws on, by name (comma-separated).
BUDGET_NAME_ENV: Final = "AOE_BUDGET_NAME"


@dataclass(slots=True)
class Fleet:
    """The services of a run that shares its limits with other processes through Redis."""

    conn: Connection
    wakeups: Wakeups
    limiters: RedisLimiters
    budgets: RedisBudgets
    clock: Clock

    def run_lease(self, ledger: _Lease, *, heartbeat_s: float) -> FleetLease:
        """The run's lease in Redis, held together with ``ledger``'s (see ``lease``)."""
        from aoe.coordination.lease import FleetLease, RedisRunLease

        return FleetLease(
            RedisRunLease(self.conn, heartbeat_s=heartbeat_s, clock=self.clock), ledger
        )

    def on_lost(self, callback: Callable[[CoordinationLostError], None]) -> None:
        """``callback`` is called once, when Redis first fails to answer mid-run."""
        self.conn.on_lost(callback)

    @property
    def lost(self) -> CoordinationLostError | None:
        return self.conn.lost_error

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # a lost server: nothing left to tidy there
            await self.limiters.aclose()
            await self.budgets.aclose()
            await self.wakeups.aclose()
        await self.conn.aclose()


async def open_fleet(
    config: Config,
    *,
    clock: Clock,
    run_id: str,
    budget_usd: Decimal | None = None,
    spent: Mapping[str, Decimal] | None = None,
    environ: Mapping[str, str] | None = None,
    budget_names: Sequence[str] = (),
) -> Fleet | None:
    """The fleet's services, or None when no Redis is configured (see the module).

    ``budget_usd`` is the run's ``--budget``, ``spent`` what the ledger says the run's
    scopes spent before (``--resume``).
    """
    env = os.environ if environ is None else environ
    from_env = [n.strip() for n in env.get(BUDGET_NAME_ENV, "").split(",") if n.strip()]
    names = list(dict.fromkeys([*budget_names, *from_env]))
    for name in names:
        if name not in config.budgets:
            known = ", ".join(sorted(config.budgets)) or "none"
            raise ConfigError(
                f"no shared budget named {name!r} is declared (declared: {known})",
                hint=f"add `budgets: {{{name}: {{usd: ..., period: month}}}}` to aoe.yaml",
            )
    settings = settings_for(config, env)
    if settings is None:
        if names:
            raise ConfigError(
                f"{BUDGET_NAME_ENV} names shared budgets ({', '.join(names)}) but no Redis "
                "is configured to share them",
                hint="set coordination.redis_url in aoe.yaml or AOE_REDIS_URL",
            )
        return None
    try:  # the optional extra, needed only now that a coordinator is configured
        from aoe.coordination.budgets import RedisBudgets
        from aoe.coordination.connection import connect
        from aoe.coordination.limiter import RedisLimiters
        from aoe.coordination.wake import Wakeups
    except ImportError as exc:
        raise CoordinationUnavailableError(
            f"a Redis coordinator is configured but its client is not installed ({exc.name})",
            where=settings.source,
            hint="pip install 'aoe[redis]'",
        ) from None
    conn = await connect(settings, clock=clock)
    wakeups = Wakeups(conn)
    return Fleet(
        conn,
        wakeups,
        RedisLimiters(conn, config, clock=clock, wakeups=wakeups),
        RedisBudgets(
            conn,
            run_id=run_id,
            run_limit_usd=budget_usd,
            spent=spent,
            named=[config.budgets[n] for n in names],
            declared=config.budgets,
            clock=clock,
            wakeups=wakeups,
        ),
        clock,
    )
