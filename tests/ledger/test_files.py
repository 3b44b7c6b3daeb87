"""What runs leave on disk is its owner's only: the ledger, its folder, reports, events."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aoe.ledger import Ledger
from ledger.factory import run_start


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask a user can have: every mode comes from aoe alone."""
    before = os.umask(0)
    yield
    os.umask(before)


async def test_a_new_ledger_its_wal_and_its_folder_are_private_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    """.aoe/ is 0700 and aoe.db, with its -wal and -shm files, 0600, even under umask 0."""
    path = tmp_path / ".aoe" / "aoe.db"
    ledger = Ledger.open(path)
    try:
        await ledger.start_run(run_start("r1"))
        assert _mode(path.parent) == 0o700
        for name in ("aoe.db", "aoe.db-wal", "aoe.db-shm"):
            assert _mode(path.parent / name) == 0o600, name
    finally:
        await ledger.aclose()


async def test_an_existing_ledger_and_folder_keep_the_modes_they_have(
    tmp_path: Path, open_umask: None
) -> None:
    """aoe never changes the mode of a folder or ledger that exists (tighter or not)."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o750)
    path = folder / "aoe.db"
    path.touch(mode=0o640)
    tight = tmp_path / "tight"
    tight.mkdir(mode=0o700)
    (tight / "aoe.db").touch(mode=0o400 | 0o200)
    for db in (path, tight / "aoe.db"):
        ledger = Ledger.open(db)
        await ledger.start_run(run_start("r1"))
        await ledger.aclose()
    assert (_mode(folder), _mode(path)) == (0o750, 0o640)
    assert (_mode(tight), _mode(tight / "aoe.db")) == (0o700, 0o600)


WORKFLOW = "version: 1\nname: files\nagents:\n  a: {model: sim/x, prompt: hi}\n"


def _aoe(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": "1"}
    env.pop("AOE_DB", None)  # the default place: .aoe/aoe.db here
    return subprocess.run(
        [sys.executable, "-m", "aoe", *args],
        cwd=cwd, env=env, umask=0, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_reports_and_event_logs_are_created_private(tmp_path: Path) -> None:
    """Under umask 0, `aoe run --junit --events` and `aoe report --html` create 0600 files,
    and the default ledger folder .aoe/ 0700."""
    (tmp_path / "wf.yaml").write_text(WORKFLOW)
    done = _aoe(["run", "wf.yaml", "--junit", "out/junit.xml", "--events", "out/events.jsonl",
                 "--json"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    done = _aoe(["report", run_id, "--html", "out/report.html"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert _mode(tmp_path / ".aoe") == 0o700
    assert _mode(tmp_path / ".aoe" / "aoe.db") == 0o600
    for name in ("junit.xml", "events.jsonl", "report.html"):
        assert _mode(tmp_path / "out" / name) == 0o600, name
    junit = (tmp_path / "out" / "junit.xml").read_bytes()
    assert junit.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<testsuites")
