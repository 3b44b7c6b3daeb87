"""The ``aoe`` command: the Typer app and the one place where errors become exit codes.

Command modules only parse, call the library and render; they raise ``AoeError`` and let
``main`` print ``error: ...`` / ``hint: ...`` and pick the exit code (DESIGN.md section 1).
Nothing heavy is imported here or in the command modules at import time, so that
``aoe --help`` stays fast: commands import what they need inside their functions.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import typer

from aoe.cli.messages import format_error
from aoe.errors import AoeError
from aoe.report.printable import printable

__all__ = ["app", "main", "run"]

EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Settings:
    """Global options, set by the app callback and read when an error is reported."""

    debug = False


settings = _Settings()


def _click_class(name: str) -> type[Exception]:
    """Click's exception class ``name`` as Typer uses it.

    Typer 0.12 raises ``click``'s own classes; newer Typer vendors click as a private
    module. ``typer.BadParameter`` derives from both ``UsageError`` and ``ClickException``
    in every version, so its MRO finds the right classes without a private import.
    """
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_ClickException = _click_class("ClickException")

app = typer.Typer(
    name="aoe",
    help="Agent Orchestration Engine: validate, plan and run YAML workflows of LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: importing rich_utils costs ~80 ms per call
    pretty_exceptions_show_locals=False,  # API keys live in locals
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _env_debug() -> bool:
    return os.environ.get("AOE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # 30 ms: not for every `aoe --help`

        typer.echo(f"aoe {version('aoe')}")
        raise typer.Exit


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False, "--debug", help="Show tracebacks of errors (also AOE_DEBUG=1)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Agent Orchestration Engine: validate, plan and run YAML workflows of LLM agents."""
    settings.debug = settings.debug or debug


def _register_commands() -> None:
    from aoe.cli import db_cmd, ledger_cmd, plan_cmd, report_cmd, run_cmd, validate_cmd

    for module in (validate_cmd, plan_cmd, run_cmd, ledger_cmd, report_cmd, db_cmd):
        module.register(app)


_register_commands()


def _eprint(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _traceback() -> None:
    """``--debug``: the traceback, whose messages may quote model text, made printable."""
    _eprint(printable(traceback.format_exc().rstrip("\n")))


def main(argv: Sequence[str] | None = None, *, command: typer.Typer | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code instead of exiting.

    ``command`` replaces the app (tests use it to check how unexpected errors look).
    """
    settings.debug = _env_debug()
    cli = typer.main.get_command(command or app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="aoe", standalone_mode=False)
    except typer.Exit as stop:
        return int(stop.exit_code)
    except typer.Abort:
        _eprint("interrupted")
        return EXIT_INTERRUPTED
    except _ClickException as err:
        err.show()  # type: ignore[attr-defined]  # every ClickException has show()
        return int(getattr(err, "exit_code", EXIT_USAGE))
    except AoeError as err:
        if settings.debug:
            _traceback()
        for line in format_error(err):
            _eprint(line)
        return err.exit_code
    except KeyboardInterrupt:
        _eprint("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:
        if settings.debug:
            _traceback()
        _eprint(
            printable(
                f"internal error: {type(err).__name__}: {err} "
                "(rerun with --debug for the traceback)"
            )
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


def run() -> NoReturn:
    """The ``aoe`` console script."""
    sys.exit(main())
