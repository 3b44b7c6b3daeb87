"""``aoe runs``, ``aoe show RUN_ID`` and ``aoe cost-report``: reading the run ledger.

Parsing and rendering only; the queries live in ``aoe.ledger``. The ledger and Rich are
imported inside the commands so that ``aoe --help`` stays fast. Dates are read and
shown in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aoe.errors import UsageError

if TYPE_CHECKING:
    from aoe.ledger.store import Ledger

FORMATS = ("table", "json", "csv", "markdown")
GROUPS = ("workflow", "agent", "module", "model", "day")

DbOption = Annotated[
    str | None,  # not Path: a postgresql:// URL would lose its "//"
    typer.Option(
        "--db",
        metavar="PATH|URL",
        help="Ledger file or postgresql:// URL (default: $AOE_DB, else .aoe/aoe.db here).",
    ),
]


def parse_when(text: str, *, option: str, end_of_day: bool = False) -> datetime:
    """``YYYY-MM-DD`` or an ISO datetime, in UTC unless it names an offset.

    A bare date given to ``--until`` means the end of that day, so ``--since D --until D``
    covers day D.
    """
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
        if day is not None:
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date",
            hint=f"write {option} as YYYY-MM-DD or an ISO datetime like 2024-05-01T09:30:00Z",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def open_ledger(db: str | Path | None) -> Ledger:
    """Open an existing ledger for reading; never create one where none is."""
    from aoe.ledger.store import Ledger, db_target, ledger_exists

    path = db_target(db)
    if not ledger_exists(path):
        raise UsageError(
            f"there is no ledger at {path}",
            hint="runs are recorded by `aoe run`; pass --db or set AOE_DB to read another ledger",
        )
    return Ledger.open(path)


def _echo_json(document: Mapping[str, Any]) -> None:
    from aoe.report.ledger_docs import json_text

    typer.echo(json_text(document))


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # a CI log or a pipe: do not cut tables at 80 columns
        console.width = 200
    return console


def runs(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=10_000, help="How many runs.")
    ] = 20,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (runs.schema.json).")] = False,
) -> None:
    """List recent runs from the ledger, newest first."""
    from aoe.ledger.store import db_target, ledger_exists

    path = db_target(db)
    found = []
    if ledger_exists(path):  # reading never creates a ledger where none is
        with open_ledger(path) as ledger:
            found = ledger.list_runs(limit)
    if as_json:
        from aoe.report.ledger_docs import runs_json

        _echo_json(runs_json(found))
        return
    from aoe.ui.ledger_tables import render_runs

    render_runs(_console(), found)


def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a unique prefix.")],
    db: DbOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (run-detail.schema.json).")
    ] = False,
) -> None:
    """Show one run: workflows, agents, state, attempts, tokens, cost and outputs."""
    with open_ledger(db) as ledger:
        detail = ledger.get_run(run_id)
    if as_json:
        from aoe.report.ledger_docs import run_detail_json

        _echo_json(run_detail_json(detail))
        return
    from aoe.ui.ledger_tables import render_run_detail

    render_run_detail(_console(), detail)


def cost_report(
    *,
    run: Annotated[str | None, typer.Option("--run", metavar="ID", help="Only this run.")] = None,
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="From this date/time (UTC), inclusive.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(metavar="DATE", help="Up to this date (inclusive) or time.")
    ] = None,
    by: Annotated[str, typer.Option(help="Group by " + "|".join(GROUPS) + ".")] = "workflow",
    fmt: Annotated[
        str, typer.Option("--format", help="Output as " + "|".join(FORMATS) + ".")
    ] = "table",
    db: DbOption = None,
) -> None:
    """Cost and tokens grouped by workflow, agent, module, model or day; totals are exact."""
    if by not in GROUPS:
        raise UsageError(f"cannot group by {by!r}", hint="use --by " + "|".join(GROUPS))
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint="use --format " + "|".join(FORMATS))
    start = parse_when(since, option="--since") if since else None
    end = parse_when(until, option="--until", end_of_day=True) if until else None
    if start is not None and end is not None and end <= start:
        raise UsageError("--until is not after --since", hint="give an --until later than --since")
    with open_ledger(db) as ledger:
        report = ledger.cost_report(by, run_id=run, since=start, until=end)  # type: ignore[arg-type]
    from aoe.report import ledger_docs

    if fmt == "json":
        _echo_json(ledger_docs.cost_report_json(report))
    elif fmt == "csv":
        typer.echo(ledger_docs.cost_report_csv(report), nl=False)
    elif fmt == "markdown":
        typer.echo(ledger_docs.cost_report_markdown(report), nl=False)
    else:
        from aoe.ui.ledger_tables import render_cost_report

        render_cost_report(_console(), report)


def register(app: typer.Typer) -> None:
    """Add ``runs``, ``show`` and ``cost-report`` to ``app``."""
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("cost-report")(cost_report)
