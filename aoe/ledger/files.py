"""Files that hold what runs did, created readable by their owner only, never loosened.

The ledger holds outputs, tool arguments and results, inputs and errors; the reports and
event logs a run writes (``--junit``, ``--events``, ``aoe report --html``) hold much the
same. aoe creates each such file 0600 and the ledger's folder (``.aoe/``) 0700, whatever
the umask; SQLite gives the ledger's ``-wal`` and ``-shm`` files the database's own mode.
A file or folder that already exists keeps the mode it has: aoe never widens, nor
otherwise changes, what a user set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "create_private", "open_private", "private_dir"]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """Make folder ``path`` (and any missing parents); the folder itself 0700 if new."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)


def create_private(path: Path) -> None:
    """Create an empty ``path`` 0600 unless it exists (then it is left as it is)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))


def open_private(path: Path, *, append: bool = False, buffering: int = -1) -> TextIO:
    """``path`` opened for writing UTF-8 text (appending, or from empty), created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, PRIVATE_FILE)
    try:
        return open(descriptor, "a" if append else "w", encoding="utf-8", buffering=buffering)
    except BaseException:
        os.close(descriptor)
        raise
