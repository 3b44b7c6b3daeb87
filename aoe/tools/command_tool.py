"""``command: [argv...]``: a program run without a shell, once per call.

Each argv element is a Jinja template over the call's arguments (``args``), rendered to
exactly one argument, so no value can become shell syntax or split into two arguments.
The arguments also arrive as one JSON object on stdin. The program runs in the directory
of the workflow file, in a session of its own: on timeout or cancellation the whole
process group is killed. stdout is the result, cut to ``MAX_OUTPUT_BYTES``; a non-zero
exit code is an error result carrying stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from aoe.errors import TemplateRenderError
from aoe.spec.models import ToolSpec
from aoe.spec.templates import render
from aoe.tools.base import (
    MAX_OUTPUT_BYTES,
    ToolFailed,
    ToolOutput,
    declared_in,
    decode_truncated,
    resolve_executable,
)


class CommandTool:
    """Runs one ``command:`` tool."""

    def __init__(self, spec: ToolSpec, *, max_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self.spec = spec
        self.max_bytes = max_bytes

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        argv = self._argv(arguments)
        base_dir = declared_in(self.spec)
        program = resolve_executable(argv[0], base_dir)
        if program is None:
            raise ToolFailed(f"program {argv[0]!r} was not found")
        process = await asyncio.create_subprocess_exec(
            program, *argv[1:],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=base_dir,
            start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = await process.communicate(json.dumps(arguments).encode())
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                await process.wait()
        output = decode_truncated(stdout, self.max_bytes)
        if process.returncode != 0:
            errors = decode_truncated(stderr, self.max_bytes).text.strip()
            raise ToolFailed(
                f"{argv[0]} exited with code {process.returncode}"
                + (f"; stderr: {errors}" if errors else "")
                + (f"; stdout: {output.text.strip()}" if output.text.strip() else "")
            )
        return output

    def _argv(self, arguments: dict[str, Any]) -> list[str]:

        context = {"args": arguments}
        argv: list[str] = []
        for index, element in enumerate(self.spec.target["argv"]):
            try:
                argv.append(render(str(element), context, where=f"tool {self.spec.name}"))
            except TemplateRenderError as exc:
                raise ToolFailed(f"cannot build argument {index}: {exc.message}") from None
        return argv


def _kill_group(pid: int) -> None:
    """Kill the tool and anything it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
