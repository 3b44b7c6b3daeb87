"""The spec layer: workflow, agent and config files in, typed immutable specs out.

``load_workflow``, ``load_config``, ``parse_input_args`` and ``resolve_inputs`` are the
public entry points. They are imported lazily, so importing ``aoe.spec.models`` (which
every part of aoe does) does not pull in PyYAML, jsonschema and Jinja2.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aoe.spec.config import load_config
    from aoe.spec.inputs import parse_input_args, resolve_inputs
    from aoe.spec.loader import load_workflow

__all__ = ["load_config", "load_workflow", "parse_input_args", "resolve_inputs"]

_HOMES = {
    "load_config": "aoe.spec.config",
    "load_workflow": "aoe.spec.loader",
    "parse_input_args": "aoe.spec.inputs",
    "resolve_inputs": "aoe.spec.inputs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aoe.spec' has no attribute {name!r}")
    return getattr(import_module(home), name)
