"""What a spec field defaults to, and whether a documented value says the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aoe.spec.models import thaw


class NoDefault(LookupError):
    """The field must be given: there is no default to document."""


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the spec dataclass ``cls``."""
    found = {f.name: f for f in dataclasses.fields(cls)}
    if name not in found:
        raise NoDefault(f"{cls.__name__} has no field {name!r}")
    field = found[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise NoDefault(f"{cls.__name__}.{name} has no default")


def worth_showing(default: Any) -> bool:
    """Whether a user relies on this default: a value, not null, empty or a nested spec
    (whose own fields are shown one by one)."""
    empty = isinstance(default, tuple | Mapping) and not default
    return not (default is None or empty or dataclasses.is_dataclass(default))


def same_value(documented: Any, default: Any) -> bool:
    """``documented`` (JSON or YAML) means ``default``: 60 is 60.0, but true is not 1."""
    if isinstance(documented, bool) or isinstance(default, bool):
        return documented is default
    if isinstance(default, Mapping | tuple):
        return bool(documented == thaw(default))
    return bool(documented == default)
