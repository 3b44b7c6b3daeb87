"""What ``aoe validate`` checks of a workflow's tools beyond the schema.

``python:`` targets must import and be callable (this imports the user's module from the
directory of the file declaring it, as a run would); ``command:`` and ``mcp:`` programs
must exist; ``mcp:`` needs the optional SDK; an ``http:`` url must fix its origin or list
``allowed_hosts`` (and then send no ``env:`` credentials). Each problem points at the tool's entry.
That every tool an agent names is declared is the loader's check.
"""

from __future__ import annotations

from aoe.errors import Problem
from aoe.spec.models import ToolSpec, WorkflowSpec, thaw
from aoe.tools.base import declared_in, resolve_executable
from aoe.tools.mcp_tool import INSTALL_HINT, mcp_available
from aoe.tools.python_tool import load_function


def tool_problems(spec: WorkflowSpec) -> list[Problem]:
    """Every problem of ``spec``'s tools, in declaration order."""
    problems: list[Problem] = []
    for tool in spec.tools.values():
        for message, hint in _check(tool):
            at = tool.location
            problems.append(
                Problem(
                    at.file if at else str(spec.path),
                    at.line if at else 1,
                    at.col if at else 1,
                    message,
                    hint,
                )
            )
    return problems


def _check(tool: ToolSpec) -> list[tuple[str, str]]:
    if tool.kind == "python":
        return _python(tool)
    if tool.kind == "http":
        return _http(tool)
    if tool.kind == "command":
        return _program(tool, [str(a) for a in tool.target["argv"]])
    if tool.kind == "mcp":
        found = _program(tool, [str(a) for a in tool.target["command"]])
        if not mcp_available():
            found.append(
                (
                    f"tool '{tool.name}' is an MCP server, but the MCP SDK is not installed",
                    INSTALL_HINT,
                )
            )
        return found
    return []


def _python(tool: ToolSpec) -> list[tuple[str, str]]:

    target = str(tool.target["function"])
    base_dir = declared_in(tool)
    try:
        load_function(target, base_dir)
    except (Exception, SystemExit) as exc:  # user code can raise anything while importing
        module = target.partition(":")[0]
        return [
            (
                f"tool '{tool.name}': python target {target} cannot be used: "
                f"{type(exc).__name__}: {exc}",
                f"{module.replace('.', '/')}.py must be importable from {base_dir} "
                "(the workflow's directory) or an installed package, and name a function",
            )
        ]
    return []


def _http(tool: ToolSpec) -> list[tuple[str, str]]:
    # httpx (about 100 ms to import) only for a workflow that has http: tools
    from aoe.tools.http_url import UrlPlan  # noqa: PLC0415

    target = thaw(tool.target)
    try:
        plan = UrlPlan.of(str(target["url"]), target.get("allowed_hosts"))
    except ValueError as exc:
        return [
            (
                f"tool '{tool.name}': {exc}",
                "write the scheme, host and port in the url itself; if the host truly comes "
                "from the arguments, list the hosts it may be under allowed_hosts",
            )
        ]
    headers = target.get("headers") or {}
    if plan.origin is None and any(isinstance(v, dict) for v in headers.values()):
        return [
            (
                f"tool '{tool.name}': a url whose host comes from the arguments cannot send "
                "env: credentials",
                "give each host its own tool with a fixed url, or leave the credential out",
            )
        ]
    return []


def _program(tool: ToolSpec, argv: list[str]) -> list[tuple[str, str]]:
    if resolve_executable(argv[0], declared_in(tool)) is not None:
        return []
    return [
        (
            f"tool '{tool.name}': program {argv[0]!r} was not found",
            "install it or put it on PATH; a path with a / is read from the workflow's "
            "directory and must be executable",
        )
    ]
