"""The plan as JSON, Mermaid, Graphviz and the Rich table: the same facts in each."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from aoe.app.plan import plan_to_dict, plan_to_json, to_dot, to_mermaid
from aoe.app.validate import CheckedWorkflow
from aoe.graph import WorkflowGraph
from aoe.spec.models import AgentSpec, Location, ModelRef, SimulateSpec, WorkflowSpec
from aoe.ui.plan_view import print_plan


def agent(agent_id: str, *needs: str, latency_s: float, **extra: Any) -> AgentSpec:
    return AgentSpec(
        id=agent_id,
        model=ModelRef.parse(extra.pop("model", "openai/gpt-4o-mini")),
        prompt="do it",
        location=Location("seed.yaml", 1, 3),
        needs=needs,
        simulate=SimulateSpec(latency_s=latency_s),
        **extra,
    )


@pytest.fixture
def checked() -> CheckedWorkflow:
    """The seed example with modules, priorities and budgets, as validate would return it."""
    spec = WorkflowSpec(
        name="seed",
        path=Path("seed.yaml"),
        budget_usd=0.5,
        agents={
            a.id: a
            for a in (
                agent("A", latency_s=1.0, module="accounts_payable", priority=9),
                agent("B", "A", latency_s=2.0, cost_limit_usd=0.05),
                agent("C", "A", latency_s=1.5, model="anthropic/claude-sonnet-4-5"),
                agent("D", "B", latency_s=3.0),
                agent("E", "C", "D", latency_s=0.5),
            )
        },
    )
    return CheckedWorkflow(spec, WorkflowGraph.build(spec))


def plan_schema() -> dict[str, Any]:
    text = resources.files("aoe").joinpath("schemas/plan.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_json_plan_validates_against_its_published_schema(checked: CheckedWorkflow) -> None:
    """`aoe plan --format json` output matches aoe/schemas/plan.schema.json."""
    plan = json.loads(json.dumps(plan_to_dict(checked)))
    jsonschema.Draft202012Validator(plan_schema()).validate(plan)


def test_json_plan_with_inputs_still_validates(checked: CheckedWorkflow) -> None:
    """Inputs given to `aoe plan` appear in the JSON and keep it schema-valid."""
    plan = json.loads(json.dumps(plan_to_dict(checked, {"batch": "B-1"})))
    jsonschema.Draft202012Validator(plan_schema()).validate(plan)
    assert plan["inputs"] == {"batch": "B-1"}


def test_json_plan_holds_levels_critical_path_and_agent_settings(
    checked: CheckedWorkflow,
) -> None:
    """Scripts read levels, the critical path with its length, and per-agent settings."""
    plan = plan_to_dict(checked)
    assert plan["levels"] == [["A"], ["B", "C"], ["D"], ["E"]]
    assert plan["critical_path"] == {
        "agents": ["A", "B", "D", "E"],
        "expected_latency_s": 6.5,
    }
    assert plan["budget_usd"] == 0.5
    by_id = {a["id"]: a for a in plan["agents"]}
    assert [a["id"] for a in plan["agents"]] == ["A", "B", "C", "D", "E"]
    assert by_id["A"]["module"] == "accounts_payable"
    assert by_id["A"]["priority"] == 9
    assert by_id["B"]["cost_limit_usd"] == 0.05
    assert by_id["C"]["model"] == "anthropic/claude-sonnet-4-5"
    assert by_id["E"]["needs"] == ["C", "D"]
    assert by_id["E"]["level"] == 3
    assert [a["id"] for a in plan["agents"] if a["critical"]] == ["A", "B", "D", "E"]


def test_mermaid_has_every_edge_and_bold_critical_path(checked: CheckedWorkflow) -> None:
    """The Mermaid flowchart draws every need and the critical path as thick links."""
    text = to_mermaid(checked)
    assert text.startswith("flowchart TD\n")
    # node ids are n0.. in file order: A=n0, B=n1, C=n2, D=n3, E=n4
    for critical in ("n0 ==> n1", "n1 ==> n3", "n3 ==> n4"):
        assert critical in text
    for plain in ("n0 --> n2", "n2 --> n4"):
        assert plain in text
    assert 'n0["★ A (1s)"]' in text
    assert "class n0,n1,n3,n4 critical;" in text
    assert "linkStyle" in text


def test_mermaid_node_ids_survive_awkward_agent_ids() -> None:
    """Agent ids like `end` or `a-b` and quotes in labels cannot break the diagram."""
    spec = WorkflowSpec(
        name="w",
        path=Path("w.yaml"),
        agents={
            "end": agent("end", latency_s=1),
            "a-b": agent("a-b", "end", latency_s=1),
        },
    )
    text = to_mermaid(CheckedWorkflow(spec, WorkflowGraph.build(spec)))
    assert "n0 ==> n1" in text
    assert '"★ end (1s)"' in text
    assert "end -->" not in text


def test_dot_has_every_edge_and_levels(checked: CheckedWorkflow) -> None:
    """The Graphviz output has each need as an edge and one rank per level."""
    text = to_dot(checked)
    assert text.startswith('digraph "seed" {')
    for edge in ('"A" -> "B"', '"A" -> "C"', '"B" -> "D"', '"C" -> "E"', '"D" -> "E"'):
        assert edge in text
    assert '{ rank=same; "B"; "C"; }' in text
    assert text.count("penwidth") == 4 + 3  # critical nodes and critical edges
    assert text.rstrip().endswith("}")


def test_dot_quotes_special_characters() -> None:
    """A workflow name with quotes still gives valid DOT."""
    spec = WorkflowSpec(name='say "hi"', path=Path("w.yaml"), agents={"a": agent("a", latency_s=1)})
    assert to_dot(CheckedWorkflow(spec, WorkflowGraph.build(spec))).startswith(
        'digraph "say \\"hi\\"" {'
    )


def test_table_view_marks_critical_agents_and_shows_the_path(checked: CheckedWorkflow) -> None:
    """The terminal plan stars critical agents and ends with the path and its length."""
    console = Console(record=True, width=140, color_system=None)
    print_plan(plan_to_dict(checked), console)
    text = console.export_text()
    assert "★ A" in text
    assert "★ C" not in text
    assert "accounts_payable" in text
    assert "anthropic/claude-sonnet-4-5" in text
    assert "$0.05" in text
    assert "critical path: A -> B -> D -> E" in text
    assert "6.5 s" in text


def test_narrow_terminal_cuts_names_but_never_numbers(checked: CheckedWorkflow) -> None:
    """On an 60-column terminal long names get an ellipsis; budgets and latencies stay whole."""
    console = Console(record=True, width=60, force_terminal=True, color_system=None)
    print_plan(plan_to_dict(checked), console)
    text = console.export_text()
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "$0.05" in text
    assert "3.0 s" in text
    assert "…" in text  # anthropic/claude-sonnet-4-5 does not fit


def test_plan_json_text_is_valid_json_with_one_agent_per_line(checked: CheckedWorkflow) -> None:
    """The printed JSON parses back to the plan and keeps each agent on one line."""
    plan = plan_to_dict(checked, {"note": "é"})
    text = plan_to_json(plan)
    assert json.loads(text) == json.loads(json.dumps(plan))
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith('{"id": ')) == 5
    assert "é" in text
