"""``uses:`` resolution: reusable agent files, their parameters and ``with:`` values.

A workflow agent may name an agent file (``uses: agents/three-way-match.yaml``, relative
to the file that names it); that file may itself use another. Each file is read and
schema-checked once per load, however many agents use it. Settings merge innermost
first (the used file's used file, then the used file, then the agent entry); ``with:``
sets the used file's ``parameters``, which templates read as ``{{ with.name }}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoe.errors import AoeError, Problem, SpecError
from aoe.spec.schema import describe, dotted, kind_of, suggest, type_matches, validate
from aoe.spec.yamlload import PathKey, YamlDocument, read_yaml

__all__ = ["AgentFile", "Layer", "UsesResolver"]

FILE_ONLY_KEYS = frozenset({"uses", "with", "parameters", "version"})
"""Keys of an agent file that are about the file itself, not settings to merge."""


@dataclass(frozen=True, slots=True, eq=False)
class Layer:
    """One source of agent settings: a mapping at ``base`` inside ``doc``."""

    data: Mapping[str, Any]
    doc: YamlDocument
    base: PathKey


@dataclass(frozen=True, slots=True, eq=False)
class AgentFile:
    """A used agent file, resolved: its layers (innermost first) and ``with`` values.

    ``with_values`` are the values this file's own ``with:`` gave to the file it uses
    (plus that file's defaults); ``parameters`` are what this file takes.
    """

    path: Path
    doc: YamlDocument
    layers: tuple[Layer, ...]
    parameters: Mapping[str, Mapping[str, Any]]
    with_values: Mapping[str, Any]


class UsesResolver:
    """Reads used agent files once and resolves ``uses:`` chains, detecting loops."""

    def __init__(self) -> None:
        self._docs: dict[Path, YamlDocument | Problem] = {}
        self._resolved: dict[Path, AgentFile | str] = {}
        self.problems: set[Problem] = set()

    def resolve(
        self, uses: str, owner: YamlDocument, owner_path: Path, at: PathKey
    ) -> AgentFile | None:
        """The agent file ``uses`` names (from ``owner`` at ``at``), or None after a Problem.

        Problems go to ``self.problems``; the one about this ``uses:`` points at its line.
        """
        target, display = _target(uses, owner_path, owner.file)
        found = self._resolve(target, display, (owner_path.resolve(),))
        if isinstance(found, AgentFile):
            return found
        line, col = owner.positions.value((*at, "uses"))
        hint = _USES_HINT
        if found.endswith("does not exist") and target.parent.is_dir():
            nearby = [p.name for p in target.parent.iterdir() if p.suffix in (".yaml", ".yml")]
            close = suggest(target.name, nearby) if nearby else None
            if close and close.startswith("did you mean"):
                hint = close
        self.problems.add(Problem(owner.file, line, col, f"{dotted((*at, 'uses'))}: {found}", hint))
        return None

    def _resolve(self, target: Path, display: str, chain: tuple[Path, ...]) -> AgentFile | str:
        key = target.resolve()
        if key in chain:
            names = [p.name for p in (*chain, key)]
            start = names.index(key.name)
            return "loop of uses: " + " -> ".join(names[start:])
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        doc = self._read(target, display)
        if isinstance(doc, Problem):
            return doc.message
        result = self._build(target, doc, (*chain, key))
        if not (isinstance(result, str) and result.startswith("loop of uses")):
            self._resolved[key] = result
        return result

    def _read(self, target: Path, display: str) -> YamlDocument | Problem:
        key = target.resolve()
        cached = self._docs.get(key)
        if cached is not None:
            return cached
        result: YamlDocument | Problem
        if not target.is_file():
            what = "is a directory, not a file" if target.is_dir() else "does not exist"
            result = Problem(display, 1, 1, f"{display} {what}")
            self._docs[key] = result
            return result
        try:
            doc = read_yaml(target, display=display)
        except SpecError as exc:
            self.problems.update(exc.problems)
            first = exc.problems[0]
            result = Problem(
                first.file,
                first.line,
                first.col,
                f"{display} is not a valid agent file ({first.message})",
            )
        except AoeError as exc:
            result = Problem(display, 1, 1, f"cannot use {display}: {exc.message}")
        else:
            self.problems.update(doc.problems)
            result = doc
            if not isinstance(doc.data, dict):
                result = Problem(
                    display,
                    1,
                    1,
                    f"{display} is not a valid agent file (it "
                    f"holds {kind_of(doc.data)}, not a mapping of agent settings)",
                )
            else:
                problems = validate(doc.data, "agent", doc.file, doc.positions)
                if problems:
                    self.problems.update(problems)
                    result = Problem(
                        display,
                        1,
                        1,
                        f"{display} is not a valid agent file: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                    )
        self._docs[key] = result
        return result

    def _build(self, target: Path, doc: YamlDocument, chain: tuple[Path, ...]) -> AgentFile | str:
        data: dict[str, Any] = doc.data
        layers: list[Layer] = []
        with_values: dict[str, Any] = {}
        inner_uses = data.get("uses")
        if isinstance(inner_uses, str):
            inner_target, inner_display = _target(inner_uses, target, doc.file)
            inner = self._resolve(inner_target, inner_display, chain)
            if isinstance(inner, str):
                if inner.startswith("loop of uses"):
                    return inner
                line, col = doc.positions.value(("uses",))
                self.problems.add(Problem(doc.file, line, col, f"uses: {inner}", _USES_HINT))
                return f"{doc.file} uses a file that is not valid"
            layers.extend(inner.layers)
            with_values.update(inner.with_values)
            with_values.update(check_with(data.get("with"), inner, doc, (), self.problems))
        layers.append(Layer(data, doc, ()))
        parameters = data.get("parameters") or {}
        return AgentFile(target, doc, tuple(layers), parameters, with_values)


_USES_HINT = "uses: takes a path to an agent file, relative to the file that names it"


def _target(uses: str, owner_path: Path, owner_display: str) -> tuple[Path, str]:
    target = owner_path.parent / uses
    display = os.path.normpath(os.path.join(os.path.dirname(owner_display), uses))
    return target, display


def check_with(
    given: Any, used: AgentFile, owner: YamlDocument, at: PathKey, problems: set[Problem]
) -> dict[str, Any]:
    """The parameter values for ``used``: its defaults, then ``given`` (the ``with:``).

    Unknown keys, wrong types and missing required parameters become Problems in
    ``problems``, at the ``with:`` entry (or the ``uses:`` line when one is missing).
    """
    values: dict[str, Any] = {}
    given = given if isinstance(given, dict) else {}
    params = used.parameters
    name = used.doc.file
    for key, value in given.items():
        spec = params.get(key)
        if spec is None:
            line, col = owner.positions.key((*at, "with", key))
            hint = suggest(key, params) if params else f"{name} declares no parameters"
            problems.add(
                Problem(
                    owner.file,
                    line,
                    col,
                    f"{dotted((*at, 'with'))}: {name} has no parameter '{key}'",
                    hint,
                )
            )
            continue
        wanted = spec.get("type")
        if isinstance(wanted, str) and not type_matches(value, wanted):
            line, col = owner.positions.value((*at, "with", key))
            problems.add(
                Problem(
                    owner.file,
                    line,
                    col,
                    f"{dotted((*at, 'with', key))}: expected {wanted}, got {describe(value)}",
                )
            )
        values[key] = value
    for key, spec in params.items():
        if key in values:
            continue
        if "default" in spec:
            values[key] = spec["default"]
        else:
            line, col = owner.positions.value((*at, "uses"))
            problems.add(
                Problem(
                    owner.file,
                    line,
                    col,
                    f"{dotted(at) if at else 'uses'}: parameter '{key}' of {name} is required",
                    f"set it under with:, e.g. with: {{{key}: ...}}",
                )
            )
    return values
