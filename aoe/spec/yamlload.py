"""Reading YAML files: text checks, parsing with positions, and syntax errors in words.

``read_yaml`` refuses what is not a YAML text file (empty, binary, wrongly encoded,
oversized) with one clear problem at 1:1, parses with libyaml's C parser when available
(else pure Python), and turns parser errors into a Problem at the parser's position,
with the likely cause (a tab used for indentation, an unclosed quote, a ``: `` in a
value) named. The data and positions come from ``aoe.spec.yamlbuild``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aoe.errors import Problem, SpecError, UsageError
from aoe.spec.yamlbuild import MAX_DEPTH, MAX_NODES, EventBuilder, PathKey, Positions, paused_gc

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "PathKey",
    "Positions",
    "YamlDocument",
    "parse_yaml",
    "paused_gc",
    "read_yaml",
]

MAX_FILE_BYTES = 20 * 1024 * 1024
"""Files larger than this are refused before reading: a workflow is text a person writes."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAB_INDENT = re.compile(r"^[ ]*\t", re.MULTILINE)

_REPARSE_MAX_CHARS = 64 * 1024
"""Largest file whose syntax error is worded by a second, pure-Python parse: that parser
takes about 3 s per megabyte, so a large broken file keeps libyaml's own words (its
line and column are the same) and is refused in milliseconds."""


@dataclass(frozen=True, slots=True, eq=False)
class YamlDocument:
    """A parsed file: plain data, where each node is, and non-fatal problems found."""

    file: str
    data: Any
    positions: Positions
    problems: tuple[Problem, ...] = ()


def read_yaml(path: Path, *, display: str | None = None) -> YamlDocument:
    """Read and parse one YAML file; ``display`` is the name errors show (default: path).

    A file that cannot be read at all raises ``UsageError``; one that cannot be parsed
    raises ``SpecError`` with the problem at the parser's position.
    """
    name = display if display is not None else str(path)
    try:
        if path.is_dir():
            raise UsageError(f"{name} is a directory, not a YAML file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            _fail(
                name,
                1,
                1,
                f"file is too large ({size / 1_048_576:.1f} MB; the limit is "
                f"{MAX_FILE_BYTES // 1_048_576} MB)",
                "a workflow is written by people; split it or generate a smaller one",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"file not found: {name}", hint="check the path") from None
    except PermissionError:
        raise UsageError(f"cannot read {name}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    return parse_yaml(raw, name)


def parse_yaml(raw: bytes | str, file: str) -> YamlDocument:
    """Parse YAML text (bytes are decoded as UTF-8) into data plus positions."""
    text = _decode(raw, file) if isinstance(raw, bytes) else raw
    if len(text) > MAX_FILE_BYTES:
        _fail(file, 1, 1, f"file is too large (the limit is {MAX_FILE_BYTES // 1_048_576} MB)")
    builder = EventBuilder(file, text)
    loader = _Loader(text)
    try:
        with paused_gc():
            builder.run(loader)
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_syntax_problem(text, file, exc)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 1, 1, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if not builder.has_root or builder.root is None:
        _fail(file, 1, 1, "file is empty", "a workflow file starts with 'version: 1' and 'agents:'")
    return YamlDocument(file, builder.root, builder.positions, tuple(builder.problems))


def _fail(file: str, line: int, col: int, message: str, hint: str | None = None) -> None:
    raise SpecError([Problem(file, line, col, message, hint)])


def _decode(raw: bytes, file: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        _fail(file, 1, 1, "file is UTF-16 encoded, not UTF-8", "save it as UTF-8")
    if b"\x00" in raw:
        _fail(
            file,
            1,
            1,
            "file is binary (it contains NUL bytes), not YAML text",
            "check that you named the right file",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        _fail(
            file,
            1,
            1,
            f"file is not valid UTF-8 text (first bad byte on line {line})",
            "save the file as UTF-8",
        )
    raise AssertionError("unreachable")  # pragma: no cover


_HINTS = (
    ("mapping values are not allowed", "quote a value that contains ': ', or fix the indentation"),
    ("could not find expected ':'", "a key is missing its ':' or a line is indented wrongly"),
    ("did not find expected key", "check the indentation of this line and the one above"),
    ("expected <block end>", "check the indentation of this line and the one above"),
    ("expected ',' or ']'", "close the [ list ] or separate its items with commas"),
    ("expected ',' or '}'", "close the { mapping } or separate its entries with commas"),
)


def _syntax_problem(text: str, file: str, exc: yaml.MarkedYAMLError) -> Problem:
    """Turn a parser error into one Problem; re-parse in pure Python for stable wording."""
    # Not for libyaml's depth limit: the pure-Python scanner is quadratic in nesting depth
    # (5000 levels took 9 s), and the error reads the same from either parser. Not for a
    # large file either (see _REPARSE_MAX_CHARS).
    if (
        _Loader is not yaml.SafeLoader
        and "nesting depth" not in (exc.problem or "")
        and len(text) <= _REPARSE_MAX_CHARS
    ):
        try:
            _parse_events(text, yaml.SafeLoader)
        except yaml.MarkedYAMLError as py_exc:
            exc = py_exc
        except (yaml.YAMLError, RecursionError):
            pass
    mark = exc.problem_mark or exc.context_mark
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    context = exc.context or ""
    if "end of stream" in problem and exc.context_mark is not None and "quoted" in context:
        start = exc.context_mark
        return Problem(
            file,
            start.line + 1,
            start.column + 1,
            "YAML syntax error: this quoted string is never closed",
            "add the closing quote",
        )
    tab = _tab_line(text, line)
    if tab is not None:
        return Problem(
            file,
            tab,
            1,
            "YAML syntax error: a tab is used for indentation",
            "YAML indents with spaces only; replace the tabs with spaces",
        )
    if "nesting depth" in problem:  # libyaml's own limit (PyYAML >= 6.0.4), same as ours

        return Problem(
            file, line, col, f"YAML is nested more than {MAX_DEPTH} levels deep",
            "flatten the structure; no workflow needs lists or mappings this deep",
        )
    message = f"YAML syntax error: {problem}"
    if context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        message += f" ({context} at line {exc.context_mark.line + 1})"
    hint = next((h for key, h in _HINTS if key in problem), None)
    return Problem(file, line, col, message, hint)


def _parse_events(text: str, loader_class: Any) -> None:
    """Run a parser over ``text`` only for the error it raises."""
    loader = loader_class(text)
    try:
        while loader.check_event():
            loader.get_event()
    finally:
        loader.dispose()


def _tab_line(text: str, error_line: int) -> int | None:
    """The tab-indented line that most likely caused an error at ``error_line``, if any."""
    best = None
    for match in _TAB_INDENT.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if line > error_line:
            break
        best = line
    if best is None or error_line - best > 1:
        return None
    return best
