"""``aoe validate FILE...``: check workflow files and list every problem of each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aoe.cli.messages import format_error

EXIT_BAD_INPUT = 2


def validate(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Workflow files to check.")],
) -> None:
    """Check schema, references, templates and the dependency graph of workflow files.

    Prints `ok  FILE (N agents, M levels)` for a good file and every problem of a bad one
    as FILE:LINE:COL: message. Exits 0 when every file is good, else 2.
    """
    from aoe.app.validate import check_files  # loaded when the command runs, not for --help
    from aoe.report.printable import printable

    results = check_files(files)
    _annotate(results)
    bad = 0
    problems = 0
    for result in results:
        if result.checked is not None:
            for warning in result.checked.warnings:
                at = f"{warning.file}:{warning.line}:{warning.col}"
                typer.echo(printable(f"{at}: warning: {warning.message}"), err=True)
                if warning.hint:
                    typer.echo(f"  hint: {warning.hint}", err=True)
            graph = result.checked.graph
            agents, levels = len(graph), len(graph.levels)
            typer.echo(
                f"ok  {result.path} ({agents} agent{'s' * (agents != 1)}, "
                f"{levels} level{'s' * (levels != 1)})"
            )
            continue
        assert result.error is not None  # a result holds a workflow or an error
        bad += 1
        problems += max(1, len(result.problems))
        for line in format_error(result.error):
            typer.echo(line, err=True)
    if bad:
        noun = "problem" if problems == 1 else "problems"
        scope = "1 file" if len(results) == 1 else f"{bad} of {len(results)} files"
        typer.echo(f"{problems} {noun} in {scope}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)


def _annotate(results: list[Any]) -> None:
    """On GitHub Actions, one ``::error file=,line=,col=::`` line per problem (stdout)."""
    import os

    from aoe.report.github import error_annotations, on_github_actions, warning_annotations

    if on_github_actions(os.environ):
        for line in error_annotations(p for r in results for p in r.problems):
            typer.echo(line)
        checked = [r.checked for r in results if r.checked is not None]
        for line in warning_annotations(w for c in checked for w in c.warnings):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add ``validate`` to ``app``."""
    app.command("validate")(validate)
