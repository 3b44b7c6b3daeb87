"""aoe, the Agent Orchestration Engine: run YAML workflows of LLM agents.

The library API, for running workflows from Python instead of the ``aoe`` command::

    from aoe import RunOptions, RunHandle, prepare
    prepared = prepare(RunOptions(files=(Path("workflows/invoice-processing.yaml"),),
                                  simulate=True))
    result = asyncio.run(RunHandle(prepared).execute())

Names are imported on first use, so ``import aoe`` (and ``aoe --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AgentResult",
    "AgentSpec",
    "AgentState",
    "AoeError",
    "CheckedWorkflow",
    "Engine",
    "EngineOptions",
    "LLMClient",
    "RunHandle",
    "RunOptions",
    "RunResult",
    "Runtime",
    "WorkflowGraph",
    "WorkflowJob",
    "WorkflowResult",
    "WorkflowSpec",
    "WorkflowState",
    "check_workflow",
    "load_config",
    "load_workflow",
    "prepare",
]

_WHERE = {
    "AgentResult": "aoe.engine.results",
    "AgentSpec": "aoe.spec.models",
    "AgentState": "aoe.engine.results",
    "AoeError": "aoe.errors",
    "CheckedWorkflow": "aoe.app.validate",
    "Engine": "aoe.engine.scheduler",
    "EngineOptions": "aoe.engine.scheduler",
    "LLMClient": "aoe.providers.base",
    "RunHandle": "aoe.app.run",
    "RunOptions": "aoe.app.prepare",
    "RunResult": "aoe.engine.results",
    "Runtime": "aoe.engine.runtime",
    "WorkflowGraph": "aoe.graph",
    "WorkflowJob": "aoe.engine.scheduler",
    "WorkflowResult": "aoe.engine.results",
    "WorkflowSpec": "aoe.spec.models",
    "WorkflowState": "aoe.engine.results",
    "check_workflow": "aoe.app.validate",
    "load_config": "aoe.spec.config",
    "load_workflow": "aoe.spec.loader",
    "prepare": "aoe.app.prepare",
}

if TYPE_CHECKING:
    from aoe.app.prepare import RunOptions, prepare
    from aoe.app.run import RunHandle
    from aoe.app.validate import CheckedWorkflow, check_workflow
    from aoe.engine.results import (
        AgentResult,
        AgentState,
        RunResult,
        WorkflowResult,
        WorkflowState,
    )
    from aoe.engine.runtime import Runtime
    from aoe.engine.scheduler import Engine, EngineOptions, WorkflowJob
    from aoe.errors import AoeError
    from aoe.graph import WorkflowGraph
    from aoe.providers.base import LLMClient
    from aoe.spec.config import load_config
    from aoe.spec.loader import load_workflow
    from aoe.spec.models import AgentSpec, WorkflowSpec


def __getattr__(name: str) -> Any:
    if name == "__version__":  # one source: the version the package was installed with
        from importlib.metadata import version  # noqa: PLC0415 - 30 ms, only when asked

        return version("aoe")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'aoe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
