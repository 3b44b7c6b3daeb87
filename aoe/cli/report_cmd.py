"""``aoe report RUN_ID --html out.html``: one self-contained page of a run, from the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aoe.errors import UsageError


def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a unique prefix.")],
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", metavar="PATH", help="Write the report page here (opens with no network)."
        ),
    ] = None,
    db: Annotated[
        str | None,  # not Path: a postgresql:// URL would lose its "//"
        typer.Option(
            "--db",
            metavar="PATH|URL",
            help="Ledger file or postgresql:// URL (default: $AOE_DB, else .aoe/aoe.db here).",
        ),
    ] = None,
) -> None:
    """Write a run's report: DAG, timeline of every attempt, critical path, cost charts, agents."""
    from aoe.cli.ledger_cmd import open_ledger
    from aoe.ledger.files import open_private
    from aoe.report.html import render_html

    if html is None:
        raise UsageError(
            "say where to write the report", hint=f"aoe report {run_id} --html report.html"
        )
    with open_ledger(db) as ledger:
        detail = ledger.get_run(run_id)
    try:
        html.parent.mkdir(parents=True, exist_ok=True)
        page = render_html(detail)
        with open_private(html) as fh:  # a new report is its owner's only, like the ledger
            fh.write(page)
    except OSError as exc:
        raise UsageError(
            f"cannot write {html}: {exc.strerror}",
            where=str(html),
            hint="pass a --html path in a writable directory",
        ) from None
    typer.echo(f"wrote {html} (run {detail.run.run_id})", err=True)


def register(app: typer.Typer) -> None:
    """Add ``aoe report`` to ``app``."""
    app.command("report")(report)
