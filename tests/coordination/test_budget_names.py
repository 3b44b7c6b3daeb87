"""Named shared budgets chosen per run (`aoe run --budget-name`) and per workflow
(`budgets: [NAME]` in the workflow file), against a real Redis."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from aoe.cli.main import main
from aoe.cost.money import from_pusd

TEAM_KEY = "aoe:{budgets}:named:team:all"
OPS_KEY = "aoe:{budgets}:named:ops:all"


def _config(tmp_path: Path, team_usd: str = "5") -> str:
    path = tmp_path / "aoe.yaml"
    path.write_text(
        f"budgets: {{team: {{usd: {team_usd}, period: none}}, ops: {{usd: 5, period: none}}}}\n"
    )
    return str(path)


def _workflow(tmp_path: Path, name: str, budgets: str = "") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\n{budgets}"
        "defaults: {model: openai/gpt-4o-mini, max_tokens: 50}\n"
        "agents:\n  a: {prompt: 'Say hi'}\n  b: {prompt: 'Say bye'}\n"
    )
    return str(path)


def _spent(url: str, key: str) -> Decimal:
    client = redis.Redis.from_url(url)
    try:
        raw = client.hget(key, "spent")
    finally:
        client.close()
    return from_pusd(int(raw)) if raw is not None else Decimal(0)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["run", *args, "--simulate", "--no-live", "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else {})


def test_budget_name_draws_every_call_of_the_run_on_that_budget(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """--budget-name (repeatable) charges each named budget with the run's whole cost, and
    no other declared budget."""
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    monkeypatch.delenv("AOE_BUDGET_NAME", raising=False)
    flow, config = _workflow(tmp_path, "plain"), _config(tmp_path)
    code, doc = _run([flow, "--config", config, "--budget-name", "team"], capsys)
    assert code == 0
    cost = Decimal(str(doc["cost_usd"]))
    assert cost > 0
    assert _spent(redis_url, TEAM_KEY) == cost
    assert _spent(redis_url, OPS_KEY) == 0
    code, doc = _run(
        [flow, "--config", config, "--budget-name", "team", "--budget-name", "ops"], capsys
    )
    assert code == 0
    assert _spent(redis_url, TEAM_KEY) == cost + Decimal(str(doc["cost_usd"]))
    assert _spent(redis_url, OPS_KEY) == Decimal(str(doc["cost_usd"]))


def test_a_spent_budget_named_on_the_command_line_stops_the_run(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A budget too small for one call's worst case refuses it: exit 3, nothing spent."""
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    flow, config = _workflow(tmp_path, "plain"), _config(tmp_path, team_usd="0.000001")
    code, doc = _run([flow, "--config", config, "--budget-name", "team"], capsys)
    assert code == 3
    assert Decimal(str(doc["cost_usd"])) == 0
    assert _spent(redis_url, TEAM_KEY) == 0


def test_a_workflow_draws_on_the_budgets_it_names_and_others_do_not(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`budgets: [team]` in a workflow charges team with that workflow's calls only: a
    workflow of the same run that names none leaves it alone."""
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    config = _config(tmp_path)
    named = _workflow(tmp_path, "named", "budgets: [team]\n")
    plain = _workflow(tmp_path, "plain")
    code, doc = _run([named, plain, "--config", config], capsys)
    assert code == 0
    workflows = doc["workflows"]
    assert isinstance(workflows, list)
    costs = {w["name"]: Decimal(str(w["cost_usd"])) for w in workflows}
    assert costs["named"] > 0
    assert costs["plain"] > 0
    assert _spent(redis_url, TEAM_KEY) == costs["named"]


def test_an_undeclared_budget_name_is_exit_2_and_says_which(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("AOE_REDIS_URL", redis_url)
    flow, config = _workflow(tmp_path, "plain"), _config(tmp_path)
    assert main(["run", flow, "--config", config, "--simulate", "--no-live",
                 "--budget-name", "finance"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--budget-name finance" in err
    assert "declared: ops, team" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["cli", "workflow"])
def test_a_budget_name_without_redis_is_exit_2_with_a_hint(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Without Redis a shared budget cannot be shared: refused before a cent, not ignored."""
    monkeypatch.delenv("AOE_REDIS_URL", raising=False)
    monkeypatch.delenv("AOE_BUDGET_NAME", raising=False)
    config = _config(tmp_path)
    if where == "cli":
        args = [_workflow(tmp_path, "plain"), "--budget-name", "team"]
    else:
        args = [_workflow(tmp_path, "named", "budgets: [team]\n")]
    assert main(["run", *args, "--config", config, "--simulate", "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "no Redis is configured" in err
    assert "AOE_REDIS_URL" in err
    if where == "workflow":
        assert "named.yaml:3" in err


def test_validate_reports_an_undeclared_workflow_budget_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(tmp_path)  # aoe.yaml beside the workflow: team and ops
    flow = _workflow(tmp_path, "named", "budgets:\n  - team\n  - finanse\n")
    assert main(["validate", flow]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "named.yaml:5" in text
    assert "no shared budget named 'finanse'" in text


def test_validate_refuses_budgets_that_are_not_a_list_of_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(tmp_path)
    flow = _workflow(tmp_path, "named", "budgets: team\n")
    assert main(["validate", flow]) == 2
    out = capsys.readouterr()
    assert "named.yaml:3" in out.out + out.err
