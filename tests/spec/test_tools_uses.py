"""Shared tools files: a workflow's ``tools: {name: {uses: FILE}}`` takes a tool from a file."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from aoe.app.validate import check_workflow
from aoe.errors import Problem, SpecError
from aoe.spec import load_workflow
from aoe.spec.fastcheck import compile_schema
from aoe.spec.schema import load_schema
from aoe.tools.base import declared_in
from aoe.tools.command_tool import CommandTool
from aoe.tools.python_tool import PythonTool

WORKFLOW = """
version: 1
agents:
  check:
    model: sim/fast
    prompt: Check the vendor
    tools: [lookup, here]
tools:
  lookup: {uses: shared/erp.yaml}
  here:
    description: Defined in the workflow itself
    command: [python, -c, "print(1)"]
"""

TOOLS = """
version: 1
description: ERP lookups
tools:
  lookup:
    description: Look a vendor up
    parameters: {type: object, required: [name], properties: {name: {type: string}}}
    PYTHON_OR_COMMAND
    timeout_s: 5
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _setup(tmp_path: Path, kind: str, workflow: str = WORKFLOW) -> Path:
    _write(tmp_path / "shared" / "erp.yaml", TOOLS.replace("PYTHON_OR_COMMAND", kind))
    return _write(tmp_path / "w.yaml", workflow)


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_workflow(path)
    return list(caught.value.problems)


def _at(problems: list[Problem], path: Path, line: int) -> list[Problem]:
    return [p for p in problems if Path(p.file) == path and p.line == line]


def test_a_tool_from_a_shared_file_has_its_definition_and_its_location(tmp_path: Path) -> None:
    """The imported tool is the file's definition, located where the file defines it."""
    path = _setup(tmp_path, "python: tmp_erp_a.vendors:lookup")
    spec = load_workflow(path)
    tool = spec.tools["lookup"]
    assert tool.kind == "python"
    assert tool.target == {"function": "tmp_erp_a.vendors:lookup"}
    assert tool.description == "Look a vendor up"
    assert tool.parameters["required"] == ("name",)
    assert tool.timeout_s == 5.0
    assert tool.location is not None
    assert Path(tool.location.file) == tmp_path / "shared" / "erp.yaml"
    assert (tool.location.line, tool.location.col) == (4, 3)
    here = spec.tools["here"].location
    assert here is not None
    assert Path(here.file) == path
    assert here.line == 9
    assert spec.agents["check"].tools == ("lookup", "here")


async def test_python_targets_import_from_the_tools_files_directory(tmp_path: Path) -> None:
    """A package next to the tools file is imported, wherever the workflow file is."""
    _write(
        tmp_path / "shared" / "tmp_erp_b" / "vendors.py",
        "def lookup(name):\n    return {'found': name == 'ACME'}\n",
    )
    (tmp_path / "shared" / "tmp_erp_b" / "__init__.py").write_text("")
    path = _setup(tmp_path, "python: tmp_erp_b.vendors:lookup")
    checked = check_workflow(path)  # `aoe validate` imports the target
    tool = checked.spec.tools["lookup"]
    assert declared_in(tool) == (tmp_path / "shared").resolve()
    output = await PythonTool(tool)({"name": "ACME"})
    assert output.text == '{"found": true}'


async def test_commands_run_in_the_tools_files_directory(tmp_path: Path) -> None:
    """A command: tool from a shared file runs where that file is, not the workflow's folder."""
    path = _setup(tmp_path, 'command: [python, -c, "import os; print(os.getcwd())"]')
    tool = load_workflow(path).tools["lookup"]
    output = await CommandTool(tool)({"name": "x"})
    assert Path(output.text.strip()) == (tmp_path / "shared").resolve()


def test_a_missing_tools_file_is_reported_at_the_uses_line(tmp_path: Path) -> None:
    """A typo in the path names the uses: line and suggests the file that exists."""
    _setup(tmp_path, "python: m:f")
    path = _write(tmp_path / "w.yaml", WORKFLOW.replace("shared/erp.yaml", "shared/erp.yml"))
    (problem,) = _problems(path)
    assert (Path(problem.file), problem.line, problem.col) == (path, 8, 18)
    assert "tools.lookup.uses:" in problem.message
    assert "does not exist" in problem.message
    assert problem.hint == "did you mean 'erp.yaml'?"


def test_a_name_the_tools_file_lacks_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    """Importing a tool the file does not define says which file, and the close name."""
    path = _setup(
        tmp_path,
        "python: m:f",
        WORKFLOW.replace("lookup: {uses", "lookups: {uses").replace("[lookup,", "[lookups,"),
    )
    (problem,) = _problems(path)
    assert (Path(problem.file), problem.line) == (path, 8)
    assert "has no tool named 'lookups'" in problem.message
    assert problem.hint == "did you mean 'lookup'?"


def test_a_tools_file_that_breaks_its_schema_is_reported_in_that_file(tmp_path: Path) -> None:
    """A mistake inside the tools file points at the file's own line, and the uses: line
    says that file is not valid."""
    path = _setup(tmp_path, "python: m:f\n    timeout: 5")
    tools_file = tmp_path / "shared" / "erp.yaml"
    problems = _problems(path)
    (inside,) = _at(problems, tools_file, 8)
    assert "tools.lookup: unknown key 'timeout'" in inside.message
    assert inside.hint == "did you mean 'timeout_s'?"
    (reference,) = _at(problems, path, 8)
    assert "is not a valid tools file" in reference.message


def test_a_tools_file_cannot_itself_use_another(tmp_path: Path) -> None:
    """uses: inside a tools file is refused plainly at its line, not as a schema puzzle."""
    path = _setup(tmp_path, "python: m:f")
    tools_file = tmp_path / "shared" / "erp.yaml"
    text = tools_file.read_text() + "  other: {uses: more.yaml}\n"
    tools_file.write_text("uses: base.yaml\n" + text)
    problems = _problems(path)
    top = _at(problems, tools_file, 1)
    nested = _at(problems, tools_file, 10)
    assert [p.message for p in top] == ["uses: a tools file cannot use another file"]
    assert len(nested) == 1
    assert "cannot take tools from another file" in nested[0].message
    assert all("unknown key" not in p.message for p in problems)
    assert "is not a valid tools file" in _at(problems, path, 8)[0].message


def test_a_uses_entry_takes_nothing_else(tmp_path: Path) -> None:
    """{uses, timeout_s} is a mistake the schema names, at the extra key."""
    path = _setup(
        tmp_path,
        "python: m:f",
        WORKFLOW.replace("{uses: shared/erp.yaml}", "{uses: x, timeout_s: 2}"),
    )
    problems = _problems(path)
    assert [(p.line, p.message) for p in problems if "unknown key" in p.message] == [
        (8, "tools.lookup: unknown key 'timeout_s'")
    ]


def test_a_file_that_is_not_yaml_mapping_is_refused(tmp_path: Path) -> None:
    """A tools file holding a list is named as not a tools file, at the uses: line."""
    path = _setup(tmp_path, "python: m:f")
    (tmp_path / "shared" / "erp.yaml").write_text("- a\n- b\n")
    (problem,) = _problems(path)
    assert problem.line == 8
    assert "is not a valid tools file (it holds a list" in problem.message


def test_the_tools_schema_uses_the_workflow_schemas_tool_definition() -> None:
    """The tools-file format cannot drift from a workflow's tools: entry."""
    tools = load_schema("tools")
    workflow = load_schema("workflow")
    assert tools["properties"]["tools"]["additionalProperties"] == {"$ref": "#/$defs/tool"}
    assert tools["$defs"]["tool"] == workflow["$defs"]["tool"]


def test_workflows_with_uses_entries_take_the_fast_schema_path() -> None:
    """Valid uses: entries pass the fast check; a uses: entry with extra keys does not."""
    fast = compile_schema(load_schema("workflow"))
    doc = {"version": 1, "agents": {"a": {"prompt": "x"}}, "tools": {"t": {"uses": "f.yaml"}}}
    assert fast(doc)
    doc["tools"] = {"t": {"uses": "f.yaml", "python": "m:f"}}
    assert not fast(doc)


def test_a_yaml_error_in_the_tools_file_points_into_that_file(tmp_path: Path) -> None:
    """A syntax error in the shared file is shown at the file's own line, never a traceback."""
    path = _setup(tmp_path, "python: m:f")
    tools_file = tmp_path / "shared" / "erp.yaml"
    tools_file.write_text("version: 1\ntools:\n  lookup: {description: d, python: 'm:f'\n")
    problems = _problems(path)
    assert any(Path(p.file) == tools_file and "YAML syntax error" in p.message for p in problems)
    (reference,) = _at(problems, path, 8)
    assert "is not a valid tools file" in reference.message
