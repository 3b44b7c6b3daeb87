"""A fast yes/no JSON Schema check for the subset of keywords aoe's own schemas use.

jsonschema explains errors well but takes about 2 s for a 10,000-agent workflow. Almost
every file is valid, so we first ask this compiled checker, which only answers "valid"
or "not sure"; only on "not sure" does ``schema.py`` run jsonschema for the real verdict
and its messages. The checker must never accept what jsonschema rejects: where the two
could disagree (e.g. ``uniqueItems`` over non-strings) it answers "not sure".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Check", "UnsupportedSchema", "compile_schema"]

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


class UnsupportedSchema(Exception):
    """The schema uses a keyword this checker does not implement; use jsonschema only."""


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


_TYPES: Mapping[str, Check] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": _is_number,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
}


def compile_schema(root: Mapping[str, Any]) -> Check:
    """Compile ``root`` (a draft 2020-12 schema with local ``$ref`` only) into a checker."""
    refs: dict[str, Check] = {}

    compiling: set[str] = set()

    def ref(pointer: str) -> Check:
        found = refs.get(pointer)
        if found is not None:
            return found
        if pointer in compiling:  # a recursive schema: look the checker up at call time
            return lambda v: refs[pointer](v)  # noqa: PLW0108 - bound late, compiled below
        if not pointer.startswith("#/"):
            raise UnsupportedSchema(f"$ref {pointer}")
        target: Any = root
        for part in pointer[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise UnsupportedSchema(f"$ref {pointer} points nowhere")
            target = target[part]
        compiling.add(pointer)
        refs[pointer] = compiled = build(target)
        compiling.discard(pointer)
        return compiled

    def build(schema: Any) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        checks: list[Check] = []
        if _OBJECT_KEYWORDS.intersection(schema):
            checks.append(_object(schema, build, ref))
        for key in schema:
            if key in _ANNOTATIONS or key in _OBJECT_KEYWORDS or key in _BRANCHES:
                continue
            maker = _KEYWORDS.get(key)
            if maker is None:
                raise UnsupportedSchema(key)
            checks.append(maker(schema, build, ref))
        return _all_of(checks)

    return build(root)


def _all_of(checks: list[Check]) -> Check:
    """One checker for several, without a generator per call (this runs ~10^5 times)."""
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    if len(checks) == 3:
        first, second, third = checks
        return lambda v: first(v) and second(v) and third(v)

    def check(value: Any) -> bool:
        for one in checks:  # noqa: SIM110 - a plain loop is faster than all() + genexpr
            if not one(value):
                return False
        return True

    return check


Builder = Callable[[Any], Check]
Ref = Callable[[str], Check]


def _type(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    names = schema["type"]
    if isinstance(names, str):
        return _TYPES[names]
    checks = [_TYPES[name] for name in names]
    return lambda v: any(check(v) for check in checks)


def _object(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    """``properties`` + ``additionalProperties`` + ``required`` + ``propertyNames``, at once."""
    props = {name: build(sub) for name, sub in schema.get("properties", {}).items()}
    extra_schema = schema.get("additionalProperties", True)
    extra: Check | None = None if extra_schema is True else build(extra_schema)
    required = tuple(schema.get("required", ()))
    names = build(schema["propertyNames"]) if "propertyNames" in schema else None
    min_props = schema.get("minProperties", 0)

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return True
        if len(value) < min_props:
            return False
        for key, item in value.items():
            sub = props.get(key)
            if sub is None:
                if extra is not None and not extra(item):
                    return False
            elif not sub(item):
                return False
            if names is not None and not names(key):
                return False
        return all(key in value for key in required)

    return check


def _items(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    item = build(schema["items"])

    def check(value: Any) -> bool:
        if type(value) is list:
            for x in value:
                if not item(x):
                    return False
        return True

    return check


def _unique(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    if not schema["uniqueItems"]:
        return lambda v: True

    def check(value: Any) -> bool:
        if type(value) is not list:
            return True
        if not all(type(x) is str for x in value):
            return False  # "not sure": let jsonschema decide 1 vs True vs 1.0
        return len(set(value)) == len(value)

    return check


def _numeric(op: str) -> Callable[[Mapping[str, Any], Builder, Ref], Check]:
    def make(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
        limit = schema[op]
        compare: Callable[[Any], bool] = {
            "minimum": lambda v: v >= limit,
            "maximum": lambda v: v <= limit,
            "exclusiveMinimum": lambda v: v > limit,
            "exclusiveMaximum": lambda v: v < limit,
        }[op]
        return lambda v: not _is_number(v) or compare(v)

    return make


def _sized(
    op: str, kind: type[str] | type[list[Any]]
) -> Callable[[Mapping[str, Any], Builder, Ref], Check]:
    def make(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
        limit = schema[op]
        return lambda v: type(v) is not kind or len(v) >= limit

    return make


def _pattern(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    search = re.compile(schema["pattern"]).search
    return lambda v: type(v) is not str or search(v) is not None


def _enum(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    options = schema["enum"]
    if all(type(o) is str for o in options):
        allowed = frozenset(options)
        return lambda v: type(v) is str and v in allowed
    return lambda v: any(type(v) is type(o) and v == o for o in options)


def _const(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    expected = schema["const"]
    return lambda v: type(v) is type(expected) and v == expected


def _one_of(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    options = [build(sub) for sub in schema["oneOf"]]
    return lambda v: sum(1 for option in options if option(v)) == 1


def _if(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    """``if``/``then``/``else``, for conditions this checker decides exactly.

    A "not sure" from the condition would pick the wrong branch, so only ``type`` and
    ``required`` (exact here) may appear in ``if``.
    """
    condition = schema["if"]
    if not isinstance(condition, dict) or set(condition) - {"type", "required"}:
        raise UnsupportedSchema("if with keywords other than type and required")
    test = build(condition)
    then = build(schema.get("then", True))
    other = build(schema.get("else", True))
    return lambda v: then(v) if test(v) else other(v)


def _ref(schema: Mapping[str, Any], build: Builder, ref: Ref) -> Check:
    return ref(schema["$ref"])


_BRANCHES = frozenset({"then", "else"})  # read by _if
_OBJECT_KEYWORDS = frozenset(
    {"properties", "additionalProperties", "required", "propertyNames", "minProperties"}
)
_KEYWORDS: Mapping[str, Callable[[Mapping[str, Any], Builder, Ref], Check]] = {
    "type": _type,
    "items": _items,
    "uniqueItems": _unique,
    "minimum": _numeric("minimum"),
    "maximum": _numeric("maximum"),
    "exclusiveMinimum": _numeric("exclusiveMinimum"),
    "exclusiveMaximum": _numeric("exclusiveMaximum"),
    "minLength": _sized("minLength", str),
    "minItems": _sized("minItems", list),
    "pattern": _pattern,
    "enum": _enum,
    "const": _const,
    "oneOf": _one_of,
    "if": _if,
    "$ref": _ref,
}
