"""JSON Schema validation of workflow, agent and config files, as Problems a person reads.

The schemas in ``aoe/schemas/`` are the one definition of the file formats (editors use
them too). jsonschema's raw errors dump whole objects; here each error becomes one
``Problem`` at the offending node: an unknown key points at the key itself with a
"did you mean" hint, a wrong value at the value, a missing key at its mapping.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from aoe.errors import Problem
from aoe.spec.fastcheck import Check, UnsupportedSchema, compile_schema
from aoe.spec.yamlload import PathKey, Positions

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

__all__ = [
    "SCHEMA_NAMES",
    "check_json_schema",
    "describe",
    "dotted",
    "load_schema",
    "suggest",
    "type_matches",
    "validate",
]

SCHEMA_NAMES = ("workflow", "agent", "config", "tools")

_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_PATTERN_TEXT: Mapping[str, tuple[str, str]] = {
    _ID_PATTERN: (
        "is not a valid name",
        "names start with a letter or _ and contain only letters, digits, _ and -",
    ),
    r"^[A-Za-z0-9_.-]+/\S+$": (
        "is not a model of the form provider/name",
        "e.g. openai/gpt-4o-mini, anthropic/claude-sonnet-4-5 or sim/fast",
    ),
    r"^[A-Za-z_][A-Za-z0-9_]*$": (
        "is not a valid environment variable name",
        "use letters, digits and _ (not starting with a digit)",
    ),
    "^https?://": ("is not an http:// or https:// URL", "e.g. https://api.example.com/v1"),
    r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$": (
        "is not a Python function reference",
        "write package.module:function",
    ),
}
_REQUIRED_HINTS: Mapping[str, str] = {
    "version": "add 'version: 1' as the first line",
    "agents": "add 'agents:' with at least one agent",
}
_NAME_KINDS: Mapping[str, str] = {
    "agents": "an agent id",
    "tools": "a tool name",
    "inputs": "an input name",
    "parameters": "a parameter name",
    "providers": "a provider name",
}


@cache
def load_schema(name: str) -> Mapping[str, Any]:
    """The packaged schema ``name`` (workflow, agent, config or tools), parsed once.

    A ``$ref`` into a sibling schema (``workflow.schema.json#/$defs/tool``, which editors
    resolve themselves) is bundled here: the sibling's ``$defs`` are copied in and the
    reference made local, so jsonschema and the fast checker see one self-contained schema.
    """
    text = resources.files("aoe").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    siblings: set[str] = set()
    _localize(schema, siblings)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    for sibling in sorted(siblings):
        for key, definition in load_schema(sibling).get("$defs", {}).items():
            if defs.setdefault(key, definition) != definition:
                raise ValueError(f"{name}.schema.json and {sibling}.schema.json define {key}")
    return schema


def _localize(node: Any, siblings: set[str]) -> None:
    """Rewrite ``<name>.schema.json#/$defs/x`` references to ``#/$defs/x``, noting each name."""
    if isinstance(node, list):
        for item in node:
            _localize(item, siblings)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ".schema.json#/" in ref:
            file, _, pointer = ref.partition("#")
            siblings.add(file.removesuffix(".schema.json"))
            node["$ref"] = f"#{pointer}"
        for value in node.values():
            _localize(value, siblings)


@cache
def _validator(name: str) -> Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name))


@cache
def _fast(name: str) -> Check | None:
    try:
        return compile_schema(load_schema(name))
    except UnsupportedSchema:
        return None


def validate(
    data: Any, name: str, file: str, positions: Positions, *, base: PathKey = ()
) -> list[Problem]:
    """Every schema problem of ``data`` against schema ``name``, sorted by position.

    ``base`` is the path of ``data`` inside the document that ``positions`` describes.
    """
    fast = _fast(name)
    if fast is not None and fast(data):
        return []
    problems: set[Problem] = set()
    for error in _validator(name).iter_errors(data):
        problems.update(_explain(error, file, positions, base))
    return sorted(problems, key=lambda p: (p.line, p.col, p.message))


@cache
def _meta_validator() -> Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(Draft202012Validator.META_SCHEMA)


_META_ERRORS: dict[str, list[ValidationError]] = {}


def check_json_schema(data: Any, file: str, positions: Positions, base: PathKey) -> list[Problem]:
    """Problems that make ``data`` (at ``base``) not a valid draft 2020-12 JSON Schema.

    Results are cached by content: 10,000 agents sharing one output_schema cost one check.
    """
    key = json.dumps(data, sort_keys=True, default=repr)
    errors = _META_ERRORS.get(key)
    if errors is None:
        errors = _META_ERRORS[key] = list(_meta_validator().iter_errors(data))
    problems: set[Problem] = set()
    for error in errors:
        for p in _explain(error, file, positions, base):
            hint = p.hint or "it must be a JSON Schema (draft 2020-12), e.g. {type: object}"
            problems.add(
                Problem(p.file, p.line, p.col, f"{p.message} (not a valid JSON Schema)", hint)
            )
    problems.update(_ref_problems(data, data, file, positions, base))
    return sorted(problems, key=lambda p: (p.line, p.col, p.message))


def _ref_problems(
    node: Any, root: Any, file: str, positions: Positions, path: PathKey
) -> Iterable[Problem]:
    """Every ``$ref`` must point inside the schema: aoe never fetches one from elsewhere."""
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and not _resolves(root, ref):
            line, col = positions.value((*path, "$ref"))
            yield Problem(
                file, line, col,
                f"{dotted((*path, '$ref'))}: $ref {ref!r} points nowhere in this schema",
                "use a local reference such as '#/$defs/line' and define it under $defs",
            )
        for key, value in node.items():
            if key not in ("const", "enum", "default", "examples"):
                yield from _ref_problems(value, root, file, positions, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _ref_problems(value, root, file, positions, (*path, index))


def _resolves(root: Any, ref: str) -> bool:
    if not ref.startswith("#"):
        return False
    target = root
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return False
    return True


def dotted(path: Iterable[str | int]) -> str:
    """``('agents', 'x', 'needs', 0)`` -> ``agents.x.needs[0]``; the root is "top level"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "top level"


def describe(value: Any) -> str:
    """A short phrase for a value's JSON type, with the value if it is small."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    shown = _short(value)
    if isinstance(value, str):
        return f"a string ({shown})"
    return f"a number ({shown})"


def kind_of(value: Any) -> str:
    """A value's JSON type only, never the value: for files aoe was not asked to read
    (``uses: ../../etc/passwd``), whose content must not reach a log."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "a string" if isinstance(value, str) else "a number"


def type_matches(value: Any, type_name: str) -> bool:
    """Whether ``value`` is of JSON Schema type ``type_name`` (bool is not a number)."""
    checks: Mapping[str, Any] = {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict | Mapping),
        "array": lambda v: isinstance(v, list | tuple),
        "null": lambda v: v is None,
    }
    return bool(checks[type_name](value))


def suggest(word: str, options: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or a list of what is allowed."""
    choices = sorted(options)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if not choices:
        return None
    listed = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"allowed: {listed}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ARTICLE = {
    "integer": "an integer",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
    "boolean": "true or false",
    "number": "a number",
    "string": "a string",
}


def _explain(
    error: ValidationError, file: str, positions: Positions, base: PathKey
) -> Iterable[Problem]:
    """Turn one jsonschema error into Problems at the right node."""
    if error.validator in ("oneOf", "anyOf") and error.context and not _only_required(error):
        from jsonschema.exceptions import best_match

        yield from _explain(best_match(error.context), file, positions, base)
        return
    path: PathKey = (*base, *error.absolute_path)
    for at, message, hint, key in _messages(error, path):
        line, col = positions.key(at) if key else positions.value(at)
        yield Problem(file, line, col, message, hint)


def _only_required(error: ValidationError) -> bool:
    return all(e.validator == "required" for e in error.context or ())


Message = tuple[PathKey, str, str | None, bool]  # where, message, hint, at the key?


def _messages(error: ValidationError, path: PathKey) -> list[Message]:
    """What to say about one error, and where: a person's words, not a schema dump."""
    where = dotted(path)
    kind = str(error.validator)
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance: Any = error.instance
    rule: Any = error.validator_value
    if "propertyNames" in error.relative_schema_path:
        name_kind = _NAME_KINDS.get(str(path[-1]) if path else "", "a key")
        reason, hint = _PATTERN_TEXT.get(str(schema.get("pattern")), ("is not allowed", ""))
        return [
            (
                (*path, instance),
                f"{where}: {_short(instance)} {reason}"
                + (f" for {name_kind}" if reason == "is not a valid name" else ""),
                hint or None,
                True,
            )
        ]
    if kind == "additionalProperties":
        allowed = schema.get("properties", {}).keys()
        return [
            ((*path, extra), f"{where}: unknown key '{extra}'", suggest(extra, allowed), True)
            for extra in sorted(set(instance) - set(allowed))
        ]
    if kind == "required":
        missing = _missing(error.message)
        return [
            (path, f"{where}: missing required key '{missing}'", _REQUIRED_HINTS.get(missing), True)
        ]
    if kind == "oneOf":
        options = [str(sub["required"][0]) for sub in rule if sub.get("required")]
        listed = ", ".join(options)
        if "is valid under each of" in error.message:
            found = ", ".join(o for o in options if isinstance(instance, dict) and o in instance)
            message = f"{where}: has more than one of {listed} (found {found}); keep one"
            return [(path, message, None, True)]
        return [(path, f"{where}: needs exactly one of {listed}", None, True)]
    return [
        (
            path,
            f"{where}: {_value_message(kind, path, instance, rule)}",
            _value_hint(kind, instance, rule),
            False,
        )
    ]


def _value_message(kind: str, path: PathKey, instance: Any, rule: Any) -> str:
    """The message for a value that breaks a rule (everything after ``where: ``)."""
    if kind == "type":
        names = [rule] if isinstance(rule, str) else [str(n) for n in rule]
        return (
            f"expected {' or '.join(_ARTICLE.get(n, n) for n in names)}, got {describe(instance)}"
        )
    if kind == "enum":
        return f"{_short(instance)} is not one of: {', '.join(str(o) for o in rule)}"
    if kind == "const":
        if path == ("version",):
            return f"{_short(instance)} is not supported; this aoe reads version 1"
        return f"must be {_short(rule)}"
    if kind == "pattern":
        return f"{_short(instance)} {_PATTERN_TEXT.get(str(rule), (f'does not match {rule}',))[0]}"
    if kind in ("minItems", "minLength"):
        return "must not be empty"
    if kind == "minProperties":
        return f"needs at least one {'agent' if path == ('agents',) else 'entry'}"
    if kind == "uniqueItems":
        seen: list[Any] = []
        for item in instance:
            if item in seen:
                return f"lists {_short(item)} more than once"
            seen.append(item)
        return "lists an item more than once"
    if kind in _NUMBER_RULES:
        return f"{_short(instance)} is {_NUMBER_RULES[kind]} {rule}"
    return _trim(str(kind) + ": " + _short(instance))


_NUMBER_RULES = {
    "minimum": "less than the minimum of",
    "maximum": "greater than the maximum of",
    "exclusiveMinimum": "not greater than",
    "exclusiveMaximum": "not less than",
}


def _value_hint(kind: str, instance: Any, rule: Any) -> str | None:
    if kind == "enum" and isinstance(instance, str):
        close = suggest(instance, [str(o) for o in rule])
        return close if close and close.startswith("did") else None
    if kind == "const" and rule == 1:
        return "set 'version: 1'"
    if kind == "pattern":
        hint = _PATTERN_TEXT.get(str(rule), ("", ""))[1]
        return hint or None
    return None


def _missing(message: str) -> str:
    """The property name out of jsonschema's "'x' is a required property"."""
    head, _, _ = message.partition(" is a required property")
    return head.strip("'\"")


def _trim(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
