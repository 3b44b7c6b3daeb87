"""aoe.yaml: built-in providers, user entries merged over them, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoe.errors import SpecError, UsageError
from aoe.spec import load_config
from aoe.spec.models import LimitsSpec


def test_builtins_without_a_file(tmp_path: Path) -> None:
    """With no aoe.yaml, openai, anthropic and sim work with their default limits."""
    config = load_config(None, search_dir=tmp_path)
    assert config.path is None
    openai = config.providers["openai"]
    assert (openai.type, openai.base_url, openai.api_key_env) == (
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
    )
    assert openai.limits == LimitsSpec(
        requests_per_minute=500, tokens_per_minute=200_000, concurrent_requests=50
    )
    anthropic = config.providers["anthropic"]
    assert (anthropic.api_version, anthropic.limits.requests_per_minute) == ("2026-10-21", 50)
    assert config.providers["sim"].api_key_env is None
    assert config.providers["sim"].limits == LimitsSpec()


def test_aoe_yaml_beside_the_workflow_merges_over_builtins(tmp_path: Path) -> None:
    """A user's entry changes only what it names; null removes a built-in limit."""
    (tmp_path / "aoe.yaml").write_text(
        "providers:\n"
        "  openai:\n"
        "    limits: {requests_per_day: 10000, concurrent_requests: null}\n"
        "  local: {type: openai, base_url: 'http://127.0.0.1:11434/v1'}\n"
        "pricing:\n"
        "  local/llama3: {input_per_mtok: 0, output_per_mtok: 0}\n"
    )
    config = load_config(None, search_dir=tmp_path)
    assert config.path == tmp_path / "aoe.yaml"
    limits = config.providers["openai"].limits
    assert (limits.requests_per_minute, limits.requests_per_day, limits.concurrent_requests) == (
        500,
        10000,
        None,
    )
    assert config.providers["openai"].api_key_env == "OPENAI_API_KEY"
    local = config.providers["local"]
    assert (local.type, local.base_url, local.api_key_env) == (
        "openai",
        "http://127.0.0.1:11434/v1",
        None,
    )
    assert config.pricing["local/llama3"].output_per_mtok == 0.0


def test_explicit_path_wins_and_must_exist(tmp_path: Path) -> None:
    """--config names the file; a missing one is a usage error."""
    other = tmp_path / "team.yaml"
    other.write_text("providers:\n  anthropic: {api_version: '2023-06-01'}\n")
    (tmp_path / "aoe.yaml").write_text("providers:\n  anthropic: {api_version: x}\n")
    assert load_config(other, search_dir=tmp_path).providers["anthropic"].api_version == (
        "2023-06-01"
    )
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_means_builtins(tmp_path: Path) -> None:
    """An empty aoe.yaml is the same as none."""
    (tmp_path / "aoe.yaml").write_text("# nothing yet\n")
    assert set(load_config(None, search_dir=tmp_path).providers) == {"openai", "anthropic", "sim"}


def test_errors_are_located(tmp_path: Path) -> None:
    """Schema errors and a new provider without type are reported at FILE:LINE:COL."""
    path = tmp_path / "aoe.yaml"
    path.write_text(
        "providers:\n"
        "  openai:\n"
        "    limits: {requests_per_minut: 10}\n"
        "  local: {base_url: 'http://127.0.0.1:8000/v1'}\n"
        "pricing:\n"
        "  llama3: {input_per_mtok: 0, output_per_mtok: 0}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_config(path)
    found = [(p.line, p.message, p.hint) for p in caught.value.problems]
    assert found[0] == (
        3,
        "providers.openai.limits: unknown key 'requests_per_minut'",
        "did you mean 'requests_per_minute'?",
    )
    assert found[1][:2] == (
        4,
        "providers.local: a new provider needs type: (openai, anthropic or sim)",
    )
    assert found[2][:2] == (6, "pricing: 'llama3' is not a model of the form provider/name")
