"""`aoe validate` checks tools: python targets import and are callable, programs exist."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from aoe.app.validate import check_workflow
from aoe.errors import SpecError
from tests.tools.specs import module_name

REPO = Path(__file__).resolve().parents[2]


def _workflow(tmp_path: Path, tools: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nagents:\n  a:\n    model: sim/x\n    prompt: hi\n    tools: [t]\n"
        "tools:\n  t:\n    description: a tool\n" + textwrap.indent(tools, "    ")
    )
    return path


def _problems(path: Path) -> list[tuple[int, str, str | None]]:
    with pytest.raises(SpecError) as caught:
        check_workflow(path)
    return [(p.line, p.message, p.hint) for p in caught.value.problems]


def test_a_python_target_beside_the_workflow_passes(tmp_path: Path) -> None:
    """package.module:function importable from the workflow's directory is fine."""
    name = module_name("vtools")
    (tmp_path / f"{name}.py").write_text("def lookup(name):\n    return name\n")
    checked = check_workflow(_workflow(tmp_path, f"python: {name}:lookup\n"))
    assert checked.spec.tools["t"].kind == "python"


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (None, "missing_{m}.x:f", "ModuleNotFoundError"),
        ("raise RuntimeError('needs the ERP VPN')\n", "{m}:f", "RuntimeError: needs the ERP VPN"),
        ("import sys\nsys.exit(4)\n", "{m}:f", "SystemExit"),
        ("def g():\n    pass\n", "{m}:f", "has no attribute 'f'"),
        ("f = 'not callable'\n", "{m}:f", "is a str, not a function"),
    ],
)
def test_a_python_target_that_cannot_be_used_is_a_problem_at_the_tool(
    tmp_path: Path, source: str | None, target: str, expected: str
) -> None:
    """Import failures of any kind, missing names and non-callables point at the tool's line."""
    name = module_name("vtools")
    if source is not None:
        (tmp_path / f"{name}.py").write_text(source)
    path = _workflow(tmp_path, f"python: {target.format(m=name)}\n")
    [(line, message, hint)] = _problems(path)
    assert line == 8
    assert expected in message
    assert hint is not None
    assert str(tmp_path) in hint


def test_command_programs_must_exist_on_path_or_beside_the_workflow(tmp_path: Path) -> None:
    """A name is looked up on PATH, a path from the workflow's directory; missing is a problem."""
    [(line, message, _)] = _problems(_workflow(tmp_path, "command: [no-such-erp-cli-aoe, x]\n"))
    assert (line, message) == (8, "tool 't': program 'no-such-erp-cli-aoe' was not found")
    assert _problems(_workflow(tmp_path, "command: [bin/stock.sh]\n"))
    script = tmp_path / "bin" / "stock.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho 1\n")
    script.chmod(0o755)
    check_workflow(_workflow(tmp_path, "command: [bin/stock.sh]\n"))
    check_workflow(_workflow(tmp_path, "command: [sh, -c, 'echo hi']\n"))


def test_an_mcp_server_program_must_exist(tmp_path: Path) -> None:
    """mcp: servers are checked like commands."""
    [(_, message, _)] = _problems(_workflow(tmp_path, "mcp: {command: [no-such-mcp-aoe]}\n"))
    assert "program 'no-such-mcp-aoe' was not found" in message


@pytest.mark.parametrize("name", ["invoice-processing.yaml", "mcp-inventory.yaml"])
def test_the_shipped_tool_workflows_validate(name: str) -> None:
    """The examples' python targets import and their programs exist."""
    checked = check_workflow(REPO / "workflows" / name)
    assert checked.spec.tools


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        ('{url: "http://127.0.0.1:8000{{ args.path }}"}', "needs allowed_hosts"),
        ('{url: "http://{{ args.host }}/v"}', "needs allowed_hosts"),
        ('{url: "https://user:pw@erp.example/v"}', "user name or password"),
        ('{url: "https://erp.example:99999/v"}', "no valid port"),
        ('{url: "http://{{ args.host }}/v", allowed_hosts: ["erp.example:0"]}', "no valid port"),
        ('{url: "http://{{ args.host }}/v", allowed_hosts: ["not a host"]}', "not a host name"),
        (
            '{url: "http://{{ args.host }}/v", allowed_hosts: [erp.example],'
            " headers: {Authorization: {env: ERP_TOKEN}}}",
            "cannot send env: credentials",
        ),
    ],
)
def test_an_http_tool_whose_arguments_could_pick_its_origin_is_a_problem(
    tmp_path: Path, http: str, expected: str
) -> None:
    """A url whose host or port comes from the arguments without allowed_hosts, a bad
    allowed_hosts entry, or credentials that could follow a host from the arguments are
    problems at the tool's line, before any run."""
    [(line, message, hint)] = _problems(_workflow(tmp_path, f"http: {http}\n"))
    assert line == 8
    assert expected in message
    assert hint


def test_an_http_tool_with_a_fixed_origin_or_listed_hosts_passes(tmp_path: Path) -> None:
    """A literal origin with templated path and query, or a templated host with
    allowed_hosts (names, wildcards, addresses, networks, ports), passes validate."""
    fixed = '{url: "https://erp.example/api/{{ args.id }}?q={{ args.q }}"}'
    assert check_workflow(_workflow(tmp_path, f"http: {fixed}\n"))
    listed = (
        '{url: "https://{{ args.host }}/v", allowed_hosts: [erp.example, "*.erp.example",'
        ' "10.0.0.0/8", "127.0.0.1:8080", "[::1]:8080"], follow_redirects: true}'
    )
    assert check_workflow(_workflow(tmp_path, f"http: {listed}\n"))
