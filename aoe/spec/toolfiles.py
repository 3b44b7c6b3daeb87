"""Shared tools files: ``tools: {name: {uses: tools/erp.yaml}}`` in a workflow.

A tools file (``version: 1``, ``description``, ``tools: {name: definition}``) holds tool
definitions exactly as a workflow's ``tools:`` does, so several workflows can share them.
A workflow entry ``{uses: PATH}`` (relative to the workflow file) takes the tool of the
same name. Each file is read and schema-checked once per load. A tools file may not use
another: one level keeps "where does this tool come from?" a one-file answer.

Problems of the reference (no such file, no such tool, a file that is not valid) point
at the workflow's ``uses:`` line; problems inside the file point at the file's own lines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoe.errors import AoeError, Problem, SpecError
from aoe.spec.schema import dotted, kind_of, suggest, validate
from aoe.spec.yamlload import PathKey, YamlDocument, read_yaml

__all__ = ["ToolsFile", "ToolsFileResolver"]

_USES_HINT = "uses: takes a path to a tools file, relative to the workflow file"
_NESTED_HINT = "define the tool in this file, or have the workflow use: the other file directly"


@dataclass(frozen=True, slots=True, eq=False)
class ToolsFile:
    """A valid tools file: its parsed document and its tool definitions by name."""

    path: Path
    doc: YamlDocument
    tools: Mapping[str, Mapping[str, Any]]


class ToolsFileResolver:
    """Reads each used tools file once and looks tools up in it; problems collect here."""

    def __init__(self) -> None:
        self._files: dict[Path, ToolsFile | str] = {}
        self.problems: set[Problem] = set()

    def resolve(
        self, uses: str, name: str, owner: YamlDocument, owner_path: Path, at: PathKey
    ) -> tuple[YamlDocument, Mapping[str, Any]] | None:
        """The tools file's document and its definition of ``name``, or None after a Problem.

        ``at`` is the workflow entry (``("tools", name)``) whose ``uses:`` names the file.
        """
        target = owner_path.parent / uses
        display = os.path.normpath(os.path.join(os.path.dirname(owner.file), uses))
        found = self._file(target, display)
        line, col = owner.positions.value((*at, "uses"))
        where = dotted((*at, "uses"))
        if isinstance(found, str):
            self.problems.add(Problem(owner.file, line, col, f"{where}: {found}", _hint(target)))
            return None
        definition = found.tools.get(name)
        if definition is None:
            self.problems.add(
                Problem(
                    owner.file,
                    line,
                    col,
                    f"{where}: {display} has no tool named '{name}'",
                    suggest(name, found.tools) or f"{display} defines no tools",
                )
            )
            return None
        return found.doc, definition

    def _file(self, target: Path, display: str) -> ToolsFile | str:
        """The file, or why it cannot be used (its own problems go to ``self.problems``)."""
        key = target.resolve()
        cached = self._files.get(key)
        if cached is None:
            cached = self._files[key] = self._read(target, display)
        return cached

    def _read(self, target: Path, display: str) -> ToolsFile | str:
        if not target.is_file():
            what = "is a directory, not a file" if target.is_dir() else "does not exist"
            return f"{display} {what}"
        try:
            doc = read_yaml(target, display=display)
        except SpecError as exc:
            self.problems.update(exc.problems)
            count = len(exc.problems)
            return f"{display} is not a valid tools file (see its problems, {count} in all)"
        except AoeError as exc:
            return f"cannot use {display}: {exc.message}"
        self.problems.update(doc.problems)
        data = doc.data
        if not isinstance(data, dict):
            return (
                f"{display} is not a valid tools file (it holds {kind_of(data)}, "
                "not version: and tools:)"
            )
        checked, nested = self._without_nested_uses(doc)
        problems = validate(checked, "tools", doc.file, doc.positions)
        if nested and not checked.get("tools"):  # every entry was a uses:, said above
            problems = [p for p in problems if "needs at least one" not in p.message]
        self.problems.update(problems)
        if problems or nested:
            count = sum(1 for p in self.problems if p.file == doc.file)
            return f"{display} is not a valid tools file (see its problems, {count} in all)"
        return ToolsFile(target, doc, data["tools"])

    def _without_nested_uses(self, doc: YamlDocument) -> tuple[dict[str, Any], bool]:
        """``doc.data`` minus any ``uses:`` (each reported once, plainly, at its key),
        and whether there was one: the schema would only call it an unknown key."""
        data: dict[str, Any] = dict(doc.data)
        nested = False
        if "uses" in data:
            del data["uses"]
            nested = True
            self._nested(doc, ("uses",), "a tools file cannot use another file")
        tools = data.get("tools")
        if isinstance(tools, dict):
            kept: dict[str, Any] = {}
            for name, entry in tools.items():
                if isinstance(entry, dict) and "uses" in entry:
                    nested = True
                    self._nested(
                        doc,
                        ("tools", name, "uses"),
                        "a tools file cannot take tools from another file; uses: "
                        "is only for a workflow's tools:",
                    )
                else:
                    kept[name] = entry
            data["tools"] = kept
        return data, nested

    def _nested(self, doc: YamlDocument, path: PathKey, message: str) -> None:
        line, col = doc.positions.key(path)
        self.problems.add(Problem(doc.file, line, col, f"{dotted(path)}: {message}", _NESTED_HINT))


def _hint(target: Path) -> str | None:
    """A "did you mean" among the YAML files next to a missing file, else the usage."""
    if target.is_file():
        return None  # the file's own problems say what to fix
    if target.parent.is_dir() and not target.exists():
        nearby = [p.name for p in target.parent.iterdir() if p.suffix in (".yaml", ".yml")]
        close = suggest(target.name, nearby) if nearby else None
        if close and close.startswith("did you mean"):
            return close
    return _USES_HINT
