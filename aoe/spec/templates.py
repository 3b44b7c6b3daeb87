"""Prompt templates: the one Jinja2 environment, rendering, and what a template refers to.

Prompts are sandboxed (``ImmutableSandboxedEnvironment``: no attribute tricks, no
mutation of the values passed in) and strict (an undefined name is an error, never an
empty string sent to a paid model). ``references`` lists the inputs, agents, env vars
and ``with`` keys a template names, so the loader and the graph check can report a
wrong name before any money is spent.

``{{ x }}`` prints a mapping or list as JSON (an agent's structured output reads as
JSON in the next prompt), and ``tojson`` writes JSON without HTML escaping.

What a render may produce is bounded while it renders (``aoe.spec.sandbox``): the text
is cut off as soon as it passes ``max_chars``, and no step inside the template may build
more, so ``{{ 'a' * 2000000000 }}`` fails in microseconds instead of taking gigabytes.
A prompt's limit is the agent's ``max_prompt_chars``; without one, ``prompt_char_limit``
derives it from the model's context window, or uses ``DEFAULT_MAX_PROMPT_CHARS``.

Most prompts only print dotted names (``{{ agents.extract.output }}``); those are read
with a regular expression, which is far faster than Jinja's parser on 10,000-agent files.
Anything else goes through Jinja's parser and an AST walk. Both give the same answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aoe.errors import TemplateRenderError

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.nodes import Node

    from aoe.spec.sandbox import BoundedSandbox

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_MAX_PROMPT_CHARS",
    "KINDS",
    "TemplateRefs",
    "TemplateSyntax",
    "environment",
    "least_size",
    "prompt_char_limit",
    "references",
    "render",
]

DEFAULT_MAX_PROMPT_CHARS = 1_000_000
"""Most characters a rendered prompt (or system text) may have when neither the agent
(``max_prompt_chars``) nor the model's context window says otherwise: about 250,000
tokens of English, more than most models accept."""

CHARS_PER_TOKEN = 8
"""Characters per token of context window that a prompt may have: ordinary text averages
3 to 5, so a prompt past 8 cannot fit the model and is refused before it is sent."""


def prompt_char_limit(max_prompt_chars: int | None, context_window: int | None) -> int:
    """The character limit of an agent's rendered prompt and system text."""
    if max_prompt_chars is not None:
        return max_prompt_chars
    if context_window:
        return context_window * CHARS_PER_TOKEN
    return DEFAULT_MAX_PROMPT_CHARS

KINDS = ("inputs", "agents", "env", "with")
"""The root names a template may read; ``with`` holds the used agent file's parameters."""

_LOCAL_NAMES = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SUBSCRIPT = r"\[[ \t]*(?:'[^'\\\n]*'|\"[^\"\\\n]*\"|[0-9]+)[ \t]*\]"
_SIMPLE = re.compile(
    rf"\{{\{{[ \t]*({_NAME})"  # the root name
    rf"(?:\.({_NAME})|\[[ \t]*(?:'([^'\\\n]*)'|\"([^\"\\\n]*)\")[ \t]*\])?"  # first key
    rf"(?:\.{_NAME}|{_SUBSCRIPT})*"  # more keys
    rf"((?:[ \t]*\|[ \t]*{_NAME})*)[ \t]*\}}\}}"  # filters without arguments
)
_NOT_SIMPLE_ROOTS = frozenset(
    {"true", "false", "none", "True", "False", "None", "not", "and", "or", "in", "is", "if", "else"}
)


class TemplateSyntax(ValueError):
    """A template does not parse; ``line`` is 1-based inside the template."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class TemplateRefs:
    """What a template names. ``lines[(kind, name)]`` is the template line where first seen.

    ``kind`` is one of ``inputs``, ``agents``, ``env``, ``with`` or ``unknown``;
    ``whole`` lists the roots read as a whole (``{{ inputs | tojson }}``), whose keys
    cannot be known before the run.
    """

    inputs: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    env: frozenset[str] = frozenset()
    with_keys: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()
    whole: frozenset[str] = frozenset()
    lines: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))

    def line(self, kind: str, name: str) -> int:
        """The template line where ``kind.name`` is first named (1 if unknown)."""
        return self.lines.get((kind, name), 1)


@cache
def environment() -> BoundedSandbox:
    """The one Jinja2 environment for prompts: sandboxed and bounded, strict, no autoescape."""
    from jinja2 import StrictUndefined

    from aoe.spec.sandbox import BoundedSandbox

    env = BoundedSandbox(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.filters["tojson"] = tojson
    env.bound_filters()
    return env


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback: frozen specs hold read-only mappings, JSON wants dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def tojson(value: Any, indent: int | None = None) -> str:
    """JSON text of a value, for prompts: no HTML escaping (Jinja's default is for web pages)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_plain)


def _finalize(value: Any) -> Any:
    """What ``{{ x }}`` prints: mappings and lists as JSON, not as Python reprs."""
    if isinstance(value, Mapping | list | tuple):
        return tojson(value)
    return value


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    return environment().from_string(source)


_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(rf"[ \t]*({_NAME})((?:\.{_NAME}|{_SUBSCRIPT})*)[ \t]*")
_STEP = re.compile(rf"\.({_NAME})|\[[ \t]*(?:'([^'\\\n]*)'|\"([^\"\\\n]*)\"|([0-9]+))[ \t]*\]")
_MISSING = object()
Segment = str | tuple[str, tuple[str | int, ...]]


@lru_cache(maxsize=16384)
def _plain_segments(source: str) -> tuple[Segment, ...] | None:
    """Literal text and dotted-name lookups, or None when the template needs Jinja.

    Compiling a Jinja template costs about a millisecond, and most prompts only print
    values; those are rendered by direct lookups with Jinja's own semantics, and every
    case that is not a plain data lookup (a filter, a statement, a missing key) goes to
    Jinja, so the result and the errors are always Jinja's.
    """
    if "{%" in source or "{#" in source:
        return None
    segments: list[Segment] = []
    position = 0
    for match in _EXPRESSION.finditer(source):
        path = _PATH.fullmatch(match.group(1))
        if path is None or path.group(1) in _NOT_SIMPLE_ROOTS:
            return None
        steps: list[str | int] = []
        for step in _STEP.finditer(path.group(2)):
            name, single, double, index = step.groups()
            key = name if name is not None else single if single is not None else double
            steps.append(int(index) if key is None else key)
        segments.append(source[position : match.start()])
        segments.append((path.group(1), tuple(steps)))
        position = match.end()
    segments.append(source[position:])
    if any(isinstance(s, str) and ("{{" in s or "}}" in s) for s in segments):
        return None
    return tuple(segments)


def _lookup(context: Mapping[str, Any], root: str, steps: tuple[str | int, ...]) -> Any:
    value = context.get(root, _MISSING)
    for step in steps:
        if value is _MISSING:
            return _MISSING
        if isinstance(step, int):
            ok = isinstance(value, list | tuple) and 0 <= step < len(value)
            value = value[step] if ok else _MISSING
        elif isinstance(value, Mapping) and not step.startswith("_"):
            value = value.get(step, _MISSING)
        else:
            return _MISSING
    return value


def _render_plain(
    segments: tuple[Segment, ...],
    context: Mapping[str, Any],
    max_chars: int,
    escape: Callable[[str], str] | None,
) -> str | None:
    """The text, or None when Jinja must render it; ``_TooLong`` past ``max_chars``."""
    parts: list[str] = []
    size = 0
    for segment in segments:
        if isinstance(segment, str):
            text = segment
        else:
            value = _lookup(context, *segment)
            if value is _MISSING or not isinstance(
                value, str | int | float | bool | Mapping | list | tuple
            ):
                return None
            text = str(_finalize(value))
            if escape is not None:
                text = escape(text)
        size += len(text)
        if size > max_chars:
            raise _TooLong
        parts.append(text)
    return "".join(parts)


class _TooLong(Exception):
    """The rendered text passed its limit."""


def render(
    source: str,
    context: Mapping[str, Any],
    *,
    where: str,
    max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    escape: Callable[[str], str] | None = None,
) -> str:
    """Render ``source`` with ``context``; any failure is a ``TemplateRenderError``.

    Text longer than ``max_chars`` (or a step that would build more) is a failure too,
    found while rendering: nothing larger is ever built. ``escape`` encodes the text of
    each ``{{ ... }}`` (not the template's own text).
    """
    segments = _plain_segments(source)
    if segments is not None:
        try:
            text = _render_plain(segments, context, max_chars, escape)
        except _TooLong:
            raise _too_long(where, max_chars) from None
        if text is not None:
            return text
    return _render_jinja(source, context, where=where, max_chars=max_chars, escape=escape)


def _too_long(where: str, max_chars: int) -> TemplateRenderError:
    return TemplateRenderError(
        f"template renders to more than {max_chars:,} characters",
        where=where,
        hint=_SIZE_HINT,
    )


_SIZE_HINT = (
    "make the template or the values it prints smaller, or raise max_prompt_chars "
    "for this agent (or under defaults:)"
)


def _render_jinja(
    source: str,
    context: Mapping[str, Any],
    *,
    where: str,
    max_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    escape: Callable[[str], str] | None = None,
) -> str:
    from jinja2 import TemplateError, UndefinedError
    from jinja2.exceptions import SecurityError

    from aoe.spec.sandbox import RenderBudget, TooLarge, bounded

    try:
        with bounded(RenderBudget(max_chars, escape)):
            parts: list[str] = []
            size = 0
            for chunk in _compiled(source).generate(dict(context)):
                size += len(chunk)
                if size > max_chars:
                    raise _too_long(where, max_chars)
                parts.append(chunk)
            return "".join(parts)
    except TemplateRenderError:
        raise
    except TooLarge as exc:
        raise TemplateRenderError(
            f"template tried to build too much: {exc}", where=where, hint=_SIZE_HINT
        ) from exc
    except UndefinedError as exc:
        raise TemplateRenderError(
            f"template names something that is not defined: {exc.message}",
            where=where,
            hint="templates may read inputs.<name>, agents.<id>.output, env.<VAR> (listed "
            "in env:) and with.<param>",
        ) from exc
    except SecurityError as exc:
        raise TemplateRenderError(
            f"template tried an unsafe operation: {exc}", where=where
        ) from exc
    except TemplateError as exc:
        raise TemplateRenderError(f"template error: {exc.message or exc}", where=where) from exc
    except Exception as exc:  # a template can raise anything (1/0, int('x'), ...)
        raise TemplateRenderError(
            f"template failed: {type(exc).__name__}: {exc}", where=where
        ) from exc


def least_size(source: str) -> tuple[int, int]:
    """How many characters ``source`` renders to at the least, from what it says outright
    (its text, ``'x' * N``, loops over ``range(N)``...), and the template line of its
    largest part: ``aoe validate`` warns when that alone passes the limit."""
    segments = _plain_segments(source)
    if segments is not None:
        return sum(len(s) for s in segments if isinstance(s, str)), 1
    from jinja2 import TemplateSyntaxError

    from aoe.spec.sandbox import least_size as least_of_tree

    try:
        return least_of_tree(environment().parse(source))
    except TemplateSyntaxError:
        return 0, 1  # reported as a syntax error elsewhere


@lru_cache(maxsize=16384)
def references(source: str) -> TemplateRefs:
    """The names ``source`` refers to; raises ``TemplateSyntax`` if it does not parse."""
    refs = _simple_references(source)
    return refs if refs is not None else _parsed_references(source)


class _Collector:
    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], int] = {}

    def add(self, kind: str, name: str, line: int) -> None:
        known = self.lines.get((kind, name))
        if known is None or line < known:
            self.lines[(kind, name)] = line

    def root(self, name: str, key: str | None, line: int, local: frozenset[str]) -> None:
        if name in KINDS:
            if key is None:
                self.add("whole", name, line)
            else:
                self.add(name, key, line)
        elif name not in local and name not in _LOCAL_NAMES and name not in _globals():
            self.add("unknown", name, line)

    def result(self) -> TemplateRefs:
        return _refs_from(self.lines)


@cache
def _globals() -> frozenset[str]:
    return frozenset(environment().globals)


@cache
def _filters() -> frozenset[str]:
    return frozenset(environment().filters)


def _simple_references(source: str) -> TemplateRefs | None:
    """References of a template that only prints dotted names, or None if it does more."""
    if "{%" in source or "{#" in source or "{{{" in source:
        return None
    if "{{" not in source:
        return _NO_REFS
    lines: dict[tuple[str, str], int] = {}
    end = 0
    for match in _SIMPLE.finditer(source):
        start = match.start()
        if source.find("{{", end, start) >= 0:
            return None  # a {{ ... }} the pattern does not cover: let Jinja judge it
        end = match.end()
        root, attr, single, double, filters = match.groups()
        if root in _NOT_SIMPLE_ROOTS:
            return None
        if filters and not _filters().issuperset(f.strip() for f in filters.split("|")[1:]):
            return None
        key = attr if attr is not None else (single if single is not None else double)
        if root in KINDS:
            entry = (root, key) if key is not None else ("whole", root)
        elif root in _globals():
            continue
        else:
            entry = ("unknown", root)
        if entry not in lines:
            lines[entry] = source.count("\n", 0, start) + 1
    if source.find("{{", end) >= 0:
        return None
    return _refs_from(lines)


def _refs_from(lines: dict[tuple[str, str], int]) -> TemplateRefs:
    groups: dict[str, list[str]] = {}
    for kind, name in lines:
        groups.setdefault(kind, []).append(name)
    get = groups.get
    empty: tuple[str, ...] = ()
    return TemplateRefs(
        inputs=frozenset(get("inputs", empty)),
        agents=frozenset(get("agents", empty)),
        env=frozenset(get("env", empty)),
        with_keys=frozenset(get("with", empty)),
        unknown=frozenset(get("unknown", empty)),
        whole=frozenset(get("whole", empty)),
        lines=MappingProxyType(lines),
    )


_NO_REFS = TemplateRefs()


def _parsed_references(source: str) -> TemplateRefs:
    from jinja2 import TemplateSyntaxError, nodes

    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateSyntax(exc.message or "invalid template", exc.lineno or 1) from None
    for bad in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise TemplateSyntax("prompts cannot extend, include or import other templates", bad.lineno)
    for flt in tree.find_all(nodes.Filter):
        if flt.name not in env.filters:
            raise TemplateSyntax(f"no filter named '{flt.name}'", flt.lineno)
    for test in tree.find_all(nodes.Test):
        if test.name not in env.tests:
            raise TemplateSyntax(f"no test named '{test.name}'", test.lineno)
    local = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param"))
    collector = _Collector()
    _walk(tree, collector, local)
    return collector.result()


def _walk(node: Node, collector: _Collector, local: frozenset[str]) -> None:
    from jinja2 import nodes

    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, nodes.Getattr | nodes.Getitem):
            base = current.node
            if isinstance(base, nodes.Name) and base.ctx == "load" and base.name in KINDS:
                key = _key_of(current)
                if key is not None:
                    collector.root(base.name, key, current.lineno, local)
                    if isinstance(current, nodes.Getitem):
                        stack.append(current.arg)
                    continue
        elif isinstance(current, nodes.Name) and current.ctx == "load":
            collector.root(current.name, None, current.lineno, local)
            continue
        stack.extend(reversed(list(current.iter_child_nodes())))


def _key_of(node: Node) -> str | None:
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        value = node.arg.value
        return value if isinstance(value, str) else None
    return None
