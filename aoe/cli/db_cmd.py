"""``aoe db migrate``: create or upgrade the ledger's tables, before any run needs them."""

from __future__ import annotations

from typing import Annotated

import typer

db_app = typer.Typer(
    name="db",
    help="Manage the ledger database (a file, or PostgreSQL).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@db_app.command("migrate")
def migrate(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH|URL",
            help="Ledger file or postgresql:// URL (default: $AOE_DB, else .aoe/aoe.db here).",
        ),
    ] = None,
) -> None:
    """Create the ledger's tables, or apply the migrations this aoe adds; refuses (exit 2)
    a ledger from a newer aoe. Safe to run from many machines at once."""
    from aoe.ledger.store import db_target, migrate_ledger

    done = migrate_ledger(db_target(db))
    if done.applied:
        typer.echo(
            f"{done.where} ({done.dialect}): applied {len(done.applied)} migration(s), "
            f"now at schema version {done.version}: {', '.join(done.applied)}"
        )
    else:
        typer.echo(f"{done.where} ({done.dialect}): up to date at schema version {done.version}")


def register(app: typer.Typer) -> None:
    """Add ``db`` (with ``migrate``) to ``app``."""
    app.add_typer(db_app)
