"""``aoe run FILE...``: run workflows, show progress, print the summary or ``--json``.

Progress goes to stderr (a live view on a terminal, plain lines in CI or with
``--no-live``); the summary or the JSON document goes to stdout, so
``aoe run ... --json > result.json`` keeps a clean file.
"""

from __future__ import annotations

import gc
import math
import os
import shlex
import sys
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from aoe.cost.money import optional_usd
from aoe.errors import UsageError

if TYPE_CHECKING:
    from aoe.app.prepare import PreparedRun
    from aoe.monitor.outputs import RunOutputs


def _positive(name: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise UsageError(
            f"{name} must be greater than 0, got {value:g}",
            hint=f"pass a positive number to {name}, or leave it out for no limit",
        )


def _money(name: str, text: str | None) -> Decimal | None:
    """An amount as typed, exactly (``--budget 0.004128``), or a usage error."""
    try:
        amount = optional_usd(text)
    except ValueError:
        amount = Decimal(-1)
    if amount is not None and amount <= 0:
        raise UsageError(
            f"{name} must be an amount greater than 0, got {text!r}",
            hint=f"pass a positive number of dollars to {name}, e.g. {name} 0.50",
        )
    return amount


def _live_wanted(no_live: bool) -> bool:
    if no_live or os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    return sys.stderr.isatty()


def run(
    files: Annotated[
        list[Path] | None, typer.Argument(metavar="FILE...", help="Workflow files.")
    ] = None,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate", help="Use the built-in simulator: no key, no network, real prices."
        ),
    ] = False,
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", metavar="KEY=VALUE", help="Set an input; KEY=@path reads a file."
        ),
    ] = None,
    inputs_files: Annotated[
        list[Path] | None,
        typer.Option("--inputs", metavar="FILE", help="Inputs from a JSON or YAML file."),
    ] = None,
    each: Annotated[
        Path | None,
        typer.Option(
            "--each", metavar="FILE", help="Run one instance per row of a .jsonl or .csv file."
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", metavar="USD", help="Hard cap on the whole run's spend."),
    ] = None,
    budget_name: Annotated[
        list[str] | None,
        typer.Option(
            "--budget-name",
            metavar="NAME",
            help="Also draw on this shared budget of aoe.yaml (budgets:, needs Redis); repeatable.",
        ),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel", metavar="N", help="Agents running at once, over all workflows."
        ),
    ] = None,
    max_workflows: Annotated[
        int | None, typer.Option("--max-workflows", metavar="N", help="Workflows running at once.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON result document (schemas/result.schema.json)."),
    ] = False,
    no_live: Annotated[
        bool,
        typer.Option(
            "--no-live",
            help="Plain line-based progress (the default without a TTY or with CI set).",
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Continue a run; completed agents are not called again.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Provider config (default: aoe.yaml beside the workflow).",
        ),
    ] = None,
    db: Annotated[
        str | None,  # not Path: a postgresql:// URL would lose its "//"
        typer.Option(
            "--db",
            metavar="FILE|URL",
            help="Ledger file or postgresql:// URL (default: $AOE_DB or .aoe/aoe.db).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for the simulator and retry jitter.")
    ] = 0,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit",
            metavar="PATH",
            help="Write a JUnit XML report (a testcase per agent).",
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            metavar="PATH",
            help="Append every event as JSON Lines (schemas/events.schema.json).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="N",
            help="Serve Prometheus /metrics on this port while running.",
        ),
    ] = None,
    metrics_addr: Annotated[
        str,
        typer.Option(
            "--metrics-addr",
            metavar="ADDR",
            help="Address for --metrics-port.",
        ),
    ] = "127.0.0.1",
    pushgateway: Annotated[
        str | None,
        typer.Option(
            "--pushgateway",
            metavar="URL",
            help="Push the final metrics to a Prometheus Pushgateway.",
        ),
    ] = None,
    lease_heartbeat: Annotated[
        float,
        typer.Option(
            "--lease-heartbeat",
            metavar="SECONDS",
            help="How often the run renews its lease in the ledger; if this process dies, "
            "another --resume may take the run over after 3 missed heartbeats.",
        ),
    ] = 5.0,
) -> None:
    """Run workflows: every agent as soon as its needs are done, under limits and budgets."""
    # The engine and the views load when a run starts, not when `aoe --help` lists commands.
    from aoe.app.prepare import RunOptions, prepare
    from aoe.ledger.store import db_target
    from aoe.monitor.outputs import OutputOptions, RunOutputs
    from aoe.report.printable import printable

    budget_usd = _money("--budget", budget)
    _positive("--max-parallel", max_parallel)
    _positive("--max-workflows", max_workflows)
    _positive("--lease-heartbeat", lease_heartbeat)
    if not files and not resume:
        raise UsageError(
            "no workflow file given", hint="aoe run workflows/invoice-processing.yaml --simulate"
        )
    options = RunOptions(
        files=tuple(files or ()),
        input_pairs=tuple(input_pairs or ()),
        input_files=tuple(inputs_files or ()),
        each=each,
        simulate=simulate,
        budget_usd=budget_usd,
        max_parallel=max_parallel,
        max_workflows=max_workflows,
        config_path=config,
        db_path=db_target(db) if db else None,
        resume=resume,
        seed=seed,
        command=shlex.join(["aoe", *sys.argv[1:]]),
        lease_heartbeat_s=lease_heartbeat,
        budget_names=tuple(budget_name or ()),
    )
    prepared = prepare(options)
    for warning in prepared.warnings:
        print(printable(f"warning: {warning}"), file=sys.stderr)
    wanted = OutputOptions(events, metrics_port, metrics_addr, pushgateway)
    outputs = RunOutputs.start(wanted, sys.stderr)
    # The loaded specs and the imports live as long as the run: keep the cycle collector
    # from walking them again at every full collection while the run makes its garbage,
    # and while the reports are written (unfrozen, building the --json document of a
    # 10,000-agent run set off full collections over all of them).
    gc.freeze()
    try:
        _run_and_report(prepared, outputs, junit=junit, as_json=as_json, no_live=no_live)
    finally:
        gc.unfreeze()


def _run_and_report(
    prepared: PreparedRun, outputs: RunOutputs, *, junit: Path | None, as_json: bool, no_live: bool
) -> NoReturn:
    """Run, then write the reports and the result (``--json`` or the summary); exit."""
    from aoe.report.result import result_json
    from aoe.ui.session import console, run_with_progress

    result = None
    try:
        result = run_with_progress(prepared, live=_live_wanted(no_live), outputs=outputs)
    finally:
        outputs.finish(result.run_id if result is not None else None)
    from aoe.report.outputs import write_run_reports  # JUnit's XML: not before the first call

    write_run_reports(result, prepared.jobs, junit=junit, warn=sys.stderr)
    if as_json:
        sys.stdout.flush()  # anything written as text goes first
        sys.stdout.buffer.write(result_json(result))
        sys.stdout.buffer.write(b"\n")
        sys.stdout.buffer.flush()
    else:
        from aoe.ui.summary import render_summary  # Rich tables: not before the first call

        render_summary(console(), result)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``aoe run`` to ``app``."""
    app.command("run")(run)
