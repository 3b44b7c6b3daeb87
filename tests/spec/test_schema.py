"""The JSON Schemas and schema errors: sound schemas, and errors a person understands."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from jsonschema import Draft202012Validator

from aoe.errors import Problem
from aoe.spec.fastcheck import compile_schema
from aoe.spec.schema import SCHEMA_NAMES, check_json_schema, load_schema, validate
from aoe.spec.yamlload import parse_yaml
from tests.strategies import mutated_docs, workflow_docs


def _problems(text: str, name: str = "workflow") -> list[Problem]:
    doc = parse_yaml(text, "w.yaml")
    return validate(doc.data, name, "w.yaml", doc.positions)


def _objects(node: Any) -> list[dict[str, Any]]:
    """Every sub-schema of a schema that declares properties."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if "properties" in node:
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    """Each shipped schema is itself a valid draft 2020-12 JSON Schema."""
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_property_is_described_and_closed(name: str) -> None:
    """Editors show a description for every key, and unknown keys are always rejected."""
    schema = load_schema(name)
    defs = schema["$defs"]
    for node in _objects(schema):
        if node.get("properties") and node is not schema.get("properties"):
            assert node.get("additionalProperties") is False, node.get("description")
        for key, prop in node["properties"].items():
            target = defs[prop["$ref"].split("/")[-1]] if "$ref" in prop else prop
            assert prop.get("description") or target.get("description"), f"{name}: {key}"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_reference_resolves(name: str) -> None:
    """Every $ref names a definition that exists (check_schema does not look)."""
    schema = load_schema(name)
    text = json.dumps(schema)
    for pointer in set(re.findall(r'"\$ref": "#/\$defs/([^"]+)"', text)):
        assert pointer in schema["$defs"], f"{name}: #/$defs/{pointer}"


def test_workflow_and_agent_schemas_share_definitions() -> None:
    """The agent-file schema's copies of shared definitions match the workflow schema's."""
    workflow = load_schema("workflow")["$defs"]
    agent = load_schema("agent")["$defs"]
    shared = set(workflow) & set(agent)
    assert {"model", "priority", "retry", "simulate", "output_schema"} <= shared
    for name in shared:
        assert workflow[name] == agent[name], name


def test_out_of_range_number_is_reported_plainly() -> None:
    """A number out of range names its path, value and limit at the value's place."""
    problems = _problems("version: 1\nagents:\n  extract:\n    prompt: x\n    priority: 42\n")
    assert [(p.line, p.col, p.message) for p in problems] == [
        (5, 15, "agents.extract.priority: 42 is greater than the maximum of 10")
    ]


def test_unknown_key_points_at_the_key_with_a_suggestion() -> None:
    """A misspelt key is reported on the key itself with a 'did you mean'."""
    problems = _problems("version: 1\nagents:\n  extract:\n    promt: x\n")
    assert [(p.line, p.col, p.message, p.hint) for p in problems] == [
        (4, 5, "agents.extract: unknown key 'promt'", "did you mean 'prompt'?")
    ]


def test_every_error_is_reported_in_line_order() -> None:
    """All schema errors of a file come back at once, sorted by line."""
    problems = _problems(
        "version: 1\nbudget_usd: -1\nagents:\n  a:\n    temperature: 9\n"
        "    retry: {strategy: fast, max_retries: 99}\n  b: []\n"
    )
    lines = [p.line for p in problems]
    assert lines == sorted(lines)
    assert len(problems) == 5
    messages = " | ".join(p.message for p in problems)
    assert "budget_usd: -1 is less than the minimum of 0" in messages
    assert "agents.a.retry.strategy: 'fast' is not one of" in messages
    assert "agents.b: expected a mapping, got a list" in messages


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("version: 2\nagents: {a: {prompt: x}}\n", "version: 2 is not supported", "version: 1"),
        ("agents: {a: {prompt: x}}\n", "missing required key 'version'", "version: 1"),
        (
            "version: 1\nagents: {a: {model: gpt-4o, prompt: x}}\n",
            "'gpt-4o' is not a model of the form provider/name",
            "openai/gpt-4o-mini",
        ),
        (
            "version: 1\nagents: {a: {prompt: x, retry: {strategy: exponentail}}}\n",
            "'exponentail' is not one of",
            "did you mean 'exponential'?",
        ),
        (
            "version: 1\nagents: {a b: {prompt: x}}\n",
            "'a b' is not a valid name for an agent id",
            "letters, digits",
        ),
        (
            "version: 1\nagents: {a: {prompt: x, priority: high}}\n",
            "expected an integer, got a string ('high')",
            None,
        ),
        (
            "version: 1\nagents: {a: {prompt: x, needs: [b, b]}, b: {prompt: y}}\n",
            "lists 'b' more than once",
            None,
        ),
    ],
)
def test_messages_and_hints(text: str, message: str, hint: str | None) -> None:
    """Common mistakes read as a sentence with the fix in the hint."""
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert message in problems[0].message
    if hint is None:
        assert problems[0].hint is None
    else:
        assert hint in (problems[0].hint or "")


def test_tool_needs_exactly_one_way_to_run() -> None:
    """A tool with no runner or with two is reported at the tool's key."""
    base = "version: 1\nagents: {a: {prompt: x}}\ntools:\n  t:\n    description: d\n"
    none = _problems(base)
    both = _problems(base + "    python: m.n:f\n    command: [ls]\n")
    assert [(p.line, p.message) for p in none] == [
        (4, "tools.t: needs exactly one of python, http, command, mcp")
    ]
    assert "(found python, command)" in both[0].message


def test_invalid_output_schema_is_found_at_its_node() -> None:
    """A broken JSON Schema inside a workflow is reported where it is broken."""
    doc = parse_yaml("s:\n  type: object\n  properties:\n    a: {type: strin}\n", "w.yaml")
    problems = check_json_schema(doc.data["s"], "w.yaml", doc.positions, ("s",))
    assert [(p.line, p.hint) for p in problems] == [(4, "did you mean 'string'?")]
    assert "not a valid JSON Schema" in problems[0].message


def test_config_schema_rejects_bad_limits() -> None:
    """aoe.yaml limits must be positive integers (or null to remove one)."""
    problems = _problems(
        "providers:\n  openai:\n    limits: {requests_per_minute: 0, tokens_per_day: null}\n",
        "config",
    )
    assert [p.message for p in problems] == [
        "providers.openai.limits.requests_per_minute: 0 is less than the minimum of 1"
    ]


@settings(max_examples=300, deadline=None)
@given(mutated_docs())
def test_fast_check_never_accepts_what_jsonschema_rejects(doc: Any) -> None:
    """The fast validity check is sound: 'valid' always agrees with jsonschema."""
    fast = compile_schema(load_schema("workflow"))
    if fast(doc):
        assert not list(Draft202012Validator(load_schema("workflow")).iter_errors(doc))


@settings(max_examples=100, deadline=None)
@given(workflow_docs())
def test_fast_check_accepts_valid_workflows(doc: dict[str, Any]) -> None:
    """Valid files take the fast path (the speed of 10,000-agent files depends on it)."""
    assert compile_schema(load_schema("workflow"))(doc)
