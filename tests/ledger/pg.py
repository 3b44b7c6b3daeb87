"""A throwaway PostgreSQL cluster from Debian's packages, on a free loopback port.

``.ci/run`` installs the ``postgresql`` package when its binaries are missing; without them
these tests fail, they are never skipped. PostgreSQL refuses to run as root, so as root the
cluster runs as the ``postgres`` system user the package creates, in a temporary directory
it owns. Each test gets its own database (``PgCluster.new_database``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return Path(found[-1]).parent


class PgCluster:
    """One ``postgres`` server in its own data directory; superuser ``aoe``, password
    ``secret-pw`` (so the tests can check the password never shows)."""

    PASSWORD = "secret-pw"

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync  # off for tests: a killed client, not a crashed server, is tested
        self.bindir = _bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="aoe-pg-"))
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://aoe:{self.PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.directory / "data"
        pwfile = self.directory / "pw"
        pwfile.write_text(self.PASSWORD)
        if self._as:
            user = pwd.getpwnam("postgres")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        subprocess.run(
            [*self._as, str(self.bindir / "initdb"), "-D", str(data), "-U", "aoe",
             "--pwfile", str(pwfile), "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.process = subprocess.Popen(
            [*self._as, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1",
             "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def terminate_backends(self, database_url: str) -> int:
        """``pg_terminate_backend`` every other connection to the database of the URL."""
        name = database_url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        return len(rows)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
