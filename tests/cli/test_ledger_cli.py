"""`aoe runs`, `aoe show` and `aoe cost-report` as a user runs them: exit codes and output."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

import aoe
from aoe.cli import ledger_cmd
from aoe.cli.main import main
from aoe.errors import UsageError
from aoe.ledger import AttemptEnd, AttemptStart, CallRecord, Ledger, RunStart, WorkflowStart

SCHEMAS = Path(aoe.__file__).parent / "schemas"
DAY = datetime(2024, 5, 1, 9, tzinfo=UTC).timestamp()


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


RUN = "20240501-090000-ab12"


def _call(agent: str, cost: str, at: float, *, confirmed: bool = True) -> CallRecord:
    return CallRecord(
        RUN,
        "invoice",
        agent,
        1,
        1,
        "openai",
        "gpt-4o-mini",
        120,
        30,
        0,
        0,
        0,
        Decimal(cost),
        confirmed,
        at,
        at + 0.5,
        "ok" if confirmed else "ProviderTimeout",
        None,
        (),
        900,
    )


async def _populate(db: Path) -> None:
    async with Ledger.open(db) as ledger:
        await ledger.start_run(
            RunStart(RUN, DAY, "aoe run wf.yaml", ("wf.yaml",), False, Decimal("1.0"))
        )
        await ledger.start_workflow(
            WorkflowStart(
                RUN, "invoice", "invoice", "wf.yaml", {"text": "ACME"}, Decimal("0.5"), DAY
            )
        )
        await ledger.start_attempt(
            AttemptStart(
                RUN, "invoice", "extract", 1, "accounts_payable", "openai/gpt-4o-mini", DAY
            )
        )
        await ledger.record_call(_call("extract", "0.0123", DAY))
        await ledger.finish_attempt(
            AttemptEnd(RUN, "invoice", "extract", 1, "COMPLETED", DAY + 1, None, {"total": 12})
        )
        await ledger.start_attempt(
            AttemptStart(RUN, "invoice", "route", 1, "routing", "openai/gpt-4o-mini", DAY + 3600)
        )
        await ledger.record_call(_call("route", "0.000015", DAY + 3600, confirmed=False))
        await ledger.finish_attempt(
            AttemptEnd(RUN, "invoice", "route", 1, "FAILED", DAY + 3700, "timed out")
        )
        await ledger.finish_workflow(RUN, "invoice", "FAILED", DAY + 4000)
        await ledger.finish_run(RUN, "FAILED", DAY + 4000)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    asyncio.run(_populate(path))
    return path


def _aoe(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_table_and_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`aoe runs` lists the run; --json validates against runs.schema.json."""
    code, out, _ = _aoe(capsys, "runs", "--db", str(db))
    assert code == 0
    assert "20240501-090000-ab12" in out
    assert "FAILED" in out
    assert "$0.012315" in out
    code, out, _ = _aoe(capsys, "runs", "--db", str(db), "--json")
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, _schema("runs"))
    assert document["runs"][0]["cost_usd"] == "0.012315"
    assert document["runs"][0]["agents_failed"] == 1


def test_runs_uses_aoe_db(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db, the ledger named by AOE_DB is read."""
    monkeypatch.setenv("AOE_DB", str(db))
    code, out, _ = _aoe(capsys, "runs", "--json")
    assert code == 0
    assert json.loads(out)["runs"][0]["run_id"] == "20240501-090000-ab12"


def test_show_by_prefix(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`aoe show PREFIX` prints agents, attempts, errors and outputs; --json validates."""
    code, out, _ = _aoe(capsys, "show", "20240501", "--db", str(db))
    assert code == 0
    for text in ("extract", "route", "timed out", '"total": 12', "$0.0123"):
        assert text in out
    code, out, _ = _aoe(capsys, "show", "20240501-09", "--db", str(db), "--json")
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, _schema("run-detail"))
    agents = document["workflows"][0]["agents"]
    assert [a["state"] for a in agents] == ["COMPLETED", "FAILED"]
    assert agents[1]["calls"][0]["cost_confirmed"] is False


def test_show_unknown_run_exits_2(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown run id is a usage error (exit 2) with a hint to `aoe runs`."""
    code, _, err = _aoe(capsys, "show", "nope", "--db", str(db))
    assert code == 2
    assert "error: no run 'nope'" in err
    assert "hint: see `aoe runs`" in err


def test_cost_report_formats(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CSV parses with a total line, Markdown is a table, JSON validates; totals are exact."""
    code, out, _ = _aoe(capsys, "cost-report", "--db", str(db), "--by", "agent", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["agent"] for r in rows] == ["extract", "route", ""]
    assert rows[-1]["workflow"] == "total"
    assert Decimal(rows[-1]["cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in rows[:-1])
    assert rows[-1]["unconfirmed_usd"] == "0.000015"

    code, out, _ = _aoe(
        capsys, "cost-report", "--db", str(db), "--by", "model", "--format", "markdown"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("| provider | model | calls |")
    assert lines[1].startswith("|---|---|---:|")
    assert lines[-1].startswith("| **total** |")
    assert "**$0.012315**" in lines[-1]

    code, out, _ = _aoe(
        capsys,
        "cost-report",
        "--db",
        str(db),
        "--by",
        "day",
        "--format",
        "json",
        "--run",
        "20240501",
    )
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, _schema("cost-report"))
    assert document["rows"][0]["keys"] == {"day": "2024-05-01"}
    assert document["total"]["cost_usd"] == "0.012315"

    code, out, _ = _aoe(capsys, "cost-report", "--db", str(db), "--by", "module")
    assert code == 0
    assert "accounts_payable" in out
    assert "routing" in out
    assert "total" in out


def test_cost_report_dates(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since/--until take dates (until inclusive) or ISO times and filter the calls."""
    code, out, _ = _aoe(
        capsys,
        "cost-report",
        "--db",
        str(db),
        "--format",
        "json",
        "--since",
        "2024-05-01",
        "--until",
        "2024-05-01",
    )
    assert code == 0
    assert json.loads(out)["total"]["calls"] == 2
    code, out, _ = _aoe(
        capsys,
        "cost-report",
        "--db",
        str(db),
        "--format",
        "json",
        "--since",
        "2024-05-01T09:30:00Z",
    )
    assert json.loads(out)["total"] == {
        "calls": 1,
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": "0.000015",
        "unconfirmed_usd": "0.000015",
    }
    code, out, _ = _aoe(
        capsys, "cost-report", "--db", str(db), "--format", "json", "--until", "2024-04-30"
    )
    assert json.loads(out)["total"]["calls"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not a date"),
        (["--until", "2024-13-01"], "--until '2024-13-01' is not a date"),
        (["--by", "vendor"], "cannot group by 'vendor'"),
        (["--format", "xml"], "unknown format 'xml'"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "--until is not after --since"),
        (["--run", "nope"], "no run 'nope'"),
    ],
)
def test_cost_report_bad_values_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A bad date, group, format or run is exit 2 with one clear message and a hint."""
    code, out, err = _aoe(capsys, "cost-report", "--db", str(db), *args)
    assert code == 2
    assert out == ""
    assert f"error: {message}" in err
    assert "hint: " in err


def test_commands_on_a_local_app(db: Path) -> None:
    """register() adds the three commands to any Typer app; errors surface as UsageError."""
    app = typer.Typer()
    ledger_cmd.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["cost-report", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("workflow,calls,")
    result = runner.invoke(app, ["runs", "--db", str(db), "--limit", "0"])
    assert result.exit_code == 2  # click's own range check
    result = runner.invoke(app, ["show", "zzz", "--db", str(db)])
    assert isinstance(result.exception, UsageError)
    assert result.exception.exit_code == 2


def test_runs_on_an_empty_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh checkout has no runs: a friendly line, exit 0, and an empty JSON list."""
    code, out, _ = _aoe(capsys, "runs", "--db", str(tmp_path / "x" / "new.db"))
    assert code == 0
    assert "no runs recorded yet" in out
    code, out, _ = _aoe(capsys, "runs", "--db", str(tmp_path / "x" / "new.db"), "--json")
    assert json.loads(out) == {"runs": []}
    assert not (tmp_path / "x").exists()


def test_importing_the_commands_stays_light() -> None:
    """`aoe --help` stays fast: the ledger and Rich load only when a command runs."""
    code = (
        "import sys, aoe.cli.ledger_cmd; "
        "print(sorted(m for m in ('rich', 'sqlite3', 'aoe.ledger') if m in sys.modules))"
    )
    repo = Path(aoe.__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=30,
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "command", [["show", "abc"], ["cost-report"], ["report", "abc", "--html", "x.html"]]
)
def test_reading_commands_never_create_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Asking about runs where no ledger is says so (exit 2) and leaves nothing behind."""
    db = tmp_path / "none" / "aoe.db"
    code, _, err = _aoe(capsys, *command, "--db", str(db))
    assert code == 2
    assert "no ledger" in err
    assert not db.parent.exists()


def test_a_ledger_path_that_is_unusable_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db naming a directory or a file that is not SQLite: exit 2 with a hint."""
    code, _, err = _aoe(capsys, "runs", "--db", str(tmp_path))
    assert code == 2
    assert "is a directory" in err
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    code, _, err = _aoe(capsys, "runs", "--db", str(junk))
    assert code == 2
    assert "not a usable aoe ledger" in err
