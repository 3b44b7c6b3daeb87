"""YAML loading: plain data like PyYAML's, every node's position, and clear refusals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.errors import Problem, SpecError, UsageError
from aoe.spec.yamlload import MAX_FILE_BYTES, parse_yaml, read_yaml
from tests.strategies import JSON


def _only_problem(text: str | bytes) -> Problem:
    with pytest.raises(SpecError) as caught:
        parse_yaml(text, "w.yaml")
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), JSON, max_size=5))
def test_data_matches_pyyaml(doc: dict[str, Any]) -> None:
    """Any document reads back as the same plain data PyYAML's safe_load gives."""
    for style in (False, True, None):
        text = yaml.safe_dump(doc, default_flow_style=style, allow_unicode=True)
        assert parse_yaml(text, "w.yaml").data == yaml.safe_load(text)


def test_scalars_resolve_as_yaml_1_1() -> None:
    """Ints, floats, booleans and nulls come out typed; dates and quoted values stay text."""
    text = "a: [1, -2, 0.5, 010, 0x1f, 1_000, .inf, yes, off, ~, '', 2026-10-31, '12', \"no\"]"
    assert parse_yaml(text, "w.yaml").data == {
        "a": [
            1,
            -2,
            0.5,
            8,
            31,
            1000,
            float("inf"),
            True,
            False,
            None,
            "",
            "2026-10-31",
            "12",
            "no",
        ]
    }


def test_keys_stay_text() -> None:
    """A key is the text written: `on:` and `1:` are the strings "on" and "1"."""
    assert parse_yaml("on: 1\n1: x\n", "w.yaml").data == {"on": 1, "1": "x"}


def test_positions_of_values_keys_and_items() -> None:
    """Every value, key and list item knows its 1-based line and column."""
    doc = parse_yaml("version: 1\nagents:\n  extract:\n    needs:\n      - a\n      - b\n", "w")
    pos = doc.positions
    assert pos.value(("version",)) == (1, 10)
    assert pos.key(("agents", "extract")) == (3, 3)
    assert pos.value(("agents", "extract", "needs", 1)) == (6, 9)
    assert pos.value(("agents", "extract", "needs", 7)) == (5, 7)  # unknown: nearest parent


def test_block_scalar_lines_map_into_the_file() -> None:
    """Line 3 of a `prompt: |` block is found on its line in the file, at its indent."""
    doc = parse_yaml("a:\n  prompt: |\n    one\n    two\n    three\n", "w")
    assert doc.positions.text_start(("a", "prompt")) == (3, 5)
    assert doc.positions.text_line(("a", "prompt"), 3) == (5, 5)


def test_duplicate_keys_are_problems_at_the_second_key() -> None:
    """A repeated key is reported where it is repeated, naming the first line."""
    doc = parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "w.yaml")
    assert [(p.line, p.message) for p in doc.problems] == [
        (4, "duplicate key 'c' (first defined at line 3)"),
        (5, "duplicate key 'a' (first defined at line 1)"),
    ]


def test_tab_indentation_names_the_tab_line() -> None:
    """Tabs used to indent are reported as tabs, on their line, with the fix."""
    problem = _only_problem("a:\n  b: 1\n\tc: 2\n")
    assert (problem.line, problem.col) == (3, 1)
    assert "tab" in problem.message
    assert "spaces" in (problem.hint or "")


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n", "---\n"])
def test_empty_documents(text: str) -> None:
    """Empty, blank and comment-only files are 'file is empty' at 1:1."""
    problem = _only_problem(text)
    assert (problem.line, problem.col, problem.message) == (1, 1, "file is empty")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"version: 1\x00\x00", "binary"),
        (b"version: 1\nname: caf\xe9\n", "not valid UTF-8"),
        (b"\xff\xfev\x00", "UTF-16"),
    ],
)
def test_non_text_is_refused_at_1_1(raw: bytes, words: str) -> None:
    """Binary and wrongly encoded files get one clear problem at 1:1."""
    problem = _only_problem(raw)
    assert (problem.line, problem.col) == (1, 1)
    assert words in problem.message


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A file over the cap is refused by size, naming the cap."""
    path = tmp_path / "big.yaml"
    with path.open("wb") as out:
        out.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(SpecError, match="20 MB"):
        read_yaml(path)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A path that does not exist is a UsageError naming it."""
    with pytest.raises(UsageError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_syntax_error_at_the_parser_position_with_hint() -> None:
    """A value with ': ' in it is reported on its line with a hint to quote it."""
    problem = _only_problem("a: 1\nb: note: this\n")
    assert problem.line == 2
    assert "mapping values are not allowed" in problem.message
    assert "quote" in (problem.hint or "")


def test_unclosed_quote_points_at_its_start() -> None:
    """An unclosed quote is reported where the quote opens, not at the end of the file."""
    problem = _only_problem('a: 1\nb: "open\nc: 2\nd: 3\n')
    assert (problem.line, problem.col) == (2, 4)
    assert "never closed" in problem.message


def test_more_than_one_document_is_refused() -> None:
    """A second `---` document is an error at its separator line."""
    problem = _only_problem("a: 1\n---\nb: 2\n")
    assert problem.line == 2
    assert "more than one YAML document" in problem.message


def test_custom_tags_are_problems() -> None:
    """`!include` and other tags are refused instead of silently becoming text."""
    doc = parse_yaml("a: !include other.yaml\n", "w")
    assert [p.message for p in doc.problems] == ["unsupported YAML tag !include"]


def test_anchors_aliases_and_merge_keys() -> None:
    """Aliases share the anchored value and `<<` merges with local keys winning."""
    doc = parse_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\nd: *b\n", "w")
    assert doc.data == {"base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}, "d": {"x": 1, "y": 2}}


def test_alias_bomb_is_refused() -> None:
    """A 'billion laughs' document is refused before it is expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(SpecError, match="expands to more than"):
        parse_yaml("\n".join(lines), "w")


def test_deep_nesting_is_refused_not_a_crash() -> None:
    """Thousands of nested lists are an error, not a RecursionError."""
    with pytest.raises(SpecError, match="nested more than"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000, "w")


def test_non_text_keys_are_problems() -> None:
    """A list used as a key is reported; the rest of the file still loads."""
    doc = parse_yaml("[a, b]: 1\nc: 2\n", "w")
    assert doc.data == {"c": 2}
    assert [p.line for p in doc.problems] == [1]


def _many_keys_then(line: str) -> str:
    return "".join(f"key{i}: value\n" for i in range(60_000)) + line


HOSTILE_YAML = {
    "flow-lists": ("[" * 200_000, 1, "nested more than 200 levels"),
    "flow-maps": ("{a: " * 100_000, 1, "nested more than 200 levels"),
    "block-lists": ("- " * 100_000 + "x\n", 1, "nested more than 200 levels"),
    "deep-maps": ("".join(" " * i + f"k{i}:\n" for i in range(3000)), 201, "nested more than"),
    "long-explicit-key": ("? " + "k" * 5000 + "\n: v\n", 1, "a key of 5,000 characters"),
    "long-plain-key": ("k" * 1_000_000 + ": v\n", 1, "YAML syntax error"),
    "long-value": ("a: " + "x" * 5_000_000 + "\n", 1, "a value of 5,000,000 characters"),
    "billion-laughs": (
        "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
        7,
        "expands to more than 2,000,000 values",
    ),
    "long-text-aliased": (
        "big: &big " + "x" * 1_000_000 + "\nmany: [" + ", ".join(["*big"] * 50) + "]\n",
        2,
        "expands to more than 41,943,040 characters",
    ),
    "many-anchors": (
        "".join(f"a{i}: &n{i} v{i}\n" for i in range(50_000)) + "b: [*n1, *n2\n",
        50_002,
        "YAML syntax error",
    ),
    "error-after-a-megabyte": (_many_keys_then("a: b: c\n"), 60_001, "mapping values"),
    "unclosed-quote-in-a-megabyte": (_many_keys_then("a: 'x\n" + "y\n" * 1000), 60_001, ""),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_YAML))
def test_hostile_yaml_is_refused_in_under_a_second_at_its_line(name: str) -> None:
    """Deep nesting, long keys and values, alias bombs, many anchors and a syntax error
    after a megabyte: each refused with FILE:LINE in well under a second."""
    text, line, words = HOSTILE_YAML[name]
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        parse_yaml(text, "w.yaml")
    elapsed = time.perf_counter() - started
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == ("w.yaml", line), problem
    assert words in problem.message, problem
    assert elapsed < 1.0, f"{elapsed:.2f} s for {len(text) / 1e6:.2f} MB"
