"""How an error reads on the terminal: the one format every command prints errors in.

An error may quote what came from outside (a provider's error body, a model's answer, a
file's key), so each line is ``printable``: shown, never obeyed by the terminal.
"""

from __future__ import annotations

from aoe.errors import AoeError, SpecError
from aoe.report.printable import printable


def format_error(err: AoeError) -> list[str]:
    """The lines that report ``err``: every problem of a SpecError, each with its hint."""
    if isinstance(err, SpecError):
        lines = []
        for problem in err.problems:
            lines.append(f"{problem}")
            if problem.hint:
                lines.append(f"  hint: {problem.hint}")
    else:
        lines = [f"error: {err}"]
        if err.hint:
            lines.append(f"hint: {err.hint}")
    return [printable(line) for line in lines]
