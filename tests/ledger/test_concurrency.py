"""Two aoe processes sharing one ledger file at the same time (two CI jobs on one runner)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aoe.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("writer_proc.py")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_two_processes_write_one_ledger_at_once(tmp_path: Path) -> None:
    """Both processes succeed and every call of both is recorded."""
    db = tmp_path / "shared.db"
    ready = tmp_path / "ready"
    ready.mkdir()
    calls = 400
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                "concurrent",
                str(db),
                run_id,
                str(calls),
                str(ready),
                "2",
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run_id in ("job-a", "job-b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    with Ledger.open(db) as ledger:
        runs = {r.run_id: r for r in ledger.list_runs()}
        assert set(runs) == {"job-a", "job-b"}
        assert all(r.state == "COMPLETED" for r in runs.values())
        for run_id in runs:
            assert ledger.cost_report("workflow", run_id=run_id).total.calls == calls
        assert ledger.cost_report("workflow").total.calls == 2 * calls
