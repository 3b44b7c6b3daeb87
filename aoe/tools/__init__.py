"""Tools agents call: ``python``, ``http``, ``command`` and ``mcp`` kinds, and the toolbox.

One module per kind; ``toolbox`` validates arguments, runs calls (in parallel when the
model asks for several) with each tool's timeout, and turns every failure into an error
result for the model. ``checks`` holds what ``aoe validate`` checks of tools.
"""

from __future__ import annotations

from aoe.tools.base import ToolFailed, ToolOutput, ToolResult
from aoe.tools.toolbox import (
    BoundTool,
    PrivateTools,
    RunTools,
    Toolbox,
    result_message,
    tool_log,
)

__all__ = [
    "BoundTool",
    "PrivateTools",
    "RunTools",
    "ToolFailed",
    "ToolOutput",
    "ToolResult",
    "Toolbox",
    "result_message",
    "tool_log",
]
