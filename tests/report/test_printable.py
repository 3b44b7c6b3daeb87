"""Text from outside is shown, never obeyed: every terminal control becomes visible text."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from aoe.report.ledger_docs import json_text
from aoe.report.printable import json_safe, json_safe_bytes, printable

_OBEYED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@given(st.text())
def test_no_control_survives_and_layout_stays(text: str) -> None:
    """Whatever the text, no C0, C1, DEL or bidi control is left; \\n and \\t stay unless
    the line must stay one line."""
    shown = printable(text)
    assert _OBEYED.search(shown) is None
    assert shown.count("\n") == text.replace("\r\n", "\n").count("\n")
    one_line = printable(text, newlines=False)
    assert _OBEYED.search(one_line) is None
    assert "\n" not in one_line


def test_each_control_has_a_visible_form() -> None:
    """ESC, BEL, CR, DEL, C1 and bidi controls read as what they are."""
    assert printable("\x1b[2J\x07") == "␛[2J␇"
    assert printable("a\r\nb\rc\x7f") == "a\nb␍c␡"
    assert printable("\x9b31m") == "\\x9b31m"
    assert printable("\u202eevil\u2069") == "\\u202eevil\\u2069"
    assert printable("two\nlines\tok", newlines=False) == "two␤lines\tok"


def test_clean_text_is_returned_as_is() -> None:
    """Ordinary text (accents, CJK, emoji, tabs, newlines) is not touched."""
    text = "Müller GmbH 株式会社 ✓ €12\n\tline"
    assert printable(text) == text


@given(st.text())
def test_json_safe_is_the_same_json_value(text: str) -> None:
    """JSON with its controls written as \\u escapes reads back as the exact text."""
    document = json_safe(json.dumps({"output": text}, ensure_ascii=False))
    assert _OBEYED.search(document) is None
    assert json.loads(document) == {"output": text}


@given(st.text())
def test_json_text_is_the_same_json_value_and_prints_no_control(text: str) -> None:
    """`--json` (orjson underneath) reads back as the exact text and holds no raw control."""
    document = json_text({"output": text, "keys": {text: [text]}})
    assert _OBEYED.search(document) is None
    assert json.loads(document) == {"output": text, "keys": {text: [text]}}
    assert json_safe_bytes(document.encode()) == document.encode()


def test_json_text_is_indented_like_json_dumps() -> None:
    """The --json layout did not change with the encoder: two spaces, one item a line."""
    document = {"a": [1, {"b": None}], "c": {}, "d": [], "e": "\u00e9\u202e"}
    assert json_text(document) == json_safe(json.dumps(document, indent=2, ensure_ascii=False))


def test_json_text_writes_what_the_fast_encoder_refuses() -> None:
    """A model output holding an integer past 64 bits still prints, exactly."""
    big = 2**70
    assert json.loads(json_text({"output": {"n": big, "s": "\x9b"}})) == {
        "output": {"n": big, "s": "\x9b"}
    }
    assert "\x9b" not in json_text({"output": {"n": big, "s": "\x9b"}})


def test_json_text_writes_nan_as_null_whichever_encoder_writes_it() -> None:
    """JSON has no NaN: a model's NaN or infinity prints as null, with or without a big int."""
    nan, inf = float("nan"), float("inf")
    assert json.loads(json_text({"x": [nan, inf]})) == {"x": [None, None]}
    assert json.loads(json_text({"x": [nan, -inf], "n": 2**70})) == {"x": [None, None], "n": 2**70}
