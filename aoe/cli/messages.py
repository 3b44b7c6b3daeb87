"""How an error reads on the terminal: the one format every command prints errors in."""

from __future__ import annotations

from aoe.errors import AoeError, SpecError


def format_error(err: AoeError) -> list[str]:
    """The lines that report ``err``: every problem of a SpecError, each with its hint."""
    if isinstance(err, SpecError):
        lines = []
        for problem in err.problems:
            lines.append(f"{problem}")
            if problem.hint:
                lines.append(f"  hint: {problem.hint}")
        return lines
    lines = [f"error: {err}"]
    if err.hint:
        lines.append(f"hint: {err.hint}")
    return lines
