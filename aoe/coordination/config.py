"""Where the coordinator is and what its failures are called; no Redis client needed.

``settings_for(config)`` reads ``coordination:`` from aoe.yaml, ``AOE_REDIS_URL`` over it;
no URL means no coordinator (one process, in-memory limits and budgets). This module
imports nothing of redis-py, so a run without a coordinator never needs the ``[redis]``
extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final
from urllib.parse import urlsplit, urlunsplit

from aoe.errors import AoeError
from aoe.spec.models import Config

__all__ = [
    "REDIS_URL_ENV",
    "CoordinationLostError",
    "CoordinationSettings",
    "CoordinationUnavailableError",
    "redact_url",
    "settings_for",
]

REDIS_URL_ENV: Final = "AOE_REDIS_URL"


class CoordinationUnavailableError(AoeError):
    """The configured Redis does not answer at the start of a run (nothing was spent)."""

    exit_code = 2


class CoordinationLostError(AoeError):
    """Redis stopped answering while the run ran: it admitted no call after that, and ends
    with state ``coordination_lost``."""

    exit_code: ClassVar[int] = 5


@dataclass(frozen=True, slots=True)
class CoordinationSettings:
    """A resolved ``coordination:``: the URL (from aoe.yaml or ``AOE_REDIS_URL``) and where
    it came from, for error messages."""

    redis_url: str
    source: str
    permit_ttl_s: float = 30.0

    @property
    def shown_url(self) -> str:
        return redact_url(self.redis_url)


def settings_for(
    config: Config, environ: Mapping[str, str] | None = None
) -> CoordinationSettings | None:
    """The coordinator this run uses, or None (no URL anywhere: one process on its own)."""
    env = os.environ if environ is None else environ
    spec = config.coordination
    url = env.get(REDIS_URL_ENV) or None
    source = REDIS_URL_ENV
    if url is None and spec.redis_url:
        url = spec.redis_url
        source = f"coordination.redis_url in {config.path or 'aoe.yaml'}"
    if url is None:
        return None
    return CoordinationSettings(url, source, spec.permit_ttl_s)


def redact_url(url: str) -> str:
    """The URL with its password (and a username alone, which may be a token) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username if parts.password is not None else None
    auth = f"{user}:***" if user else "***"
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))
