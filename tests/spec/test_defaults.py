"""Defaults are written once, as spec field defaults; the schemas only show them.

Editors show a schema's ``default`` annotations while a user types, so each must be what
aoe really does: here every one is matched with the field of ``aoe.spec.models`` that
decides it, and every field default a user can rely on must be shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from aoe.spec import load_config, load_workflow
from aoe.spec.models import (
    AgentSpec,
    HttpSettings,
    InputSpec,
    LimitsSpec,
    PriceSpec,
    ProviderConfig,
    RetrySpec,
    SimulatedToolCall,
    SimulateSpec,
    ToolSpec,
    WorkflowSpec,
)
from aoe.spec.schema import SCHEMA_NAMES
from tests.spec.defaults import NoDefault, field_default, same_value, worth_showing

OWNERS: Mapping[str, Mapping[str, type]] = {
    "workflow": {
        "": WorkflowSpec,
        "/$defs/agent": AgentSpec,
        "/$defs/defaults": AgentSpec,
        "/$defs/retry": RetrySpec,
        "/$defs/simulate": SimulateSpec,
        "/$defs/simulate/properties/tool_calls/items": SimulatedToolCall,
        "/$defs/input": InputSpec,
        "/$defs/tool": ToolSpec,
        "/$defs/tool/properties/http": HttpSettings,
    },
    "agent": {
        "": AgentSpec,
        "/$defs/retry": RetrySpec,
        "/$defs/simulate": SimulateSpec,
        "/$defs/simulate/properties/tool_calls/items": SimulatedToolCall,
    },
    "config": {
        "/$defs/provider": ProviderConfig,
        "/$defs/limits": LimitsSpec,
        "/$defs/price": PriceSpec,
    },
    "tools": {},
}
"""Which spec each schema object (by JSON pointer) describes, key for field."""

NOT_SHOWN = {
    (InputSpec, "required"): "a rule, not a value: an input is required unless it has a default",
}


def _raw(name: str) -> dict[str, Any]:
    """The schema file as editors read it (``load_schema`` bundles sibling definitions)."""
    text = resources.files("aoe").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def _at(schema: Mapping[str, Any], pointer: str) -> Any:
    node: Any = schema
    for part in pointer.split("/")[1:]:
        node = node[part]
    return node


def _properties(name: str) -> Iterator[tuple[type, str, str, Mapping[str, Any]]]:
    """(spec, key, pointer of the node that says it, that node) for every described key;
    a key that is a ``$ref`` is said by the definition it names."""
    schema = _raw(name)
    for owner, cls in OWNERS[name].items():
        node = _at(schema, owner)
        for key, prop in node["properties"].items():
            if key in node.get("required", ()):
                continue
            pointer = f"{owner}/properties/{key}"
            if "$ref" in prop and "default" not in prop:
                pointer = prop["$ref"].removeprefix("#")
            yield cls, key, pointer, _at(schema, pointer)


def _default_keywords(node: Any, pointer: str = "") -> Iterator[str]:
    """The pointer of every ``default`` keyword in a schema (not of keys named default)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _default_keywords(item, f"{pointer}/{index}")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "default":
                yield f"{pointer}/default"
            elif key in ("properties", "$defs", "patternProperties"):
                for name, sub in value.items():
                    yield from _default_keywords(sub, f"{pointer}/{key}/{name}")
            elif key not in ("const", "enum", "examples"):
                yield from _default_keywords(value, f"{pointer}/{key}")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_default_is_the_spec_default(name: str) -> None:
    """What an editor shows as a key's default is what aoe uses when the key is left out."""
    wrong = []
    for cls, key, pointer, prop in _properties(name):
        if "default" not in prop:
            continue
        try:
            default = field_default(cls, key)
        except NoDefault as exc:
            wrong.append(f"{name}{pointer}: shows a default, but {exc}")
            continue
        if not same_value(prop["default"], default):
            wrong.append(
                f"{name}{pointer}: shows {prop['default']!r}, {cls.__name__} has {default!r}"
            )
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_default_is_checked(name: str) -> None:
    """A ``default`` annotation no spec field stands behind cannot be added unnoticed."""
    checked = {
        f"{pointer}/default" for _, _, pointer, prop in _properties(name) if "default" in prop
    }
    assert set(_default_keywords(_raw(name))) <= checked


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_spec_default_is_shown(name: str) -> None:
    """Every default a user can rely on (not null, not empty) is shown by the editor."""
    missing = []
    for cls, key, pointer, prop in _properties(name):
        if "default" in prop or (cls, key) in NOT_SHOWN:
            continue
        try:
            default = field_default(cls, key)
        except NoDefault:
            continue
        if worth_showing(default):
            missing.append(f"{name}{pointer}: {cls.__name__}.{key} defaults to {default!r}")
    assert not missing, "\n".join(missing)


def test_left_out_keys_take_the_spec_defaults(tmp_path: Path) -> None:
    """A workflow that writes only what it must gets the spec field defaults everywhere."""
    path = tmp_path / "w.yaml"
    path.write_text(
        dedent(
            """\
            version: 1
            inputs:
              x: {}
            agents:
              a:
                model: sim/fast
                prompt: hi
                tools: [t]
                simulate: {tool_calls: [{name: t}]}
            tools:
              t: {description: d, http: {url: "https://erp.example/t"}}
            """
        )
    )
    spec = load_workflow(path)
    assert spec == WorkflowSpec(
        name="w", path=path, agents=spec.agents, inputs=spec.inputs, tools=spec.tools
    )
    declared = spec.inputs["x"]
    assert declared == InputSpec(name="x", location=declared.location)
    agent = spec.agents["a"]
    assert agent == AgentSpec(
        id="a",
        model=agent.model,
        prompt="hi",
        location=agent.location,
        prompt_location=agent.prompt_location,
        tools=("t",),
        simulate=SimulateSpec(tool_calls=(SimulatedToolCall(name="t"),)),
    )
    tool = spec.tools["t"]
    assert tool == ToolSpec(
        name="t", description="d", kind="http", target=tool.target, location=tool.location
    )
    assert HttpSettings.of(tool.target) == HttpSettings()


def test_a_provider_without_settings_takes_the_spec_defaults(tmp_path: Path) -> None:
    """A new provider that writes only its type gets the ProviderConfig field defaults."""
    path = tmp_path / "aoe.yaml"
    path.write_text("providers:\n  local: {type: openai}\n")
    assert load_config(path).providers["local"] == ProviderConfig(name="local", type="openai")
