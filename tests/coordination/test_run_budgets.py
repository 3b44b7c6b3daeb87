"""`aoe run` with budgets kept in Redis: --budget and the shared budgets of aoe.yaml."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from aoe.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


FLOW = str(ROOT / "workflows" / "invoice-processing.yaml")


def _config(tmp_path: Path, usd: str = "0.003") -> str:
    """An aoe.yaml declaring a shared budget ``team``."""
    path = tmp_path / "aoe.yaml"
    path.write_text(f"budgets: {{team: {{usd: {usd}, period: day}}}}\n")
    return str(path)


def test_an_unknown_shared_budget_name_is_refused_before_anything_runs(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """AOE_BUDGET_NAME naming a budget aoe.yaml does not declare is exit 2, naming both."""
    config = _config(tmp_path)
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    monkeypatch.setenv("AOE_BUDGET_NAME", "finance")
    assert main(["run", FLOW, "--config", config, "--simulate", "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "no shared budget named 'finance'" in err
    assert "declared: team" in err


def test_a_shared_budget_without_redis_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Naming a shared budget with no Redis to share it through is exit 2, not ignored."""
    config = _config(tmp_path)
    monkeypatch.delenv("AOE_REDIS_URL", raising=False)
    monkeypatch.setenv("AOE_BUDGET_NAME", "team")
    assert main(["run", FLOW, "--config", config, "--simulate", "--no-live"]) == 2
    assert "no Redis is configured" in capsys.readouterr().err


def test_runs_drawing_on_a_shared_budget_stop_when_it_is_spent(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Two runs on one $0.003 shared budget: the first completes, the second finds too
    little left and stops with exit 3; together they never spend more than the budget."""
    config = _config(tmp_path)
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    monkeypatch.setenv("AOE_BUDGET_NAME", "team")
    spent = Decimal(0)
    codes = []
    for _ in range(2):
        codes.append(main(["run", FLOW, "--config", config, "--simulate", "--no-live", "--json"]))
        doc = json.loads(capsys.readouterr().out)
        spent += Decimal(doc["cost_usd"]) + Decimal(doc.get("unconfirmed_usd") or 0)
    assert codes == [0, 3]  # one run costs about $0.0013, its worst case far more
    assert spent <= Decimal("0.003")
