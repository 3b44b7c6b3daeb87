"""Building ToolSpecs the way the loader does, declared by a workflow file in a test's tmp dir."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from aoe.providers.base import ToolCall
from aoe.spec.models import Location, ToolKind, ToolSpec, freeze

OBJECT: dict[str, Any] = {"type": "object"}


def tool_spec(
    directory: Path,
    name: str,
    kind: ToolKind,
    target: dict[str, Any],
    *,
    parameters: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
) -> ToolSpec:
    """A tool as if declared in ``directory/workflow.yaml``."""
    return ToolSpec(
        name=name,
        description=f"the {name} tool",
        parameters=freeze(parameters if parameters is not None else OBJECT),
        kind=kind,
        target=freeze(target),
        timeout_s=timeout_s,
        location=Location(str(directory / "workflow.yaml"), 3, 3),
    )


def module_name(prefix: str = "tools") -> str:
    """A module name no other test uses, so sys.modules never hands back another test's code."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def call(name: str, arguments: Any = None, call_id: str = "call_1") -> ToolCall:
    """A model's tool call; ``arguments`` as a dict (JSON-encoded) or raw text."""
    import json

    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(call_id, name, text)
