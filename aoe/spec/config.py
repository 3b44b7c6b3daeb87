"""Provider configuration (``aoe.yaml``): endpoints, key variables, account limits, prices.

Limits belong to an API key, not to a workflow, so they live here. Without a file, the
built-in providers ``openai``, ``anthropic`` and ``sim`` work as they are; a user's
entry for one of them merges over the built-in (``limits`` key by key; ``null`` removes
a built-in limit), and new names add providers (e.g. a local OpenAI-compatible server).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aoe.errors import Problem, SpecError, UsageError
from aoe.spec.models import (
    Config,
    Convert,
    CoordinationSpec,
    LimitsSpec,
    PriceSpec,
    ProviderConfig,
    SharedBudgetSpec,
    as_written,
    given,
)
from aoe.spec.schema import validate
from aoe.spec.yamlload import read_yaml

__all__ = ["BUILTIN_PROVIDERS", "CONFIG_NAME", "load_config"]

CONFIG_NAME = "aoe.yaml"

BUILTIN_PROVIDERS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "openai": {
            "type": "openai",
            "base_url": "https://api.openai.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "limits": {
                "requests_per_minute": 500,
                "tokens_per_minute": 200_000,
                "concurrent_requests": 50,
            },
        },
        "anthropic": {
            "type": "anthropic",
            "base_url": "https://api.anthropic.com",
            "api_key_env": "ANTHROPIC_API_KEY",
            "api_version": "2026-10-21",
            "limits": {
                "requests_per_minute": 50,
                "tokens_per_minute": 40_000,
                "concurrent_requests": 20,
            },
        },
        "sim": {"type": "sim"},
    }
)
"""What aoe knows without a config file (plain data; ``load_config`` builds the specs)."""

_LIMIT_FIELDS = frozenset(f.name for f in fields(LimitsSpec))


def load_config(path: Path | None, *, search_dir: Path | None = None) -> Config:
    """The configuration: ``path`` if given, else ``aoe.yaml`` in ``search_dir``, else
    the built-ins only.

    A named file that does not exist is a ``UsageError``; an invalid file raises
    ``SpecError`` with every problem at its ``FILE:LINE:COL``.
    """
    if path is None and search_dir is not None and (search_dir / CONFIG_NAME).is_file():
        path = search_dir / CONFIG_NAME
    if path is None:
        return _build({}, None)
    if not Path(path).is_file():
        raise UsageError(f"config file not found: {path}", hint="check the --config path")
    try:
        doc = read_yaml(Path(path))
    except SpecError as exc:
        if exc.message == "file is empty":  # an empty aoe.yaml means "the built-ins"
            return _build({}, Path(path))
        raise
    problems = list(doc.problems)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        line, col = doc.positions.value(())
        raise SpecError(
            [
                Problem(
                    doc.file,
                    line,
                    col,
                    "a config file must be a mapping with providers: and pricing:",
                    "see README: Configuration",
                )
            ]
        )
    problems.extend(validate(data, "config", doc.file, doc.positions))
    for name, entry in (data.get("providers") or {}).items():
        if name not in BUILTIN_PROVIDERS and isinstance(entry, dict) and "type" not in entry:
            line, col = doc.positions.key(("providers", name))
            problems.append(
                Problem(
                    doc.file,
                    line,
                    col,
                    f"providers.{name}: a new provider needs type: (openai, anthropic or sim)",
                    "use type: openai for any OpenAI-compatible server (vLLM, Ollama, llama.cpp)",
                )
            )
    if problems:
        raise SpecError(sorted(set(problems), key=lambda p: (p.line, p.col, p.message)))
    return _build(data, Path(path))


def _build(data: Mapping[str, Any], path: Path | None) -> Config:
    user = data.get("providers") or {}
    providers: dict[str, ProviderConfig] = {}
    for name in (*BUILTIN_PROVIDERS, *(n for n in user if n not in BUILTIN_PROVIDERS)):
        merged = _merge(BUILTIN_PROVIDERS.get(name, {}), user.get(name) or {})
        providers[name] = _provider(name, merged)
    pricing = {
        model: PriceSpec(
            input_per_mtok=Decimal(str(p["input_per_mtok"])),
            output_per_mtok=Decimal(str(p["output_per_mtok"])),
            cached_input_per_mtok=_usd(p.get("cached_input_per_mtok")),
            cache_write_per_mtok=_usd(p.get("cache_write_per_mtok")),
        )
        for model, p in (data.get("pricing") or {}).items()
    }
    coordination = data.get("coordination") or {}
    budgets = {
        name: SharedBudgetSpec(name, Decimal(str(b["usd"])), b.get("period", "month"))
        for name, b in (data.get("budgets") or {}).items()
    }
    return Config(
        providers=MappingProxyType(providers),
        pricing=MappingProxyType(pricing),
        path=path,
        coordination=CoordinationSpec(**given(coordination, _COORDINATION_SETTINGS)),
        budgets=MappingProxyType(budgets),
    )


_COORDINATION_SETTINGS: Mapping[str, Convert] = {"redis_url": as_written, "permit_ttl_s": float}


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if key == "limits" and isinstance(value, dict):
            merged[key] = {**(base.get("limits") or {}), **value}
        else:
            merged[key] = value
    return merged


def _limits(raw: Mapping[str, Any] | None) -> LimitsSpec:
    values = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k, v in (raw or {}).items()
        if k in _LIMIT_FIELDS
    }
    return LimitsSpec(**values)


def _provider(name: str, raw: Mapping[str, Any]) -> ProviderConfig:
    """The provider's spec from the keys its merged entry writes; the rest are the
    ``ProviderConfig`` field defaults."""
    return ProviderConfig(
        name=name,
        type=str(raw["type"]),
        limits=_limits(raw.get("limits")),
        model_limits=MappingProxyType(
            {m: _limits(v) for m, v in (raw.get("model_limits") or {}).items()}
        ),
        **given(raw, _PROVIDER_SETTINGS),
    )


_PROVIDER_SETTINGS: Mapping[str, Convert] = {
    "api_key_env": as_written,
    "base_url": as_written,
    "api_version": as_written,
    "max_tokens_field": as_written,
    "timeout_s": float,
}


def _usd(value: Any) -> Decimal | None:
    """A price as written in the YAML, exactly (a float reads as its shortest text)."""
    return Decimal(str(value)) if value is not None else None
