"""Opening connections, and turning sqlite3 errors into ``LedgerError`` once, with a hint."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from aoe.errors import LedgerError


def _hint(exc: BaseException, path: Path) -> str:
    text = str(exc).lower()
    if path.is_dir():
        return f"{path} is a directory: give --db or AOE_DB a file path, e.g. {path / 'aoe.db'}"
    if "not a database" in text or "malformed" in text:
        return (
            f"{path} is not a usable aoe ledger: point --db or AOE_DB at another file, "
            "or move this one away"
        )
    if "locked" in text or "busy" in text:
        return (
            "another aoe process kept the ledger locked too long; try again, "
            "or give this run its own --db"
        )
    if "readonly" in text or "read-only" in text:
        return f"make {path} and its directory writable, or pass --db with a writable path"
    if "unable to open" in text:
        return f"check that {path.parent} exists and is writable, or pass --db"
    if isinstance(exc, sqlite3.IntegrityError):
        return (
            "the same run, workflow or attempt was recorded twice; "
            "on --resume, use ResumeState.next_attempt for attempt numbers"
        )
    return f"check the file with: sqlite3 {path} 'PRAGMA integrity_check'"


def ledger_error(exc: BaseException, path: Path, action: str) -> LedgerError:
    """The one translation of a sqlite3 (or migration) error into a user-facing error."""
    err = LedgerError(f"cannot {action} the ledger: {exc}", where=str(path), hint=_hint(exc, path))
    err.__cause__ = exc
    return err


def connect(path: Path, *, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, busy timeout.

    ``synchronous=NORMAL`` in WAL mode keeps every committed transaction through a killed
    process (the WAL is written before COMMIT returns); only a power cut may lose the
    last ones, which is the trade SQLite recommends for WAL.
    """
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise ledger_error(exc, path, "open") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _use_wal(conn, busy_timeout_s)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        raise ledger_error(exc, path, "open") from exc
    return conn


def _use_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """Switch the file to WAL (once; it stays so). The switch needs the file to itself and
    SQLite answers "locked" at once rather than waiting, so two processes opening a new
    ledger together retry here for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
