"""`aoe plan --estimate`: tokens and cost before anything is spent."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from aoe.cli.main import main
from aoe.cost.tokens import count_tokens
from aoe.spec.models import ModelRef

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "schemas" / "plan.schema.json").read_text(encoding="utf-8"))


def _write(tmp: Path, body: str) -> Path:
    path = tmp / "wf.yaml"
    path.write_text("version: 1\nname: est\ninputs:\n  text: {type: string}\n" + body)
    return path


def test_estimate_renders_prompts_with_the_inputs_and_prices_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The count is the rendered prompt's; max uses every retry and all of max_tokens."""
    wf = _write(
        tmp_path,
        (
            "defaults: {model: openai/gpt-4o-mini, max_tokens: 100,"
            " retry: {max_retries: 2}}\n"
            "agents:\n  a:\n    prompt: 'Summarise {{ inputs.text }}'\n"
            "    simulate: {output_tokens: 40}\n"
        ),
    )
    text = "a long supplier invoice " * 20
    assert main(["plan", str(wf), "--estimate", "--format", "json", "--input", f"text={text}"]) == 0
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, SCHEMA)
    a = doc["estimate"]["agents"]["a"]
    prompt_tokens = count_tokens(ModelRef("openai", "gpt-4o-mini"), f"Summarise {text}").tokens
    assert a["exact"] is True
    assert prompt_tokens < a["input_tokens"]["min"] < prompt_tokens + 20  # plus message framing
    assert a["output_tokens"] == {"min": 0, "expected": 40, "max": 300}
    n_in = a["input_tokens"]["min"]
    per_call_max = (Decimal(n_in) * Decimal("0.15") + 100 * Decimal("0.60")) / 10**6
    assert Decimal(a["cost_usd"]["max"]) == per_call_max * 3
    assert doc["estimate"]["total"]["cost_usd"] == a["cost_usd"]


def test_upstream_outputs_are_stood_in_for_and_totals_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Downstream prompts render with an example of the upstream output; totals are sums."""
    wf = _write(
        tmp_path,
        (
            "defaults: {model: openai/gpt-4o-mini}\n"
            "agents:\n  a:\n    prompt: '{{ inputs.text }}'\n"
            "    output_schema: {type: object, required: [vendor],"
            " properties: {vendor: {type: string}}}\n"
            "  b:\n    needs: [a]\n    prompt: 'Vendor {{ agents.a.output.vendor }}'\n"
        ),
    )
    assert main(["plan", str(wf), "--estimate", "--format", "json", "--input", "text=x"]) == 0
    est = json.loads(capsys.readouterr().out)["estimate"]
    for key in ("min", "expected", "max"):
        assert est["total"]["input_tokens"][key] == sum(
            e["input_tokens"][key] for e in est["agents"].values()
        )
        assert Decimal(est["total"]["cost_usd"][key]) == sum(
            Decimal(e["cost_usd"][key]) for e in est["agents"].values()
        )


def test_a_missing_input_is_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Estimating needs the inputs: a missing one is bad input that names it."""
    wf = _write(
        tmp_path, "agents:\n  a:\n    model: openai/gpt-4o-mini\n    prompt: '{{ inputs.text }}'\n"
    )
    assert main(["plan", str(wf), "--estimate"]) == 2
    assert "text" in capsys.readouterr().err


def test_unpriced_models_show_unknown_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model with no known price has null costs and is listed, not guessed at."""
    wf = _write(tmp_path, "agents:\n  a:\n    model: openai/no-such-model\n    prompt: hi\n")
    assert main(["plan", str(wf), "--estimate", "--format", "json", "--input", "text=x"]) == 0
    est = json.loads(capsys.readouterr().out)["estimate"]
    assert est["total"]["cost_usd"]["max"] is None
    assert est["unpriced_models"] == ["openai/no-such-model"]
