"""`aoe run` refuses a budget it cannot enforce: a model without a price under a budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoe.cli.main import main
from tests.fakeprovider import FakeProvider, fake_provider

__all__ = ["fake_provider"]

MODEL = "local/llama-x"  # served by the loopback server; no price in aoe.yaml or genai-prices


def _workflow(tmp: Path, server: FakeProvider, *, top: str = "", agent: str = "") -> Path:
    (tmp / "aoe.yaml").write_text(
        f"providers:\n  local: {{type: openai, base_url: '{server.openai_base_url}'}}\n"
    )
    path = tmp / "wf.yaml"
    path.write_text(
        f"version: 1\nname: unpriced\n{top}"
        f"agents:\n  summarise:\n    model: {MODEL}\n    max_tokens: 50\n"
        f"    prompt: Summarise the open purchase orders.\n{agent}"
    )
    return path


def _runs_recorded(capsys: pytest.CaptureFixture[str]) -> list[object]:
    assert main(["runs", "--json"]) == 0
    runs: list[object] = json.loads(capsys.readouterr().out)["runs"]
    return runs


@pytest.mark.parametrize(
    ("args", "top", "agent"),
    [
        (["--budget", "1"], "", ""),
        ([], "budget_usd: 1\n", ""),
        ([], "", "    cost_limit_usd: 0.10\n"),
    ],
    ids=["--budget", "budget_usd", "cost_limit_usd"],
)
def test_a_budget_over_a_model_without_a_price_is_refused_before_any_call(
    args: list[str],
    top: str,
    agent: str,
    fake_provider: FakeProvider,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run budget, a workflow budget or an agent cost limit over a model aoe has no price
    for cannot be enforced: exit 2 naming the model and how to price it, nothing called."""
    wf = _workflow(tmp_path, fake_provider, top=top, agent=agent)
    code = main(["run", str(wf), "--no-live", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: {wf}:" in err  # where: the agent's line in the workflow file
    assert f"no price is known for model {MODEL}, so its budget cannot be enforced" in err
    hint = f"hint: add `pricing: {{{MODEL}: {{input_per_mtok: ..., output_per_mtok: ...}}}}`"
    assert f"{hint} to aoe.yaml" in err
    assert "Traceback" not in err
    assert fake_provider.calls() == 0
    assert _runs_recorded(capsys) == []


def test_without_a_budget_an_unpriced_model_is_only_a_warning(
    fake_provider: FakeProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no budget to enforce, a model without a price warns that its calls are recorded
    at $0, and the run goes on: the call is made and the run completes."""
    wf = _workflow(tmp_path, fake_provider)
    code = main(["run", str(wf), "--no-live", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert f"warning: no price is known for {MODEL}: its calls are recorded at $0" in captured.err
    assert "error:" not in captured.err
    doc = json.loads(captured.out)
    assert doc["workflows"][0]["state"] == "COMPLETED"
    assert fake_provider.calls() == 1
    assert len(_runs_recorded(capsys)) == 1
