"""What every tool kind shares: its output, the failure it reports, truncation sizes.

A tool kind turns a call's arguments (a JSON object, already checked against the tool's
schema) into a ``ToolOutput``, or raises ``ToolFailed`` with a message the model should
read. Any other exception is a bug in the tool, which the toolbox also turns into an
error result; only cancellation goes further.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoe.spec.models import ToolSpec

MAX_RESULT_CHARS = 16_000  # what one tool result may put in front of the model
MAX_OUTPUT_BYTES = 8_192  # command stdout/stderr (http: HttpSettings.max_bytes)
LOG_CHARS = 2_000  # arguments and results kept per tool call in the ledger


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """What a tool returned; ``truncated`` when it said more than its size allows."""

    text: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call's outcome as the model will read it. Never an exception."""

    content: str
    is_error: bool = False
    truncated: bool = False
    duration_s: float = 0.0


class ToolFailed(Exception):
    """A tool ran and failed in a way the model should be told about (exit code, HTTP 404...)."""


Runner = Callable[[dict[str, Any]], Awaitable[ToolOutput]]


def truncate_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, saying so at the end."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[truncated to {limit} characters]", True


def decode_truncated(data: bytes, limit: int) -> ToolOutput:
    """Bytes as text, cut to ``limit`` bytes, saying so at the end."""
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) <= limit:
        return ToolOutput(text)
    return ToolOutput(text + f"\n[truncated to {limit} bytes]", truncated=True)


def declared_in(tool: ToolSpec) -> Path:
    """The directory of the file that declared ``tool`` (the workflow, or the shared tools
    file it came from): imports and paths start there."""
    if tool.location is None:
        return Path.cwd()
    return Path(tool.location.file).resolve().parent


def resolve_executable(program: str, base_dir: Path) -> str | None:
    """The program to start: ``python``/``python3`` is the interpreter running aoe (so the
    tool sees aoe's packages), a name with a ``/`` is a path from ``base_dir``, and any
    other name is looked up on ``PATH``. None when it does not exist."""
    if program in ("python", "python3"):
        return sys.executable
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else base_dir / program
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program)
