"""Make a JSON value that is valid against a JSON Schema, for the simulator and test servers.

It covers what workflow ``output_schema``s use: objects (properties, required,
additionalProperties), arrays (items, prefixItems, minItems/maxItems, uniqueItems),
strings (enum, const, formats date/date-time/email/uri/uuid, min/maxLength; ``pattern`` is
not generated), numbers and integers within their bounds, booleans, null, ``enum``,
``const``, ``oneOf``/``anyOf`` (the first branch), ``allOf`` (merged) and ``$ref`` into
``$defs``/``definitions``. Randomness comes only from the ``rng`` passed in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

_WORDS = (
    "invoice", "supplier", "amount", "approved", "order", "ledger", "payment", "net",
    "review", "total", "vendor", "receipt", "budget", "account", "period", "quarter",
)  # fmt: skip
_MAX_DEPTH = 8


def example_for_schema(schema: Mapping[str, Any] | bool, rng: random.Random) -> Any:
    """A value valid against ``schema`` (resolving ``$ref`` against the schema's root)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Generator(root, rng).value(schema, 0)


class _Generator:
    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: Mapping[str, Any] | bool, depth: int) -> Any:
        if schema is True or schema is False or not isinstance(schema, Mapping):
            return self.word()
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(list(schema["enum"]))
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                merged = {k: v for k, v in schema.items() if k != key}
                merged.update(self.resolve(schema[key][0]))
                return self.value(merged, depth + 1)
        if schema.get("allOf"):
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self.resolve(part))
            return self.value(merged, depth + 1)
        kind = self.type_of(schema)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema)

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow local ``$ref``s (``#/$defs/x``); siblings of ``$ref`` are kept."""
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            target: Any = self.root
            for raw in schema["$ref"].lstrip("#").strip("/").split("/"):
                if not raw:
                    continue
                part = raw.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**(target if isinstance(target, Mapping) else {}), **rest}
            seen += 1
        return schema

    def type_of(self, schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list | tuple) and declared:
            non_null = [t for t in declared if t != "null"]
            return str(non_null[0] if non_null else declared[0])
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        return "string"

    def object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        names = list(properties) if depth < _MAX_DEPTH else []
        names += [name for name in required if name not in names]
        result: dict[str, Any] = {}
        for name in names:
            sub = properties.get(name)
            if sub is None:
                extra = schema.get("additionalProperties")
                sub = extra if isinstance(extra, Mapping) else {}
            result[name] = self.value(sub, depth + 1)
        return result

    def array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = low if depth >= _MAX_DEPTH else self.rng.randint(min(max(low, 1), high), high)
        prefix = list(schema.get("prefixItems") or [])
        items = schema.get("items", {})
        out: list[Any] = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else items
            item = self.value(sub if isinstance(sub, Mapping) else {}, depth + 1)
            if schema.get("uniqueItems"):
                for _ in range(20):
                    if item not in out:
                        break
                    item = self.value(sub if isinstance(sub, Mapping) else {}, depth + 1)
                else:
                    if len(out) >= low:
                        break
            out.append(item)
        return out

    def integer(self, schema: Mapping[str, Any]) -> int:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        lo = math.ceil(low) if low is not None else 0
        hi = math.floor(high) if high is not None else max(lo, 0) + 1000
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = math.ceil(lo / step) * step
            return first if first <= hi else lo
        return self.rng.randint(lo, max(lo, hi))

    def number(self, schema: Mapping[str, Any]) -> float:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        lo = float(low) if low is not None else 0.0
        hi = float(high) if high is not None else lo + 1000.0
        if "exclusiveMinimum" in schema or "exclusiveMaximum" in schema:
            return (lo + hi) / 2 if high is not None else lo + 1.0
        value = round(self.rng.uniform(lo, hi), 2)
        return min(max(value, lo), hi)

    def string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        rng = self.rng
        if fmt == "date":
            return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if fmt == "date-time":
            day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            return f"{day}T10:{rng.randint(0, 59):02d}:00Z"
        if fmt == "time":
            return f"10:{rng.randint(0, 59):02d}:00Z"
        if fmt == "email":
            return f"{self.word()}@example.com"
        if fmt in ("uri", "url", "iri"):
            return f"https://example.com/{self.word()}"
        if fmt == "uuid":
            return "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031  # a fixed-width template reads best
                rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                rng.getrandbits(12), rng.getrandbits(48),
            )  # fmt: skip
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        text = " ".join(self.word() for _ in range(rng.randint(1, 3)))
        while len(text) < min_len:
            text += " " + self.word()
        return text[: int(max_len)] if max_len is not None else text

    def word(self) -> str:
        return self.rng.choice(_WORDS)


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        elif key == "required" and key in merged:
            merged[key] = list(dict.fromkeys([*merged[key], *value]))
        else:
            merged[key] = value
    return merged
