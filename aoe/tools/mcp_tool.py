"""``mcp: {command: [...]}``: the tools of a Model Context Protocol server over stdio.

The server is started once per run (on the first agent that needs it), its tools are
listed, and each is offered to the model with its own input schema, named
``<tool>__<server tool>`` so names stay ``^[A-Za-z0-9_-]+$``. The session lives in a task
of its own, because the SDK's session must be opened and closed by the same task; the
run closes it at the end. Needs the optional extra: ``pip install 'aoe[mcp]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
from typing import Any

from aoe.errors import ToolError
from aoe.providers.base import ToolDefinition
from aoe.spec.models import ToolSpec
from aoe.tools.base import ToolFailed, ToolOutput, declared_in, resolve_executable

INSTALL_HINT = "pip install 'aoe[mcp]'"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def mcp_available() -> bool:
    """Whether the optional MCP SDK is installed."""
    return importlib.util.find_spec("mcp") is not None


class McpServer:
    """One MCP server of a ``mcp:`` tool: ``start``, then ``definitions`` and ``call``."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.definitions: tuple[ToolDefinition, ...] = ()
        self._names: dict[str, str] = {}  # offered name -> the server's own name
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._error: BaseException | None = None

    async def start(self) -> None:
        """Start the server and list its tools, or raise ``ToolError`` saying why not."""
        if not mcp_available():
            raise ToolError(
                f"tool '{self.spec.name}' is served over MCP, but the MCP SDK is not installed",
                where=str(self.spec.location or ""),
                hint=INSTALL_HINT,
            )
        self._task = asyncio.create_task(self._serve(), name=f"mcp:{self.spec.name}")
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self._error = TimeoutError(f"no answer within timeout_s={self.spec.timeout_s}")
        if self._error is not None or self._session is None:
            await self.aclose()
            raise ToolError(
                f"MCP server of tool '{self.spec.name}' did not start: {_describe(self._error)}",
                where=str(self.spec.location or ""),
                hint=f"run `{' '.join(self._argv())}` yourself to see its output",
            )

    async def call(self, offered_name: str, arguments: dict[str, Any]) -> ToolOutput:
        """Call one of the server's tools; an ``isError`` answer is a ``ToolFailed``."""
        result = await self._session.call_tool(self._names[offered_name], arguments)
        parts: list[str] = []
        for block in result.content:
            text = getattr(block, "text", None)
            parts.append(text if isinstance(text, str) else block.model_dump_json())
        if not parts and result.structured_content is not None:
            parts.append(json.dumps(result.structured_content, ensure_ascii=False))
        text = "\n".join(parts)
        if result.is_error:
            raise ToolFailed(text or "the MCP tool reported an error")
        return ToolOutput(text)

    async def aclose(self) -> None:
        """Close the session and stop the server (the SDK waits for it, then kills it)."""
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None

    def _argv(self) -> list[str]:
        return [str(a) for a in self.spec.target["command"]]

    async def _serve(self) -> None:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        argv = self._argv()
        base_dir = declared_in(self.spec)
        program = resolve_executable(argv[0], base_dir)
        try:
            if program is None:
                raise FileNotFoundError(f"program {argv[0]!r} was not found")
            params = StdioServerParameters(command=program, args=argv[1:], cwd=base_dir)
            with open(os.devnull, "w", encoding="utf-8") as errlog:  # noqa: ASYNC230 - devnull never blocks
                async with (
                    stdio_client(params, errlog=errlog) as streams,
                    ClientSession(*streams) as session,
                ):
                    await session.initialize()
                    self._list(await _all_tools(session))
                    self._session = session
                    self._ready.set()
                    await self._closing.wait()
        except Exception as exc:  # reported by start(); a server that dies later fails its calls
            self._error = exc
        finally:
            self._session = None
            self._ready.set()

    def _list(self, tools: list[Any]) -> None:
        definitions = []
        for tool in tools:
            offered = f"{self.spec.name}__{_UNSAFE.sub('_', tool.name)}"[:64]
            self._names[offered] = tool.name
            schema = tool.input_schema or {"type": "object"}
            definitions.append(ToolDefinition(offered, tool.description or tool.name, schema))
        self.definitions = tuple(definitions)


async def _all_tools(session: Any) -> list[Any]:
    """Every tool of the server, following pagination."""
    from mcp.types import PaginatedRequestParams

    tools: list[Any] = []
    cursor: str | None = None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "it closed the session"
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in error.exceptions)
    return f"{type(error).__name__}: {error}"
