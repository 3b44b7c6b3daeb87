"""Workflow inputs from the command line: ``--input KEY=VALUE`` and ``--inputs FILE``.

Command-line values arrive as strings; ``resolve_inputs`` converts them to each input's
declared type (``--input limit=5000`` becomes the number 5000), applies defaults, and
rejects what does not fit, naming the input, before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aoe.errors import AoeError, UsageError
from aoe.spec.models import InputSpec, WorkflowSpec, freeze
from aoe.spec.schema import describe, kind_of, suggest, type_matches
from aoe.spec.yamlload import read_yaml

__all__ = ["parse_input_args", "resolve_inputs"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def parse_input_args(pairs: Sequence[str], files: Sequence[Path]) -> dict[str, Any]:
    """Merge ``--inputs`` files (later wins) and then ``--input`` pairs (which win).

    ``KEY=@path`` reads the file's text as the value, as curl does. Values from pairs
    stay strings here; ``resolve_inputs`` converts them to the declared types.
    """
    given: dict[str, Any] = {}
    for file in files:
        given.update(_read_inputs_file(Path(file)))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--input expects KEY=VALUE, got {pair!r}",
                hint="e.g. --input invoice_text=@invoice.txt or --input limit=5000",
            )
        if value.startswith("@"):
            value = _read_text(Path(value[1:]), key)
        given[key] = value
    return given


def _read_text(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--input {key}=@{path}: file not found: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--input {key}=@{path}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"--input {key}=@{path}: cannot read {path}: {exc.strerror}") from None


def _read_inputs_file(path: Path) -> Mapping[str, Any]:
    """A JSON or YAML mapping of input values."""

    if path.suffix.lower() == ".json":
        text = _read_text(path, "--inputs")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                where=f"{path}:{exc.lineno}:{exc.colno}",
            ) from None
    else:
        try:
            doc = read_yaml(path)
        except AoeError as exc:
            raise UsageError(f"--inputs {path}: {exc}", hint=exc.hint) from None
        if doc.problems:
            first = doc.problems[0]
            raise UsageError(f"--inputs {first}", hint=first.hint)
        data = doc.data
    if not isinstance(data, dict):
        raise UsageError(
            f"--inputs {path} must hold a mapping of input names to values, not {kind_of(data)}",
            hint='e.g. {"invoice_text": "..."}',
        )
    return data


def resolve_inputs(spec: WorkflowSpec, given: Mapping[str, Any]) -> Mapping[str, Any]:
    """The input values of one run: ``given`` converted to declared types, plus defaults.

    Raises ``UsageError`` naming every undeclared, missing or mistyped input.
    """
    errors: list[tuple[str, str | None]] = []
    values: dict[str, Any] = {}
    for name in given:
        if name not in spec.inputs:
            declared = ", ".join(sorted(spec.inputs)) or "none"
            hint = suggest(name, spec.inputs)
            errors.append(
                (
                    f"input '{name}' is not declared by {spec.name} (declared: {declared})",
                    hint if hint and hint.startswith("did") else None,
                )
            )
    for name, declared_input in spec.inputs.items():
        if name in given:
            try:
                values[name] = _coerce(declared_input, given[name])
            except ValueError as exc:
                errors.append(
                    (str(exc), f"pass --input {name}=VALUE with a {declared_input.type} value")
                )
        elif declared_input.required:
            what = f" ({declared_input.description})" if declared_input.description else ""
            errors.append(
                (
                    f"missing required input '{name}'{what}",
                    f"pass --input {name}=VALUE (or --input {name}=@file)",
                )
            )
        else:
            values[name] = declared_input.default
    if errors:
        message = (
            errors[0][0]
            if len(errors) == 1
            else (f"{len(errors)} input problems: " + "; ".join(m for m, _ in errors))
        )
        raise UsageError(message, where=str(spec.path), hint=errors[0][1])
    frozen: Mapping[str, Any] = freeze(values)
    return frozen


def _coerce(spec: InputSpec, value: Any) -> Any:
    """``value`` as ``spec.type``; strings from the command line are parsed."""
    kind = spec.type
    if isinstance(value, str) and kind != "string":
        value = _parse(spec.name, kind, value)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not type_matches(value, kind):
        raise ValueError(f"input '{spec.name}' must be {_A[kind]}, got {describe(value)}")
    return value


def _parse(name: str, kind: str, text: str) -> Any:
    stripped = text.strip()
    try:
        if kind == "integer":
            return int(stripped)
        if kind == "number":
            number = float(stripped)
            return int(number) if _looks_integral(stripped) else number
        if kind == "boolean":
            lowered = stripped.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        return json.loads(text)  # object or array
    except ValueError:
        raise ValueError(f"input '{name}' must be {_A[kind]}, got {text[:60]!r}") from None


def _looks_integral(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isdigit()


_A = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a JSON array",
}
