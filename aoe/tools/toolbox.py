"""The tools one agent may call, and the run-wide set they come from.

``Toolbox`` is what the agent pipeline holds: the definitions to offer the model and
``run(call)``, which never raises for a tool's own failure. Bad JSON, arguments that break
the tool's schema, an unknown name, an exception, a timeout: each becomes an error result
the model reads and can act on. Only cancellation propagates.

``RunTools`` builds tools once per run and hands out per-agent toolboxes: MCP servers
are started on first use and the HTTP client is shared; ``aclose`` ends them all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aoe.providers.base import Message, ToolCall, ToolDefinition
from aoe.spec.models import AgentSpec, Location, ToolSpec, WorkflowSpec, thaw
from aoe.tools.base import (
    LOG_CHARS,
    MAX_RESULT_CHARS,
    Runner,
    ToolFailed,
    ToolOutput,
    ToolResult,
    truncate_text,
)
from aoe.tools.command_tool import CommandTool
from aoe.tools.mcp_tool import McpServer
from aoe.tools.python_tool import PythonTool

if TYPE_CHECKING:
    import httpx
    from jsonschema import Draft202012Validator


@dataclass(frozen=True, slots=True)
class BoundTool:
    """A tool ready to run: what the model is offered, how to run it, how long it may take."""

    definition: ToolDefinition
    runner: Runner
    timeout_s: float


class Toolbox:
    """The tools of one agent (or a view of a run's tools)."""

    def __init__(
        self,
        tools: Iterable[BoundTool],
        *,
        max_result_chars: int = MAX_RESULT_CHARS,
        owner: RunTools | None = None,
    ) -> None:
        self._tools = {t.definition.name: t for t in tools}
        self._validators = {n: _validator(t.definition.parameters) for n, t in self._tools.items()}
        self.max_result_chars = max_result_chars
        self._owner = owner

    @classmethod
    async def open(cls, specs: Iterable[ToolSpec], **options: Any) -> Toolbox:
        """A toolbox of its own (MCP servers started); close it with ``aclose``."""
        source = RunTools(**options)
        try:
            return await source.toolbox(specs, owned=True)
        except BaseException:
            await source.aclose()
            raise

    def definitions(self) -> tuple[ToolDefinition, ...]:
        """What to offer the model, in declaration order."""
        return tuple(t.definition for t in self._tools.values())

    async def run(self, call: ToolCall) -> ToolResult:
        """Run one call; every failure of the tool is an error result, never an exception."""
        started = time.perf_counter()

        def failed(message: str) -> ToolResult:
            text, cut = truncate_text(f"error: {message}", self.max_result_chars)
            return ToolResult(text, True, cut, time.perf_counter() - started)

        tool = self._tools.get(call.name)
        if tool is None:
            offered = ", ".join(self._tools) or "none"
            return failed(f"there is no tool named {call.name!r} (tools: {offered})")
        arguments, problem = self._arguments(call)
        if arguments is None:
            return failed(f"invalid arguments for {call.name}: {problem}")
        try:
            async with asyncio.timeout(tool.timeout_s):
                output: ToolOutput = await tool.runner(arguments)
        except TimeoutError:
            return failed(f"{call.name} did not finish within timeout_s={tool.timeout_s:g}")
        except ToolFailed as exc:
            return failed(str(exc))
        except (Exception, SystemExit) as exc:  # the tool's bug, told to the model, not a crash
            return failed(f"{call.name} raised {type(exc).__name__}: {exc}")
        text, cut = truncate_text(output.text, self.max_result_chars)
        return ToolResult(text, False, cut or output.truncated, time.perf_counter() - started)

    async def run_all(self, calls: Sequence[ToolCall]) -> tuple[ToolResult, ...]:
        """Run the calls of one turn concurrently; results in the order of the calls."""
        return tuple(await asyncio.gather(*(self.run(c) for c in calls)))

    async def aclose(self) -> None:
        """Close what this toolbox owns (nothing, for a view of a run's tools)."""
        if self._owner is not None:
            await self._owner.aclose()

    def _arguments(self, call: ToolCall) -> tuple[dict[str, Any] | None, str]:
        try:
            value = json.loads(call.arguments_json or "{}")
        except ValueError as exc:
            return None, f"not JSON ({exc})"
        if not isinstance(value, dict):
            return None, f"expected a JSON object, got {type(value).__name__}"
        errors = sorted(self._validators[call.name].iter_errors(value), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            return None, f"at {where}: {errors[0].message}"
        return value, ""


class RunTools:
    """Every tool of a run, built once; ``for_agent`` gives each agent its view.

    A view's ``aclose`` closes nothing: the run's ``aclose`` ends every tool at the end.
    """

    def __init__(self, *, max_result_chars: int = MAX_RESULT_CHARS) -> None:
        self.max_result_chars = max_result_chars
        self._bound: dict[tuple[Location | None, str], tuple[BoundTool, ...]] = {}
        self._servers: list[McpServer] = []
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def for_agent(self, workflow: WorkflowSpec, agent: AgentSpec) -> Toolbox:
        """The tools ``agent`` names, from ``workflow``'s ``tools:``."""
        return await self.toolbox(workflow.tools[name] for name in agent.tools)

    async def toolbox(self, specs: Iterable[ToolSpec], *, owned: bool = False) -> Toolbox:
        """A toolbox of ``specs``; MCP servers among them are started now, once per run."""
        bound: list[BoundTool] = []
        async with self._lock:
            for spec in specs:
                key = (spec.location, spec.name)
                if key not in self._bound:
                    self._bound[key] = await self._bind(spec)
                bound.extend(self._bound[key])
        return Toolbox(bound, max_result_chars=self.max_result_chars, owner=self if owned else None)

    async def aclose(self) -> None:
        """Stop every MCP server and close the HTTP client."""
        servers, self._servers = self._servers, []
        await asyncio.gather(*(s.aclose() for s in servers), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._bound.clear()

    async def _bind(self, spec: ToolSpec) -> tuple[BoundTool, ...]:
        definition = ToolDefinition(spec.name, spec.description, spec.parameters)
        if spec.kind == "python":
            return (BoundTool(definition, PythonTool(spec), spec.timeout_s),)
        if spec.kind == "command":
            return (BoundTool(definition, CommandTool(spec), spec.timeout_s),)
        if spec.kind == "http":
            # httpx (about 100 ms to import) only for a run whose workflow has http: tools;
            # provider calls go over aiohttp
            from aoe.tools.http_tool import HttpTool  # noqa: PLC0415

            return (BoundTool(definition, HttpTool(spec, self._client), spec.timeout_s),)

        server = McpServer(spec)
        await server.start()
        self._servers.append(server)
        return tuple(
            BoundTool(d, _McpRunner(server, d.name), spec.timeout_s) for d in server.definitions
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx  # noqa: PLC0415  (see _bind)

            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http


@dataclass(frozen=True, slots=True)
class _McpRunner:
    server: McpServer
    name: str

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutput:
        return await self.server.call(self.name, arguments)


def result_message(call: ToolCall, result: ToolResult) -> Message:
    """The ``tool`` turn that answers ``call`` in the conversation."""
    return Message("tool", result.content, tool_call_id=call.id, is_error=result.is_error)


def tool_log(
    calls: Sequence[ToolCall], results: Sequence[ToolResult], *, not_run: str = ""
) -> tuple[Mapping[str, Any], ...]:
    """What the ledger keeps of one turn's tool calls: names, arguments and results, cut short.

    A call without a result (the turn was the last one allowed) is logged with ``not_run``.
    """
    entries: list[Mapping[str, Any]] = []
    for index, call in enumerate(calls):
        entry: dict[str, Any] = {
            "id": call.id,
            "name": call.name,
            "arguments": truncate_text(call.arguments_json, LOG_CHARS)[0],
        }
        if index < len(results):
            result = results[index]
            entry.update(
                ok=not result.is_error,
                result=truncate_text(result.content, LOG_CHARS)[0],
                result_chars=len(result.content),
                truncated=result.truncated,
                duration_s=round(result.duration_s, 6),
            )
        else:
            entry.update(ok=False, result=not_run or "not run")
        entries.append(entry)
    return tuple(entries)


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - 140 ms, only for tools

    return Draft202012Validator(thaw(schema))


class PrivateTools:
    """Tools for a run that shares none: each agent's toolbox is its own.

    What a library run gets when it passes no tool source; the pipeline's
    ``toolbox.aclose()`` then stops what that agent started (its MCP servers).
    """

    async def for_agent(self, workflow: WorkflowSpec, agent: AgentSpec) -> Toolbox:
        return await Toolbox.open(workflow.tools[name] for name in agent.tools)

    async def aclose(self) -> None:
        return None
