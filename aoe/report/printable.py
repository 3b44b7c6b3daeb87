"""Text from outside made harmless to print: what a terminal shows, never what it obeys.

Model output, tool results and error bodies are written by whoever wrote the documents a
model read, and a terminal obeys some characters: ``ESC [2J`` clears the screen, OSC 8
writes hyperlinks, OSC 0 retitles the window, ``\\r`` and backspace overwrite a line,
bidi overrides make text read backwards. ``printable`` maps each such character to
visible text, so every escape sequence (CSI, OSC, DCS, APC...) loses the character that
starts it and prints as plain characters:

==============================  ==========================================================
C0 controls, DEL                their control pictures: ``ESC`` is ``␛``, ``BEL`` ``␇``,
                                ``DEL`` ``␡``; ``\\n`` and ``\\t`` stay (``newlines=False``:
                                ``\\n`` is ``␤``, for one-line logs); ``\\r\\n`` is ``\\n``
C1 controls (U+0080 to U+009F)  ``\\x9b`` as the four characters ``\\x9b``
bidi overrides and isolates,    ``\\u202e`` as the six characters ``\\u202e``
line and paragraph separators
==============================  ==========================================================

Everything aoe prints for people goes through it (the live view, plain progress, the
summary, ``aoe show``, errors and ``--debug`` tracebacks, GitHub annotations and job
summary). Machine outputs keep the exact text: the ledger and ``--events`` unchanged,
and JSON printed by ``--json`` writes these characters as ``\\uXXXX`` escapes
(``json_safe``), which read back as the same text. The HTML report escapes as HTML does.
"""

from __future__ import annotations

import re

__all__ = ["json_safe", "json_safe_bytes", "printable"]

_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)


def _table(*, newlines: bool) -> dict[int, str]:
    table: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20)}
    table[0x7F] = "\u2421"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
    table.update({code: f"\\u{code:04x}" for code in _BIDI})
    del table[ord("\t")]
    if newlines:
        del table[ord("\n")]
    else:
        table[ord("\n")] = "\u2424"
    return table


_KEEP_LINES = _table(newlines=True)
_ONE_LINE = _table(newlines=False)
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# The same characters in UTF-8: DEL, C1 (C2 80-9F), U+2028-202E (E2 80 A8-AE) and
# U+2066-2069 (E2 81 A6-A9). A lead byte never occurs inside another character, so this
# finds exactly those characters in valid UTF-8.
_JSON_UNSAFE_UTF8 = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def printable(text: str, *, newlines: bool = True) -> str:
    """``text`` with every control character shown instead of obeyed (see the module)."""
    if _UNSAFE.search(text) is None:
        return text
    table = _KEEP_LINES if newlines else _ONE_LINE
    return text.replace("\r\n", "\n").translate(table)


def json_safe(document: str) -> str:
    """JSON text whose DEL, C1, bidi and separator characters are ``\\uXXXX`` escapes:
    the same JSON value, safe to print (JSON already escapes the C0 controls)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document)


def json_safe_bytes(document: bytes) -> bytes:
    """``json_safe`` for UTF-8 JSON (what orjson writes): one scan, no copy when clean."""
    if _JSON_UNSAFE_UTF8.search(document) is None:
        return document
    return _JSON_UNSAFE_UTF8.sub(_escape_utf8, document)


def _escape_utf8(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))
