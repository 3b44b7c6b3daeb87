"""The README as a reader relies on it: its workflow example is a valid workflow, and
every default it states is the one aoe uses."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoe.app.validate import check_workflow
from aoe.ledger.lease import HEARTBEAT_S
from aoe.spec.config import BUILTIN_PROVIDERS
from aoe.spec.models import AgentSpec, HttpSettings, RetrySpec, ToolSpec
from aoe.tools.base import MAX_OUTPUT_BYTES
from tests.spec.defaults import NoDefault, field_default, same_value, worth_showing

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_workflow_example_validates(tmp_path: Path) -> None:
    """Saved next to the shipped agents/ and tools/ folders, the example passes aoe validate."""
    section = README.split("## A workflow file", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    for folder in ("agents", "tools"):
        shutil.copytree(ROOT / "workflows" / folder, tmp_path / folder)
    path = tmp_path / "example.yaml"
    path.write_text(example.group(1))
    checked = check_workflow(path)
    assert set(checked.spec.agents) == {"extract", "check_vendor", "three_way_match"}


CLAIMS: Mapping[str, Any] = {
    r"max_turns: \d+ +# default (\d+)": field_default(AgentSpec, "max_turns"),
    r"timeout_s: \d+ +# per call, default (\d+)": field_default(ToolSpec, "timeout_s"),
    r"cut to `max_bytes` \(default (\d+)\)": field_default(HttpSettings, "max_bytes"),
    r"stdout \(cut to (\d+) bytes\)": MAX_OUTPUT_BYTES,
    r"API version `([\d-]+)`": BUILTIN_PROVIDERS["anthropic"]["api_version"],
    r"`--lease-heartbeat SECONDS` \(default (\d+):": HEARTBEAT_S,
}
"""Each default the README states in a sentence, and the value aoe uses."""


@pytest.mark.parametrize("pattern", CLAIMS)
def test_each_stated_default_is_the_one_aoe_uses(pattern: str) -> None:
    """A default the README states in passing is the value aoe uses."""
    found = re.search(pattern, README)
    assert found is not None, pattern
    text = found.group(1)
    assert same_value(int(text) if text.isdigit() else text, CLAIMS[pattern]), found.group(0)


def test_every_stated_default_is_checked() -> None:
    """A "default N" added to the README is added to CLAIMS, so it is checked too."""
    checked = [m.span() for p in CLAIMS for m in re.finditer(p, README)]
    for stated in re.finditer(r"\bdefault \d", README):
        assert any(start <= stated.start() < end for start, end in checked), stated.group(0)


def test_the_unset_agent_settings_are_the_spec_defaults() -> None:
    """The README lists every agent setting with a default, each with aoe's value."""
    bullet = README.split("- **Unset settings**", 1)[1].split("\n- ", 1)[0]
    stated: dict[str, Any] = {}
    for span in re.findall(r"`([^`]+)`", bullet):
        value = yaml.safe_load(span)
        if isinstance(value, dict) and None not in value.values():  # not a key named, `uses:`
            stated.update(value)
    expected = {
        name: default for name, default in _defaults(AgentSpec).items() if worth_showing(default)
    }
    expected["retry"] = _defaults(RetrySpec)
    assert set(stated) == set(expected)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert stated[key].keys() == value.keys(), key
            assert all(same_value(stated[key][k], v) for k, v in value.items()), key
        else:
            assert same_value(stated[key], value), key


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_stated_provider_limits_are_the_built_in_ones(provider: str) -> None:
    """The limits the README gives a provider without limits: are the built-in ones."""
    found = re.search(
        rf"`{provider}` ([\d,]+) requests and\s+([\d,]+) tokens per\s+minute,\s+(\d+) at once",
        README,
    )
    assert found is not None
    limits = BUILTIN_PROVIDERS[provider]["limits"]
    stated = [int(n.replace(",", "")) for n in found.groups()]
    assert stated == [
        limits["requests_per_minute"],
        limits["tokens_per_minute"],
        limits["concurrent_requests"],
    ]


def _defaults(cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that have a default, with it."""
    found = {}
    for f in dataclasses.fields(cls):
        try:
            found[f.name] = field_default(cls, f.name)
        except NoDefault:
            continue
    return found
