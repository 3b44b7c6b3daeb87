"""Workflow inputs from the command line: parsed, typed, defaulted, or refused by name."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from aoe.errors import UsageError
from aoe.spec import load_workflow, parse_input_args, resolve_inputs
from aoe.spec.models import WorkflowSpec


@pytest.fixture
def spec(tmp_path: Path) -> WorkflowSpec:
    """A workflow with one input of every type, some required."""
    path = tmp_path / "w.yaml"
    path.write_text(
        dedent("""
        version: 1
        name: typed
        inputs:
          text: {type: string, description: Invoice text}
          limit: {type: number, default: 5000}
          count: {type: integer, default: 1}
          strict: {type: boolean, default: false}
          po: {type: object, default: {number: PO-1}}
          lines: {type: array, default: []}
          note: {type: string, required: false}
        agents:
          a: {model: sim/x, prompt: "{{ inputs.text }}"}
    """)
    )
    return load_workflow(path)


def test_pairs_files_and_precedence(tmp_path: Path) -> None:
    """Later --inputs files win over earlier ones, and --input pairs win over files."""
    first = tmp_path / "a.json"
    first.write_text('{"text": "from a", "limit": 1, "count": 2}')
    second = tmp_path / "b.yaml"
    second.write_text("limit: 2\nstrict: true\n")
    given = parse_input_args(["count=3", "text=x=y"], [first, second])
    assert given == {"text": "x=y", "limit": 2, "count": "3", "strict": True}


def test_at_path_reads_the_file_text(tmp_path: Path) -> None:
    """KEY=@path reads the file's text as the value, as curl does."""
    invoice = tmp_path / "invoice.txt"
    invoice.write_text("ACME\nTotal 12.00\n")
    assert parse_input_args([f"text=@{invoice}"], []) == {"text": "ACME\nTotal 12.00\n"}


@pytest.mark.parametrize(
    ("pairs", "files", "words"),
    [
        (["text=@missing.txt"], [], "missing.txt"),
        (["novalue"], [], "KEY=VALUE"),
        (["=x"], [], "KEY=VALUE"),
        ([], [Path("nope.json")], "nope.json"),
    ],
)
def test_bad_arguments_are_usage_errors(pairs: list[str], files: list[Path], words: str) -> None:
    """A missing @file, a pair without '=' or a missing --inputs file is a UsageError."""
    with pytest.raises(UsageError, match=words):
        parse_input_args(pairs, files)


def test_invalid_inputs_files(tmp_path: Path) -> None:
    """Invalid JSON names its line; a list instead of a mapping is refused."""
    broken = tmp_path / "broken.json"
    broken.write_text('{"text": "a",\n "limit": }')
    with pytest.raises(UsageError, match=r"broken.json:2:\d+: invalid JSON"):
        parse_input_args([], [broken])
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        parse_input_args([], [listed])


def test_strings_convert_to_declared_types(spec: WorkflowSpec) -> None:
    """CLI strings become numbers, integers, booleans, objects and arrays as declared."""
    values = resolve_inputs(
        spec,
        {
            "text": "hello",
            "limit": "2500.5",
            "count": "7",
            "strict": "yes",
            "po": '{"number": "PO-9"}',
            "lines": "[1, 2]",
        },
    )
    assert dict(values) == {
        "text": "hello",
        "limit": 2500.5,
        "count": 7,
        "strict": True,
        "po": {"number": "PO-9"},
        "lines": (1, 2),
        "note": None,
    }
    assert resolve_inputs(spec, {"text": "t", "limit": "10"})["limit"] == 10


def test_defaults_apply_and_result_is_read_only(spec: WorkflowSpec) -> None:
    """Inputs not given take their defaults; the result cannot be changed."""
    values = resolve_inputs(spec, {"text": "t"})
    assert values["limit"] == 5000
    assert values["po"] == {"number": "PO-1"}
    with pytest.raises(TypeError):
        values["text"] = "changed"  # type: ignore[index]


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({}, "missing required input 'text' (Invoice text)"),
        ({"text": "t", "limt": "1"}, "input 'limt' is not declared by typed"),
        ({"text": "t", "count": "2.5"}, "input 'count' must be an integer, got '2.5'"),
        ({"text": "t", "strict": "maybe"}, "input 'strict' must be true or false"),
        ({"text": "t", "po": "[1]"}, "input 'po' must be a JSON object, got a list"),
        ({"text": 5}, "input 'text' must be a string, got a number (5)"),
    ],
)
def test_problems_name_the_input(spec: WorkflowSpec, given: dict[str, object], words: str) -> None:
    """Missing, undeclared and mistyped inputs are UsageErrors that name the input."""
    with pytest.raises(UsageError) as caught:
        resolve_inputs(spec, given)
    assert words in caught.value.message


def test_undeclared_input_suggests_the_close_name(spec: WorkflowSpec) -> None:
    """A misspelt input name gets a 'did you mean' hint."""
    with pytest.raises(UsageError) as caught:
        resolve_inputs(spec, {"text": "t", "limt": "1"})
    assert caught.value.hint == "did you mean 'limit'?"


def test_all_problems_are_listed_together(spec: WorkflowSpec) -> None:
    """Several input problems are reported in one error."""
    with pytest.raises(UsageError) as caught:
        resolve_inputs(spec, {"count": "x", "bogus": 1})
    assert caught.value.message.startswith("3 input problems")
