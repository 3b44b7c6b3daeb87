"""`aoe runs`, `show`, `cost-report` and `report` on a run killed with a call in flight."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import aoe
from aoe.cli.main import main
from tests.app.test_resume import A_COST, LOST, _crashed_run, _workflow

SCHEMAS = Path(aoe.__file__).parent / "schemas"


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def _aoe(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


async def test_a_call_lost_in_flight_is_shown_as_unconfirmed_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lost call's reservation is in every total as unconfirmed, `show` says a call was
    lost in flight, and each JSON document still validates against its schema."""
    db = tmp_path / "aoe.db"
    await _crashed_run(db, _workflow(tmp_path))
    ledger = ("--db", str(db))

    runs = json.loads(_aoe(capsys, "runs", "--json", *ledger))
    jsonschema.validate(runs, _schema("runs"))
    (run,) = runs["runs"]
    assert (run["state"], run["in_flight_calls"]) == ("INTERRUPTED", 1)
    assert Decimal(run["unconfirmed_usd"]) == LOST
    assert Decimal(run["cost_usd"]) == A_COST + LOST

    detail = json.loads(_aoe(capsys, "show", "run-1", "--json", *ledger))
    jsonschema.validate(detail, _schema("run-detail"))
    b = next(a for a in detail["workflows"][0]["agents"] if a["agent_id"] == "b")
    (call,) = b["calls"]
    assert (call["status"], call["ended_at"], call["latency_s"]) == ("interrupted", None, None)
    assert (Decimal(call["cost_usd"]), call["cost_confirmed"]) == (LOST, False)
    assert "(unconfirmed $0.3000, 1 call lost in flight)" in _aoe(capsys, "show", "run-1", *ledger)

    report = json.loads(
        _aoe(capsys, "cost-report", "--run", "run-1", "--by", "agent", "--format", "json", *ledger)
    )
    jsonschema.validate(report, _schema("cost-report"))
    rows = {r["keys"]["agent"]: r for r in report["rows"]}
    assert Decimal(rows["b"]["unconfirmed_usd"]) == Decimal(rows["b"]["cost_usd"]) == LOST
    assert Decimal(report["total"]["unconfirmed_usd"]) == LOST

    page = tmp_path / "report.html"
    assert main(["report", "run-1", "--html", str(page), *ledger]) == 0
    assert "run-1" in page.read_text()
