"""The PostgreSQL side of the ledger: URLs, connections (psycopg 3), and its errors.

Imported only when ``--db`` or ``AOE_DB`` is a ``postgresql://`` URL; ``psycopg`` is the
optional extra ``aoe[postgres]``. ``PgConn`` gives psycopg's connection the one method the
ledger's statements use (``execute`` with ``?`` placeholders, see ``aoe.ledger.dialect``).
A URL is never shown with its password (``redact``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aoe.errors import LedgerError, LedgerUnusableError
from aoe.ledger.dialect import POSTGRES, Cursor, Dialect

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql://", "postgres://")


def is_url(target: object) -> bool:
    """Whether a ``--db``/``AOE_DB`` value names a PostgreSQL ledger."""
    return isinstance(target, str) and target.startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL with its password masked (and a user name given alone, which may be a
    token); what every message about a PostgreSQL ledger shows."""
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    if password is None and username is None:
        return urlunsplit(parts._replace(query=_redact_query(parts.query)))
    user = username if password is not None else None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with_port = f"{host}:{parts.port}" if parts.port is not None else host
    netloc = f"{user}:***@{with_port}" if user else f"***@{with_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, _redact_query(parts.query), ""))


def _redact_query(query: str) -> str:
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", query)


def driver() -> Any:
    """The psycopg module, or exit 2 saying how to install it."""
    try:
        import psycopg  # noqa: PLC0415 (the optional extra, only for a PostgreSQL ledger)
    except ImportError as exc:
        raise LedgerUnusableError(
            "a PostgreSQL ledger needs the psycopg driver, which is not installed",
            where="--db / AOE_DB",
            hint="pip install 'aoe[postgres]'",
        ) from exc
    return psycopg


_PLACEHOLDER = re.compile(r"\?")
_translated: dict[str, str] = {}


def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` doubled); cached."""
    found = _translated.get(sql)
    if found is None:
        text = sql.replace("%", "%%")
        if text.startswith("BEGIN IMMEDIATE"):
            text = "BEGIN"
        found = _PLACEHOLDER.sub("%s", text)
        _translated[sql] = found
    return found


class PgConn:
    """A psycopg connection in autocommit mode (the ledger issues BEGIN and COMMIT)."""

    dialect: Dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self.raw = conn
        self.where = where

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self.raw.execute(translate(sql), tuple(parameters))

    @property
    def in_transaction(self) -> bool:
        psycopg = driver()
        return bool(self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def close(self) -> None:
        self.raw.close()


def connect(url: str, *, connect_timeout_s: float = 10.0) -> PgConn:
    """One connection to the ledger at ``url``; ``LedgerError`` naming it without its
    password."""
    psycopg = driver()
    try:
        raw = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, round(connect_timeout_s)),
            application_name="aoe",
        )
    except psycopg.Error as exc:
        raise ledger_error(exc, url, "open") from exc
    return PgConn(raw, redact(url))


def _message(exc: BaseException, url: str) -> str:
    """psycopg's message, with the URL's password taken out should it appear."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text


def is_disconnect(exc: BaseException) -> bool:
    """Whether the connection itself was lost (server gone, backend terminated)."""
    psycopg = driver()
    if isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.InterfaceError)


def is_retriable(exc: BaseException) -> bool:
    """A serialization failure or deadlock: the transaction may simply be tried again."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate in ("40001", "40P01", "55P03")


def ledger_error(exc: BaseException, url: str, action: str) -> LedgerError:
    """The one translation of a psycopg (or migration) error into a user-facing error."""
    where = redact(url)
    if isinstance(exc, RuntimeError):
        hint = "upgrade aoe, or point --db at another ledger"
    elif is_disconnect(exc):
        hint = (
            "check that the PostgreSQL server is up and reachable, and the user, password "
            "and database in --db / AOE_DB"
        )
    elif getattr(exc, "sqlstate", None) == "23505":
        hint = (
            "the same run, workflow or attempt was recorded twice; "
            "on --resume, use ResumeState.next_attempt for attempt numbers"
        )
    else:
        hint = "check the database named by --db / AOE_DB (`aoe db migrate` sets it up)"
    err = LedgerError(f"cannot {action} the ledger: {_message(exc, url)}", where=where, hint=hint)
    err.__cause__ = exc
    return err


class PgBackend:
    """A PostgreSQL ledger, for the writer (``aoe.ledger.writer.Backend``)."""

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.where = redact(url)
        self.errors: tuple[type[BaseException], ...] = (driver().Error,)
        self._connect_timeout_s = connect_timeout_s

    def connect(self) -> PgConn:
        return connect(self.url, connect_timeout_s=self._connect_timeout_s)

    def error(self, exc: BaseException, action: str) -> LedgerError:
        return ledger_error(exc, self.url, action)

    def is_busy(self, exc: BaseException) -> bool:
        return is_retriable(exc)

    def is_disconnect(self, exc: BaseException) -> bool:
        return is_disconnect(exc)
