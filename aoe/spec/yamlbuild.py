"""YAML parser events to plain Python data, recording where every node is.

PyYAML's constructors forget where a value came from, and every later error (schema,
references, templates) must point at ``FILE:LINE:COL``. ``EventBuilder`` reads the
parser's event stream and builds dicts, lists and scalars itself, recording each node's
position under its JSON-pointer path. Building from events, without PyYAML's node graph
and per-node resolver calls, is several times faster, which matters for 10,000-agent
files. Scalars resolve exactly as PyYAML's safe loader resolves them (YAML 1.1), except
that dates stay text (JSON has no date type) and keys stay as written (``on:`` is "on").

On the way it rejects what YAML accepts but a workflow must not contain: duplicate keys
(the later one would silently win), several documents, non-text keys, custom tags,
alias bombs and absurd nesting. Every limit is checked as the events arrive, at a
constant cost per event, so a hostile file is refused in the time it takes to read up to
the offending place (milliseconds), with its line:

==================  ====================================================================
``MAX_DEPTH``       lists and mappings nested this deep (``[`` x 200,000 stops at 201)
``MAX_NODES``       values, aliases expanded (billion laughs)
``MAX_EXPANDED``    characters of text, aliases expanded (a long text aliased many times)
``MAX_SCALAR``      characters in one value
``MAX_KEY``         characters in one key
==================  ====================================================================
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from aoe.errors import Problem, SpecError

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPANDED",
    "MAX_KEY",
    "MAX_NODES",
    "MAX_SCALAR",
    "EventBuilder",
    "PathKey",
    "Positions",
    "paused_gc",
]

MAX_NODES = 2_000_000
"""Most values a document may expand to (aliases included): stops "billion laughs" files."""

MAX_DEPTH = 200
"""Deepest nesting accepted; keeps later recursive code (jsonschema, freeze) off the limit."""

MAX_SCALAR = 4 * 1024 * 1024
"""Most characters in one value: a prompt or document far longer than any model reads."""

MAX_KEY = 1024
"""Most characters in one key (YAML's own limit for a plain key): keys are names."""

MAX_EXPANDED = 40 * 1024 * 1024
"""Most characters of text a document may expand to, aliases included: twice the largest
file, so ``*big`` repeated cannot make the later checks read gigabytes."""

PathKey = tuple[str | int, ...]
"""A JSON-pointer path as a tuple: ``("agents", "extract", "needs", 0)``."""

_CONSTRUCTOR = SafeConstructor()
_TAG = "tag:yaml.org,2002:"
_BOOLS = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = Resolver.yaml_implicit_resolvers
_SPECIAL_FIRST = frozenset(k for k in _RESOLVERS if k is not None)
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?\Z")  # what YAML 1.1 and JSON agree on
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


@dataclass(frozen=True, slots=True, eq=False)
class Positions:
    """Where each value and mapping key of a document is, 1-based ``(line, col)``.

    ``nodes[path]`` is ``(key line, key col, value line, value col)``: one entry per node
    (list items and the root have no key; theirs is the value's place). ``blocks``
    holds, for literal/folded block scalars (``prompt: |``), where the first content
    line starts, so a line inside a template maps to a place in the file.
    """

    nodes: dict[PathKey, tuple[int, int, int, int]] = field(default_factory=dict)
    blocks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def value(self, path: Iterable[str | int]) -> tuple[int, int]:
        """The position of the value at ``path``, or of its nearest ancestor we know."""
        key = tuple(path)
        while True:
            node = self.nodes.get(key)
            if node is not None:
                return node[2], node[3]
            if not key:
                return (1, 1)
            key = key[:-1]

    def key(self, path: Iterable[str | int]) -> tuple[int, int]:
        """The position of the key that names ``path`` (the value's, for list items)."""
        node = self.nodes.get(tuple(path))
        return (node[0], node[1]) if node is not None else self.value(path)

    def text_start(self, path: Iterable[str | int]) -> tuple[int, int]:
        """Where the text of the string at ``path`` starts (a block scalar's first line)."""
        key = tuple(path)
        block = self.blocks.get(key)
        return block if block is not None else self.value(key)

    def text_line(self, path: Iterable[str | int], line_in_text: int) -> tuple[int, int]:
        """The file position of line ``line_in_text`` (1-based) of the string at ``path``.

        Exact for block scalars; for quoted or plain multi-line strings, YAML folds lines,
        so the line is an estimate.
        """
        key = tuple(path)
        block = self.blocks.get(key)
        if block is not None:
            return (block[0] + line_in_text - 1, block[1])
        line, col = self.value(key)
        return (line + line_in_text - 1, col if line_in_text == 1 else 1)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic data.

    A 10,000-agent file becomes about a million small objects; the collector would scan
    them again and again as they are made (a quarter of the load time). Reference
    counting still frees everything; the collector resumes afterwards if it was on.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _fail(file: str, line: int, col: int, message: str, hint: str | None = None) -> None:
    raise SpecError([Problem(file, line, col, message, hint)])


def _resolve_plain(value: str) -> str:
    """The implicit tag of a plain scalar, decided as PyYAML's resolver decides it."""
    for tag, regexp in _RESOLVERS.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return _TAG + "str"


_KEY = object()  # frame state: the next value is a mapping key
_SKIP = object()  # frame state: drop the next value (its key was unusable)
_MERGE = object()  # frame state: the next value is a `<<` merge source


class _Frame:
    """An open mapping or sequence while events stream in."""

    __slots__ = (
        "anchor",
        "chars",
        "in_key",
        "is_map",
        "key_col",
        "key_line",
        "mark",
        "merges",
        "path",
        "seen",
        "start",
        "state",
        "value",
    )

    def __init__(
        self,
        value: Any,
        path: PathKey,
        start: int,
        chars: int,
        *,
        anchor: str | None,
        mark: Any,
        in_key: bool,
    ) -> None:
        self.value = value
        self.path = path
        self.start = start  # the value counter when this node opened (its anchor's size)
        self.chars = chars  # the character counter then
        self.anchor = anchor
        self.mark = mark
        self.in_key = in_key  # this container is itself written as a mapping key
        self.is_map = isinstance(value, dict)
        self.state: object | str = _KEY
        self.key_line = self.key_col = 0  # where the key of the value now expected is
        self.seen: dict[str, int] = {}
        self.merges: list[tuple[Any, Any]] = []


class EventBuilder:
    """Builds dicts, lists and scalars straight from parser events, recording positions."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self._line_starts: list[int] | None = None
        self.positions = Positions()
        self.problems: list[Problem] = []
        self.root: Any = None
        self.has_root = False
        self._anchors: dict[str, tuple[Any, int, int]] = {}  # value, values, characters
        self._count = 0
        self._chars = 0
        self._stack: list[_Frame] = []

    def run(self, loader: Any) -> None:  # noqa: PLR0915 - one hot loop, inlined on purpose
        """Consume the event stream.

        The common cases (a plain key, a scalar value, a container opening or closing)
        are handled inline with locals: this loop is the hot path when loading
        10,000-agent workflows. Rare cases (anchors, tags, merges, duplicates) go through
        the helper methods.
        """
        get, check = loader.get_event, loader.check_event
        nodes = self.positions.nodes
        stack = self._stack
        special = _SPECIAL_FIRST
        documents = 0
        frame: _Frame | None = None
        while check():
            event = get()
            kind = type(event)
            if kind is ScalarEvent:
                mark = event.start_mark
                text = event.value
                self._count += 1
                size = len(text)
                self._chars += size
                if size > MAX_KEY:
                    self._long(frame, size, mark)
                if frame is not None and frame.is_map:
                    state = frame.state
                    if state is _KEY:
                        if (
                            event.anchor is None
                            and event.tag is None
                            and text != "<<"
                            and text not in frame.seen
                        ):
                            line = mark.line + 1
                            frame.seen[text] = line
                            frame.key_line = line
                            frame.key_col = mark.column + 1
                            frame.state = text
                        else:
                            self._key(frame, event, text, mark)
                        continue
                    if type(state) is str:
                        path = (*frame.path, state)
                        nodes[path] = (
                            frame.key_line,
                            frame.key_col,
                            mark.line + 1,
                            mark.column + 1,
                        )
                    else:
                        path = (*frame.path, "<<")
                        self._record(path, mark)
                else:
                    path = (*frame.path, len(frame.value)) if frame is not None else ()
                    self._record(path, mark)
                style = event.style
                if event.tag is not None:
                    value = self._tagged(event, text, mark)
                elif style:
                    value = text
                    if style in "|>":
                        self._block(path, mark)
                elif text[:1] in special:
                    value = self._plain(text, mark)
                else:
                    value = text
                if frame is not None and event.anchor is None and frame.is_map:
                    state = frame.state
                    if type(state) is str:
                        frame.value[state] = value
                        frame.state = _KEY
                        continue
                self._place(value, 1, event.anchor, size)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self._open(event, {} if kind is MappingStartEvent else [])
                frame = stack[-1]
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                self._close()
                frame = stack[-1] if stack else None
            elif kind is AliasEvent:
                self._alias(event)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    self._fatal(
                        event.start_mark,
                        "file holds more than one YAML document",
                        "remove the '---' separator: one workflow per file",
                    )
        if self._count > MAX_NODES:
            self._count_up(0, None)

    def _long(self, frame: _Frame | None, size: int, mark: Any) -> None:
        """A scalar longer than a key may be: fatal as a key, or past ``MAX_SCALAR``."""
        if frame is not None and frame.is_map and frame.state is _KEY:
            self._fatal(
                mark,
                f"a key of {size:,} characters (keys are names of at most {MAX_KEY:,})",
                "a long text belongs in a value, not in a key",
            )
        if size > MAX_SCALAR:
            self._fatal(
                mark,
                f"a value of {size:,} characters (the limit is {MAX_SCALAR:,})",
                "keep long documents out of the workflow: pass them with --input KEY=@file",
            )

    def _key(self, frame: _Frame, event: Any, text: str, mark: Any) -> None:
        if event.anchor is not None:
            self._anchors[event.anchor] = (text, 1, len(text))
        if text == "<<" and not event.style and event.tag is None:
            frame.state = _MERGE
            return
        line = mark.line + 1
        first = frame.seen.get(text)
        if first is not None:
            self._problem(
                mark,
                f"duplicate key '{text}' (first defined at line {first})",
                "remove one of them; YAML would silently keep only the last",
            )
        frame.seen[text] = line
        frame.key_line, frame.key_col = line, mark.column + 1
        frame.state = text

    def _record(self, path: PathKey, mark: Any) -> None:
        """Record where the value at ``path`` starts, with its key's place if it has one."""
        line, col = mark.line + 1, mark.column + 1
        frame = self._stack[-1] if self._stack else None
        if frame is not None and frame.is_map and type(frame.state) is str:
            self.positions.nodes[path] = (frame.key_line, frame.key_col, line, col)
        else:
            self.positions.nodes[path] = (line, col, line, col)

    def _plain(self, text: str, mark: Any) -> Any:
        """A plain scalar that may not be a string: plain decimals fast, else as PyYAML."""
        if _DECIMAL.match(text):
            return int(text) if _INTEGER.match(text) else float(text)
        return self._convert(text, _resolve_plain(text), mark)

    def _tagged(self, event: Any, text: str, mark: Any) -> Any:
        tag = event.tag
        if tag == "!":  # the non-specific tag: a string
            return text
        return self._convert(text, tag, mark)

    def _block(self, path: PathKey, mark: Any) -> None:
        """Record where a block scalar's content starts: the line after ``|``, indented."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        line = mark.line + 1  # 0-based index of the first content line
        col = 1
        if line < len(self._line_starts):
            start = self._line_starts[line]
            end = self.text.find("\n", start)
            content = self.text[start : end if end >= 0 else len(self.text)]
            col = len(content) - len(content.lstrip(" ")) + 1
        self.positions.blocks[path] = (line + 1, col)

    def _fatal(self, mark: Any, message: str, hint: str | None = None) -> None:
        _fail(self.file, mark.line + 1, mark.column + 1, message, hint)

    def _problem(self, mark: Any, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message, hint))

    def _count_up(self, amount: int, mark: Any) -> None:
        self._count += amount
        if self._count > MAX_NODES:
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            _fail(
                self.file,
                line,
                col,
                f"document expands to more than {MAX_NODES:,} values (aliases included)",
                "use fewer nested *aliases",
            )

    def _slot(self) -> PathKey | None:
        """The path of the value about to arrive, or None when it is a mapping key."""
        if not self._stack:
            return ()
        frame = self._stack[-1]
        if not frame.is_map:
            return (*frame.path, len(frame.value))
        state = frame.state
        if state is _KEY:
            return None
        return (*frame.path, state if isinstance(state, str) else "<<")

    def _place(self, value: Any, size: int, anchor: str | None, chars: int = 0) -> None:
        """Put a finished value where it belongs: the root, a list, or a mapping value
        (``size`` values and ``chars`` characters, which an alias of it repeats)."""
        if anchor is not None:
            self._anchors[anchor] = (value, size, chars)
        if not self._stack:
            self.root, self.has_root = value, True
            return
        frame = self._stack[-1]
        if not frame.is_map:
            frame.value.append(value)
            return
        state = frame.state
        if isinstance(state, str):
            frame.value[state] = value
        elif state is _MERGE:
            frame.merges.append((value, frame.mark))
        frame.state = _KEY

    def _convert(self, text: str, tag: str | None, mark: Any) -> Any:
        if tag is None or tag == _TAG + "str":
            return text
        if tag == _TAG + "int":
            return _CONSTRUCTOR.construct_yaml_int(ScalarNode(tag, text))
        if tag == _TAG + "null":
            return None
        if tag == _TAG + "bool":
            return _BOOLS[text.lower()]
        if tag == _TAG + "float":
            number = _CONSTRUCTOR.construct_yaml_float(ScalarNode(tag, text))
            if not math.isfinite(number):  # .nan and .inf are no budget, limit or rate
                self._problem(
                    mark,
                    f"{text} is not a finite number",
                    "write a number, or leave the key out",
                )
            return number
        if tag == _TAG + "timestamp":  # keep dates as written: JSON has no date type
            return text
        self._problem(mark, f"unsupported YAML tag {tag}", "remove the tag; write plain values")
        return text

    def _open(self, event: Any, value: Any) -> None:
        mark = event.start_mark
        if len(self._stack) >= MAX_DEPTH:
            self._fatal(mark, f"YAML is nested more than {MAX_DEPTH} levels deep")
        path = self._slot()
        self._count_up(1, mark)
        expected = _TAG + ("map" if isinstance(value, dict) else "seq")
        if event.tag not in (None, "!", expected):
            self._problem(mark, f"unsupported YAML tag {event.tag}", "remove the tag")
        if path is not None:
            self._record(path, mark)
        self._stack.append(
            _Frame(
                value,
                path if path is not None else ("?",),
                self._count,
                self._chars,
                anchor=event.anchor,
                mark=mark,
                in_key=path is None,
            )
        )

    def _close(self) -> None:
        frame = self._stack.pop()
        if frame.merges:
            self._merge(frame)
        if frame.in_key:
            self._problem(
                frame.mark,
                "a key must be a plain name, not a list or mapping",
                "write the key as text",
            )
            self._stack[-1].state = _SKIP
            return
        self._place(
            frame.value, self._count - frame.start + 1, frame.anchor, self._chars - frame.chars
        )

    def _alias(self, event: Any) -> None:
        mark = event.start_mark
        found = self._anchors.get(event.anchor)
        if found is None:
            self._fatal(
                mark,
                f"YAML alias *{event.anchor} names no anchor",
                "define the &anchor before using *alias",
            )
            return
        value, size, chars = found
        path = self._slot()
        self._count_up(size, mark)
        self._chars += chars
        if self._chars > MAX_EXPANDED:
            self._fatal(
                mark,
                f"document expands to more than {MAX_EXPANDED:,} characters (aliases included)",
                "use fewer *aliases of long texts",
            )
        if path is None:
            if isinstance(value, str):
                frame = self._stack[-1]
                first = frame.seen.get(value)
                if first is not None:
                    self._problem(mark, f"duplicate key '{value}' (first defined at line {first})")
                frame.seen[value] = mark.line + 1
                frame.key_line, frame.key_col = mark.line + 1, mark.column + 1
                frame.state = value
            else:
                self._problem(
                    mark,
                    "a key must be a plain name, not a list or mapping",
                    "write the key as text",
                )
                self._stack[-1].state = _SKIP
            return
        self._record(path, mark)
        self._place(value, size, None, chars)

    def _merge(self, frame: _Frame) -> None:
        """Apply ``<<: *base`` merges: keys written in the mapping itself win."""
        for value, mark in frame.merges:
            sources = value if isinstance(value, list) else [value]
            for source in sources:
                if not isinstance(source, dict):
                    self._problem(mark, "'<<' must merge a mapping (or a list of mappings)")
                    continue
                for key, item in source.items():
                    if key not in frame.value:
                        frame.value[key] = item
